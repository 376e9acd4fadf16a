//! The actors that do the work: `InvokeActor` admits runs and owns the run slots,
//! `RunActor` executes one run.

pub mod invoke;
pub mod run;

pub use invoke::{Admit, Admitted, InvokeActor, Mode, PreparedRun};
pub use run::RunOutcome;
