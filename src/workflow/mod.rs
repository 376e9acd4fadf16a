//! Workflows (SPEC §7): parsing and validating definitions, checking start inputs,
//! rendering templates and executing steps.
//!
//! This module holds no storage or actor logic: the run actor calls [`execute`] and records
//! what `on_step` reports, the API calls [`inputs::check_inputs`] before storing a run, and
//! deployment calls [`Definition::validate`].

pub mod definition;
pub mod engine;
pub mod inputs;
pub mod steps;
pub mod template;

pub use definition::{
    ApprovalChoice, Definition, DefinitionError, InputSpec, InputType, OnError, OutputDef, StepDef,
    StepKind, ValidateOptions, VariantDef,
};
pub use engine::{
    execute, Environment, ProviderConfig, RunContext, RunFailure, StepRecord, StepStatus,
};
pub use inputs::{check_inputs, InputError};
pub use template::TemplateError;
