//! The actors that do the work: `InvokeActor` admits runs and owns the run slots,
//! `RunActor` executes one run, `RetrySupervisor` schedules deliveries and
//! `DeliveryActor`s sign and send them.
//!
//! Imports go one way: `lifecycle` (the types a run carries between the InvokeActor and its
//! RunActor) at the bottom, `approvals` and `recovery` above it, then `run`, then `children`
//! (what `workflow` steps ask for, sent to the InvokeActor as messages), then `invoke`, then
//! `live` (sync invokes watched over their live stream, SPEC §11).

pub mod approvals;
pub mod children;
pub mod delivery;
mod flow;
pub mod invoke;
pub mod lifecycle;
pub mod live;
mod notify;
pub mod recovery;
pub mod retention;
pub mod retry;
pub mod run;
pub mod scheduler;

pub use approvals::{Respond, RespondError};
pub use invoke::{
    Admit, AdmitError, AdmitScheduled, Admitted, InvokeActor, Mode, Rerun, ScheduledFire,
};
pub use lifecycle::{PreparedRun, RunOutcome};
pub use retry::{Enqueue, RetrySupervisor};
