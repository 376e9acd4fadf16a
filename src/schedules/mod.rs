//! Schedules (SPEC §12): runs started on a timetable. `timing` is the pure timetable
//! arithmetic; the store keeps the schedules and their next fire, and the scheduler actor
//! (`actors/scheduler.rs`) fires them.

pub mod timing;
