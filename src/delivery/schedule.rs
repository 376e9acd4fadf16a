//! The delivery schedule: which waiting events go out now, and when to look again. Pure
//! bookkeeping (no actors, no clock, no I/O): the caller passes `now` in and does the reads.
//!
//! SQLite is the record of every event still to deliver; this keeps only a bounded window of
//! the soonest-due ones in memory, so a receiver that is down for a day on a busy install
//! costs a page of events, not the whole backlog. The window covers every due event up to its
//! *horizon* (a `(due time, event id)` key); everything after it stays in the database and is
//! read page by page, in key order, when the window runs low.
//!
//! Keeping the window exact while pages are read off the actor thread:
//! - an event placed (new, redelivered or retried) past the horizon is not kept: it is in the
//!   store already and a later page reads it. While a page is being read it may have been
//!   read before it was written, so the page is cut short just before the first such key;
//! - a page never brings back an event the window holds, one in flight, or one whose attempt
//!   finished while the page was read (the page may have seen it before its attempt was
//!   recorded);
//! - evicting from a full window lowers the horizon, so a page read from the old horizon no
//!   longer fits and is dropped (the next one starts from the new horizon).

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::delivery::policy::Breaker;
use crate::store::DueEvent;

/// Events held in memory by default. An event is about 1 KiB with a typical body, so this is
/// a few MiB; it is also far more than the attempts that can be in flight, so the window never
/// runs dry between two pages.
pub const DEFAULT_WINDOW: usize = 4096;

/// A position in due order: (due time in Unix ms, event id). Ids break ties, so every event
/// has its own key and a page can resume exactly after the last one it read.
pub type Key = (i64, String);

fn key_of(event: &DueEvent) -> Key {
    (event.next_attempt_at, event.event_id.clone())
}

/// `scheme://host:port` of a callback URL: the unit of concurrency and circuit breaking.
pub fn destination_key(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_string(),
    }
}

/// How far the window covers the store's due events.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Horizon {
    /// No page read yet: nothing is covered.
    Nothing,
    /// Every due event with a key up to this one (inclusive) is in memory or in flight.
    Until(Key),
    /// Every due event is in memory or in flight: the last page was not full.
    All,
}

impl Horizon {
    fn covers(&self, key: &Key) -> bool {
        match self {
            Horizon::Nothing => false,
            Horizon::Until(until) => key <= until,
            Horizon::All => true,
        }
    }
}

/// A page to read: due events after `after` (all of them when `None`), in key order, at most
/// `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<Key>,
    pub limit: usize,
}

/// A page being read.
#[derive(Debug)]
struct Loading {
    limit: usize,
    /// The horizon moved back while the page was read: the page no longer joins the window.
    stale: bool,
    /// The smallest key placed past the horizon while the page was read: the page may predate
    /// it, so the page is cut before it.
    cut: Option<Key>,
    /// Events whose attempt finished while the page was read: the page's copy may be older.
    finished: HashSet<String>,
}

/// One (scheme, host, port): its attempts in flight, its breaker, and its waiting events.
#[derive(Debug, Default)]
struct Destination {
    in_flight: usize,
    breaker: Breaker,
    /// Keys of the events waiting for this destination, earliest first.
    due: BTreeSet<Key>,
}

impl Destination {
    fn head(&self) -> Option<i64> {
        self.due.first().map(|(at, _)| *at)
    }
}

/// What [`Schedule::take_due`] found.
#[derive(Debug, Default)]
pub struct Due {
    /// Events to attempt now; each counts as in flight until [`Schedule::finished`].
    pub events: Vec<DueEvent>,
    /// When something may next become due (an event's time or a pause's end).
    pub wake_at: Option<i64>,
}

/// Counts for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    /// Events held in memory, waiting for their time or their destination.
    pub waiting: usize,
    /// The most events the window has held at once.
    pub waiting_peak: usize,
    pub in_flight: usize,
    pub paused_destinations: usize,
}

/// The window of due events and the per-destination state that decides what goes out.
#[derive(Debug)]
pub struct Schedule {
    /// Most events held (pinned ones aside); at least 1.
    capacity: usize,
    /// Attempts in flight at once per destination; at least 1.
    per_host: usize,
    /// Waiting events by id, with their destination key.
    events: HashMap<String, (String, DueEvent)>,
    /// Keys of the waiting events the store agrees with, to find the latest one to evict.
    window: BTreeSet<Key>,
    /// Waiting events whose due time only memory knows (their attempt could not be recorded):
    /// never evicted, since no page would bring them back.
    pinned: HashSet<String>,
    destinations: HashMap<String, Destination>,
    /// (earliest due time, destination key) of every destination with waiting events, so
    /// taking due events looks at destinations, not at every event stuck behind a busy one.
    heads: BTreeSet<(i64, String)>,
    /// Events in flight by id (a redelivery may overlap an attempt, hence a count).
    in_flight: HashMap<String, u32>,
    horizon: Horizon,
    loading: Option<Loading>,
    peak: usize,
}

impl Schedule {
    pub fn new(capacity: usize, per_host: usize) -> Schedule {
        Schedule {
            capacity: capacity.max(1),
            per_host: per_host.max(1),
            events: HashMap::new(),
            window: BTreeSet::new(),
            pinned: HashSet::new(),
            destinations: HashMap::new(),
            heads: BTreeSet::new(),
            in_flight: HashMap::new(),
            horizon: Horizon::Nothing,
            loading: None,
            peak: 0,
        }
    }

    /// Places an event the store holds as due at its `next_attempt_at`: a new event, a
    /// redelivery, or a retry whose attempt was recorded. It replaces a waiting copy.
    pub fn insert(&mut self, event: DueEvent) {
        self.place(event, false);
    }

    /// Places a retry whose attempt could not be recorded: the store still has its old due
    /// time, so memory is the only record of the new one and it stays until attempted.
    pub fn insert_pinned(&mut self, event: DueEvent) {
        self.place(event, true);
    }

    fn place(&mut self, event: DueEvent, pinned: bool) {
        self.remove_waiting(&event.event_id);
        let key = key_of(&event);
        if !pinned && !self.horizon.covers(&key) {
            // In the store already: a later page reads it. A page being read now may predate
            // it, so that page stops short of it.
            if let Some(loading) = &mut self.loading {
                if loading.cut.as_ref().map_or(true, |cut| key < *cut) {
                    loading.cut = Some(key);
                }
            }
            return;
        }
        self.add(event, pinned);
        self.trim();
    }

    fn add(&mut self, event: DueEvent, pinned: bool) {
        let key = key_of(&event);
        let dest_key = destination_key(&event.callback_url);
        let dest = self.destinations.entry(dest_key.clone()).or_default();
        let before = dest.head();
        dest.due.insert(key.clone());
        let after = dest.head();
        move_head(&mut self.heads, &dest_key, before, after);
        if pinned {
            self.pinned.insert(event.event_id.clone());
        } else {
            self.window.insert(key);
        }
        self.events
            .insert(event.event_id.clone(), (dest_key, event));
    }

    /// Takes an event out of the waiting set (a redelivery replaces a waiting retry).
    fn remove_waiting(&mut self, event_id: &str) -> Option<DueEvent> {
        let (dest_key, event) = self.events.remove(event_id)?;
        let key = key_of(&event);
        if !self.pinned.remove(event_id) {
            self.window.remove(&key);
        }
        if let Some(dest) = self.destinations.get_mut(&dest_key) {
            let before = dest.head();
            dest.due.remove(&key);
            let after = dest.head();
            move_head(&mut self.heads, &dest_key, before, after);
        }
        Some(event)
    }

    /// Evicts the latest events beyond capacity (the horizon moves back to the latest kept),
    /// then notes the peak.
    fn trim(&mut self) {
        while self.window.len() > self.capacity {
            let (_, id) = self
                .window
                .last()
                .cloned()
                .expect("window is over capacity");
            self.remove_waiting(&id);
            let last = self.window.last().cloned().expect("capacity is at least 1");
            self.horizon = Horizon::Until(last);
            if let Some(loading) = &mut self.loading {
                loading.stale = true;
            }
        }
        self.peak = self.peak.max(self.events.len());
    }

    /// The page to read next, if the window runs low and the store may hold more. The window
    /// then counts the page as being read until [`Schedule::page_read`] or
    /// [`Schedule::page_failed`].
    pub fn next_page(&mut self) -> Option<PageRequest> {
        let low_water = self.capacity / 2;
        if self.loading.is_some() || self.horizon == Horizon::All || self.window.len() > low_water {
            return None;
        }
        let after = match &self.horizon {
            Horizon::Nothing => None,
            Horizon::Until(key) => Some(key.clone()),
            Horizon::All => return None,
        };
        let limit = self.capacity - self.window.len();
        self.loading = Some(Loading {
            limit,
            stale: false,
            cut: None,
            finished: HashSet::new(),
        });
        Some(PageRequest { after, limit })
    }

    /// Joins a page read for the last [`PageRequest`] (due events in key order) to the window.
    pub fn page_read(&mut self, page: Vec<DueEvent>) {
        let Some(loading) = self.loading.take() else {
            return;
        };
        if loading.stale {
            return;
        }
        let mut complete = page.len() < loading.limit;
        let mut last = None;
        for event in page {
            let key = key_of(&event);
            if loading.cut.as_ref().is_some_and(|cut| key >= *cut) {
                complete = false;
                break;
            }
            last = Some(key);
            let id = &event.event_id;
            if self.events.contains_key(id)
                || self.in_flight.contains_key(id)
                || loading.finished.contains(id)
            {
                continue;
            }
            self.add(event, false);
        }
        if loading.cut.is_some() {
            complete = false;
        }
        if complete {
            self.horizon = Horizon::All;
        } else if let Some(last) = last {
            self.horizon = Horizon::Until(last);
        }
        self.trim();
    }

    /// The read for the last [`PageRequest`] failed; the next call to
    /// [`Schedule::next_page`] asks again.
    pub fn page_failed(&mut self) {
        self.loading = None;
    }

    /// Takes every due event whose destination has room and is not paused.
    pub fn take_due(&mut self, now: i64) -> Due {
        let mut wake_at: Option<i64> = self.heads.iter().map(|(at, _)| *at).find(|at| *at > now);
        let due_destinations: Vec<(i64, String)> = self
            .heads
            .iter()
            .take_while(|(at, _)| *at <= now)
            .cloned()
            .collect();
        let mut ready = Vec::new();
        for (head, dest_key) in due_destinations {
            let dest = self
                .destinations
                .get_mut(&dest_key)
                .expect("heads name known destinations");
            if let Some(until) = dest.breaker.paused_until(now) {
                // Paused: its events wait without using up attempts.
                wake_at = Some(wake_at.map_or(until, |w| w.min(until)));
                continue;
            }
            // A destination at its limit is looked at again when an attempt finishes.
            while dest.in_flight < self.per_host {
                match dest.due.first() {
                    Some((at, _)) if *at <= now => {
                        let (_, id) = dest.due.pop_first().expect("first exists");
                        dest.in_flight += 1;
                        ready.push(id);
                    }
                    Some((at, _)) => {
                        wake_at = Some(wake_at.map_or(*at, |w| w.min(*at)));
                        break;
                    }
                    None => break,
                }
            }
            let after = dest.head();
            move_head(&mut self.heads, &dest_key, Some(head), after);
        }
        let mut events = Vec::with_capacity(ready.len());
        for id in ready {
            let (_, event) = self.events.remove(&id).expect("due events are indexed");
            if !self.pinned.remove(&id) {
                self.window.remove(&key_of(&event));
            }
            *self.in_flight.entry(id).or_default() += 1;
            events.push(event);
        }
        Due { events, wake_at }
    }

    /// Settles an attempt taken by [`Schedule::take_due`]: frees its destination's slot, feeds
    /// the breaker (`breaker` is `None` when the destination was never tried), and places the
    /// event again when it is to be retried at `retry_at`. `recorded` says whether the store
    /// knows that time.
    pub fn finished(
        &mut self,
        mut event: DueEvent,
        retry_at: Option<i64>,
        recorded: bool,
        breaker: Option<bool>,
        now: i64,
    ) {
        let dest = self
            .destinations
            .entry(destination_key(&event.callback_url))
            .or_default();
        dest.in_flight = dest.in_flight.saturating_sub(1);
        if let Some(success) = breaker {
            dest.breaker.record(success, now);
        }
        if let Some(count) = self.in_flight.get_mut(&event.event_id) {
            *count -= 1;
            if *count == 0 {
                self.in_flight.remove(&event.event_id);
            }
        }
        if let Some(loading) = &mut self.loading {
            loading.finished.insert(event.event_id.clone());
        }
        if let Some(at) = retry_at {
            event.next_attempt_at = at;
            if recorded {
                self.insert(event);
            } else {
                self.insert_pinned(event);
            }
        }
    }

    pub fn stats(&self, now: i64) -> ScheduleStats {
        ScheduleStats {
            waiting: self.events.len(),
            waiting_peak: self.peak,
            in_flight: self.destinations.values().map(|d| d.in_flight).sum(),
            paused_destinations: self
                .destinations
                .values()
                .filter(|d| d.breaker.paused_until(now).is_some())
                .count(),
        }
    }
}

/// Keeps `heads` in step with a destination's earliest due time.
fn move_head(
    heads: &mut BTreeSet<(i64, String)>,
    key: &str,
    before: Option<i64>,
    after: Option<i64>,
) {
    if before == after {
        return;
    }
    if let Some(at) = before {
        heads.remove(&(at, key.to_string()));
    }
    if let Some(at) = after {
        heads.insert((at, key.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::delivery::policy;

    fn event(id: &str, at: i64, host: &str) -> DueEvent {
        DueEvent {
            event_id: id.to_string(),
            request_id: format!("req_{id}"),
            deployment_key: "dep".into(),
            callback_url: format!("http://{host}/hook"),
            body: bytes::Bytes::from_static(b"{}"),
            series: 1,
            attempts: 0,
            total_attempts: 0,
            next_attempt_at: at,
        }
    }

    /// The store's due set, as the paging query reads it.
    #[derive(Default, Clone)]
    struct Due_ {
        rows: BTreeMap<Key, DueEvent>,
    }

    impl Due_ {
        fn put(&mut self, e: &DueEvent) {
            self.rows.retain(|(_, id), _| *id != e.event_id);
            self.rows.insert(key_of(e), e.clone());
        }
        fn remove(&mut self, id: &str) {
            self.rows.retain(|(_, i), _| i != id);
        }
        fn page(&self, req: &PageRequest) -> Vec<DueEvent> {
            self.rows
                .iter()
                .filter(|(k, _)| req.after.as_ref().map_or(true, |a| *k > a))
                .take(req.limit)
                .map(|(_, e)| e.clone())
                .collect()
        }
    }

    fn ids(events: &[DueEvent]) -> Vec<&str> {
        events.iter().map(|e| e.event_id.as_str()).collect()
    }

    /// Reads and joins pages until the window is full or the store is exhausted.
    fn fill(s: &mut Schedule, store: &Due_) {
        while let Some(req) = s.next_page() {
            let page = store.page(&req);
            s.page_read(page);
        }
    }

    #[test]
    fn takes_due_events_up_to_the_per_host_limit_and_wakes_for_the_next() {
        let mut s = Schedule::new(100, 2);
        let mut store = Due_::default();
        for (id, at) in [("a", 10), ("b", 20), ("c", 30), ("d", 500)] {
            store.put(&event(id, at, "one"));
        }
        store.put(&event("x", 40, "two"));
        fill(&mut s, &store);
        let due = s.take_due(100);
        assert_eq!(
            ids(&due.events),
            ["a", "b", "x"],
            "two for `one`, one for `two`"
        );
        assert_eq!(
            due.wake_at, None,
            "`one` is full: a finishing attempt wakes it"
        );
        assert_eq!(s.stats(100).in_flight, 3);
        assert!(s.take_due(100).events.is_empty(), "`one` is at its limit");
        let a = due.events.into_iter().next().unwrap();
        s.finished(a, None, true, Some(true), 100);
        assert_eq!(ids(&s.take_due(100).events), ["c"]);
        let b_and_c = s.take_due(600);
        assert!(b_and_c.events.is_empty(), "`one` is full again");
    }

    #[test]
    fn wakes_at_the_next_due_time() {
        let mut s = Schedule::new(100, 4);
        let mut store = Due_::default();
        store.put(&event("a", 10, "one"));
        store.put(&event("b", 500, "one"));
        store.put(&event("c", 300, "two"));
        fill(&mut s, &store);
        let due = s.take_due(100);
        assert_eq!(ids(&due.events), ["a"]);
        assert_eq!(due.wake_at, Some(300));
        assert_eq!(s.take_due(299).wake_at, Some(300));
        assert_eq!(ids(&s.take_due(300).events), ["c"]);
    }

    #[test]
    fn a_paused_destination_keeps_its_events_and_wakes_at_the_pause_end() {
        let mut s = Schedule::new(100, 1);
        let store = Due_::default();
        fill(&mut s, &store);
        for n in 0..policy::BREAKER_FAILURE_THRESHOLD {
            s.insert(event(&format!("e{n}"), 0, "down"));
            let due = s.take_due(1000);
            let e = due.events.into_iter().next().unwrap();
            s.finished(e, None, true, Some(false), 1000);
        }
        s.insert(event("late", 0, "down"));
        let due = s.take_due(2000);
        assert!(due.events.is_empty(), "paused");
        let pause_end = 1000 + policy::BREAKER_PAUSE.as_millis() as i64;
        assert_eq!(due.wake_at, Some(pause_end));
        assert_eq!(s.stats(2000).paused_destinations, 1);
        assert_eq!(ids(&s.take_due(pause_end).events), ["late"]);
    }

    #[test]
    fn the_window_holds_at_most_its_capacity_and_pages_the_rest_in_order() {
        let mut s = Schedule::new(4, 100);
        let mut store = Due_::default();
        for n in 0..10 {
            store.put(&event(&format!("e{n}"), n, "h"));
        }
        fill(&mut s, &store);
        assert_eq!(s.stats(0).waiting, 4);
        let delivered = drain(&mut s, &mut store, 100);
        let expected: Vec<String> = (0..10).map(|n| format!("e{n}")).collect();
        assert_eq!(delivered, expected);
        assert_eq!(s.stats(100).waiting_peak, 4);
    }

    #[test]
    fn an_event_placed_past_the_horizon_is_left_to_a_page() {
        let mut s = Schedule::new(2, 100);
        let mut store = Due_::default();
        for (id, at) in [("a", 1), ("b", 2), ("c", 3)] {
            store.put(&event(id, at, "h"));
        }
        fill(&mut s, &store);
        store.put(&event("new", 50, "h"));
        s.insert(event("new", 50, "h"));
        assert_eq!(s.stats(0).waiting, 2, "past the horizon: not held");
        let early = event("early", 0, "h");
        store.put(&early);
        s.insert(early);
        assert_eq!(s.stats(0).waiting, 2, "held; the latest one was evicted");
        let due = s.take_due(1000);
        assert_eq!(ids(&due.events), ["early", "a"]);
    }

    /// Attempts everything due at `now` until nothing is left, every attempt delivered;
    /// returns the ids in the order they were sent.
    fn drain(s: &mut Schedule, store: &mut Due_, now: i64) -> Vec<String> {
        let mut sent = Vec::new();
        loop {
            fill(s, store);
            let due = s.take_due(now);
            if due.events.is_empty() {
                return sent;
            }
            for e in due.events {
                store.remove(&e.event_id);
                sent.push(e.event_id.clone());
                s.finished(e, None, true, Some(true), now);
            }
        }
    }

    #[test]
    fn a_page_read_before_a_retry_was_recorded_is_cut_before_it() {
        let mut s = Schedule::new(4, 100);
        let mut store = Due_::default();
        for n in 0..6 {
            store.put(&event(&format!("e{n}"), n, "h"));
        }
        fill(&mut s, &store);
        let due = s.take_due(10);
        assert_eq!(due.events.len(), 4);
        // The next page is read before the four retries (due at 5) are recorded.
        let req = s.next_page().expect("the window is empty");
        let page = store.page(&req);
        assert_eq!(ids(&page), ["e4", "e5"]);
        for mut e in due.events {
            e.next_attempt_at = 5;
            store.put(&e);
            s.finished(e, Some(5), true, Some(false), 10);
        }
        assert_eq!(s.stats(10).waiting, 0, "past the horizon: left to a page");
        s.page_read(page);
        assert_eq!(
            s.stats(10).waiting,
            1,
            "e4 joins; the page stops before (5, e0)"
        );
        let mut sent = drain(&mut s, &mut store, 10);
        sent.sort();
        assert_eq!(sent, ["e0", "e1", "e2", "e3", "e4", "e5"], "each once");
    }

    #[test]
    fn a_page_never_brings_back_an_event_just_finished() {
        page_around_an_attempt(true);
    }

    #[test]
    fn a_page_never_brings_back_an_event_in_flight() {
        page_around_an_attempt(false);
    }

    fn page_around_an_attempt(finish_first: bool) {
        let mut s = Schedule::new(2, 1);
        let mut store = Due_::default();
        for (id, at) in [("a", 1), ("b", 2), ("c", 3)] {
            store.put(&event(id, at, "h"));
        }
        fill(&mut s, &store);
        let a = s.take_due(10).events.pop().unwrap();
        assert_eq!(a.event_id, "a");
        // An early event for another destination evicts `b`: the horizon moves back to `z`,
        // before `a`, whose store row still says due (its attempt is in flight).
        store.put(&event("z", 0, "other"));
        s.insert(event("z", 0, "other"));
        s.insert(event("y", 0, "other"));
        store.put(&event("y", 0, "other"));
        let z_and_y = s.take_due(10).events;
        assert_eq!(ids(&z_and_y), ["y"], "one at a time for `other`");
        for e in z_and_y {
            store.remove(&e.event_id);
            s.finished(e, None, true, Some(true), 10);
        }
        let req = s.next_page().expect("below the low-water mark");
        let page = store.page(&req);
        assert!(
            ids(&page).contains(&"a"),
            "the page holds the in-flight `a`"
        );
        let mut sent = Vec::new();
        if finish_first {
            store.remove("a");
            s.finished(a, None, true, Some(true), 10);
            s.page_read(page);
        } else {
            s.page_read(page);
            for e in s.take_due(10).events {
                store.remove(&e.event_id);
                sent.push(e.event_id.clone());
                s.finished(e, None, true, Some(true), 10);
            }
            store.remove("a");
            s.finished(a, None, true, Some(true), 10);
        }
        sent.extend(drain(&mut s, &mut store, 10));
        assert_eq!(sent, ["z", "b", "c"], "`a` was not sent again");
    }

    #[test]
    fn eviction_while_a_page_is_read_drops_that_page() {
        let mut s = Schedule::new(2, 100);
        let mut store = Due_::default();
        for (id, at) in [("a", 10), ("b", 20), ("c", 30)] {
            store.put(&event(id, at, "h"));
        }
        fill(&mut s, &store);
        let due = s.take_due(10);
        assert_eq!(ids(&due.events), ["a"]);
        let req = s.next_page().expect("one left, low water is 1");
        let page = store.page(&req);
        assert_eq!(ids(&page), ["c"]);
        // Two early events arrive: `b` is evicted and the horizon moves back before it.
        for id in ["x", "y"] {
            store.put(&event(id, 5, "h"));
            s.insert(event(id, 5, "h"));
        }
        s.page_read(page);
        assert_eq!(s.stats(0).waiting, 2, "the page was dropped");
        for e in due.events {
            store.remove(&e.event_id);
            s.finished(e, None, true, Some(true), 10);
        }
        assert_eq!(drain(&mut s, &mut store, 100), ["x", "y", "b", "c"]);
    }

    #[test]
    fn a_retry_the_store_did_not_record_stays_in_memory() {
        let mut s = Schedule::new(1, 100);
        let mut store = Due_::default();
        store.put(&event("a", 1, "h"));
        store.put(&event("b", 2, "h"));
        fill(&mut s, &store);
        let a = s.take_due(10).events.into_iter().next().unwrap();
        // The store still says `a` is due at 1, under the horizon: no page brings it back.
        s.finished(a, Some(500), false, Some(false), 10);
        fill(&mut s, &store);
        assert_eq!(s.stats(10).waiting, 2, "b, and a pinned past the capacity");
        assert_eq!(ids(&s.take_due(10).events), ["b"]);
        assert_eq!(ids(&s.take_due(500).events), ["a"]);
    }

    /// Random interleavings of new events, attempts (failing, retried, recorded or not),
    /// redeliveries and page reads that are applied late: every event is delivered exactly
    /// once, never twice at once, and the window stays within its capacity.
    #[test]
    fn random_interleavings_deliver_every_event_once() {
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let capacity = rng.gen_range(1..6);
            let mut s = Schedule::new(capacity, rng.gen_range(1..3));
            let mut store = Due_::default();
            let mut now = 0i64;
            let mut next_id = 0;
            let mut created = 0;
            let mut delivered: HashMap<String, u32> = HashMap::new();
            let mut in_flight: Vec<(DueEvent, bool)> = Vec::new();
            let mut pending_page: Option<Vec<DueEvent>> = None;
            for _ in 0..8 {
                store.put(&event(&format!("e{next_id}"), rng.gen_range(0..20), "h"));
                next_id += 1;
                created += 1;
            }
            fill(&mut s, &store);
            for step in 0..4000 {
                let finishing = step > 3000;
                match rng.gen_range(0..6) {
                    0 if !finishing && created < 40 => {
                        let host = if rng.gen_bool(0.5) { "h" } else { "g" };
                        let e = event(&format!("e{next_id}"), now + rng.gen_range(0..30), host);
                        next_id += 1;
                        created += 1;
                        store.put(&e);
                        s.insert(e);
                    }
                    1 => {
                        if let Some(req) = s.next_page() {
                            pending_page = Some(store.page(&req));
                        }
                    }
                    2 => {
                        if let Some(page) = pending_page.take() {
                            s.page_read(page);
                        }
                    }
                    3 => {
                        for e in s.take_due(now).events {
                            assert!(
                                !in_flight.iter().any(|(f, _)| f.event_id == e.event_id),
                                "seed {seed}: {} sent twice at once",
                                e.event_id
                            );
                            let fails = !finishing && rng.gen_bool(0.5);
                            in_flight.push((e, fails));
                        }
                    }
                    4 if !in_flight.is_empty() => {
                        let (e, fails) = in_flight.remove(rng.gen_range(0..in_flight.len()));
                        if fails {
                            let at = now + rng.gen_range(1..40);
                            let recorded = rng.gen_bool(0.9);
                            if recorded {
                                let mut stored = e.clone();
                                stored.next_attempt_at = at;
                                store.put(&stored);
                            }
                            s.finished(e, Some(at), recorded, None, now);
                        } else {
                            store.remove(&e.event_id);
                            *delivered.entry(e.event_id.clone()).or_default() += 1;
                            s.finished(e, None, true, None, now);
                        }
                    }
                    _ => now += 1,
                }
                assert!(
                    s.window.len() <= capacity,
                    "seed {seed}: window over capacity"
                );
            }
            // Drain: pages applied at once, every attempt succeeds.
            for _ in 0..10_000 {
                if let Some(page) = pending_page.take() {
                    s.page_read(page);
                }
                for (e, _) in in_flight.drain(..) {
                    store.remove(&e.event_id);
                    *delivered.entry(e.event_id.clone()).or_default() += 1;
                    s.finished(e, None, true, None, now);
                }
                fill(&mut s, &store);
                for e in s.take_due(now).events {
                    in_flight.push((e, false));
                }
                now += 1;
            }
            assert_eq!(
                delivered.len(),
                created,
                "seed {seed}: every event delivered"
            );
            assert!(
                delivered.values().all(|n| *n == 1),
                "seed {seed}: delivered twice: {delivered:?}"
            );
            assert!(store.rows.is_empty(), "seed {seed}");
        }
    }
}
