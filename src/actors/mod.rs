//! The actors that do the work: `InvokeActor` admits runs and owns the run slots,
//! `RunActor` executes one run, `RetrySupervisor` schedules deliveries and
//! `DeliveryActor`s sign and send them.

pub mod delivery;
pub mod invoke;
pub mod retention;
pub mod retry;
pub mod run;

pub use invoke::{Admit, Admitted, InvokeActor, Mode, PreparedRun};
pub use retry::{Enqueue, RetrySupervisor};
pub use run::RunOutcome;
