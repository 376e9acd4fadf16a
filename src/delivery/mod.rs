//! Webhook delivery logic without actors: retry timing (`policy`), the event body
//! (`event`), and where a callback may connect (`destination`).

pub mod destination;
pub mod event;
pub mod policy;
