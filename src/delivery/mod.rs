//! Webhook delivery logic without actors: retry timing (`policy`), the event body
//! (`event`), the lifecycle events a run chooses (`lifecycle`), where a callback may connect (`destination`), and which waiting events go out
//! when (`schedule`).

pub mod destination;
pub mod event;
pub mod lifecycle;
pub mod policy;
pub mod schedule;
