//! Workflows (SPEC §7): parsing and validating definitions, checking start inputs,
//! rendering templates and executing steps.
//!
//! This module holds no storage or actor logic: the run actor calls [`execute`] and records
//! what `on_step` reports, the API calls [`inputs::check_inputs`] before storing a run, and
//! deployment calls [`Definition::validate`].
//!
//! Layout: `definition` (the document's types), `parse` (TOML/JSON → [`Definition`]),
//! `validate` (the checks before deployment), `engine` (the step loop), `steps` (one
//! executor per step type), `trace` (the step trace and what a run resumes from),
//! `approval` (answers to approval steps), `deltas` (streamed prompt text for live runs),
//! `inputs` and `template`.

pub mod approval;
pub mod capacity;
pub mod definition;
pub mod deltas;
pub mod engine;
pub mod inputs;
mod parse;
pub mod reads;
pub mod steps;
pub mod template;
pub mod trace;
mod validate;

pub use approval::{approval_output, Approval, ApprovalAnswer};
pub use definition::{
    ApprovalChoice, Definition, DefinitionError, InputSpec, InputType, OnError, OutputDef, StepDef,
    StepKind, VariantDef,
};
pub use deltas::{Delta, DeltaSink};
pub use engine::{execute, Environment, Execution, Pause, ProviderConfig, RunContext};
pub use inputs::{check_inputs, InputError};
pub use steps::workflow::{ChildEnd, ChildRuns, ChildStart};
pub use template::TemplateError;
pub use trace::{ChildLink, DoneStep, Resume, RunFailure, StepRecord, StepStatus};
pub use validate::ValidateOptions;
