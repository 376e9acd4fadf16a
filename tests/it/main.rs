//! Integration tests: each test starts the real `hivelet` binary on a loopback port with its
//! own temporary config and data directories, and checks what a user would check over HTTP
//! and on the command line. See `support` for the harness.

mod support;

mod approval;
mod backlog;
mod bad_input;
mod child_runs;
mod cli;
mod cli_webhooks;
mod config;
mod crash;
mod delivery;
mod deployments;
mod errors;
mod examples;
mod faults;
mod flow;
mod flow_control;
mod invoke;
mod keys;
mod layout;
mod lifecycle;
mod lifecycle_events;
mod ops;
mod ops_api;
mod prompt;
mod rerun;
mod runs;
mod schedules;
mod schemathesis;
mod sdk;
mod security;
mod steps;
mod storage;
mod storm;
mod stream;
mod ui;
mod usage;
mod webhooks;
