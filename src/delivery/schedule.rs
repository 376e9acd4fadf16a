//! The delivery schedule: which waiting events go out now, and when to look again. Pure
//! bookkeeping (no actors, no clock, no I/O): the caller passes `now` in and does the reads.
//!
//! SQLite is the record of every event still to deliver; this keeps only a bounded window of
//! the soonest-due ones in memory, so a receiver that is down for a day on a busy install
//! costs a page of events, not the whole backlog. The window covers every due event up to its
//! *horizon* (a `(due time, event id)` key); everything after it stays in the database and is
//! read page by page, in key order, when the window runs low.
//!
//! One destination may not fill the window: it holds at most a quota of events, and the rest
//! of its events within the horizon are its *overflow*, read back (by a page of that
//! destination alone) as it drains. So a receiver that is down with a million events waiting
//! holds a quota's worth while the other destinations' events, due later, still go out.
//!
//! Keeping the window exact while pages are read off the actor thread (one read at a time):
//! - an event placed (new, redelivered or retried) past the horizon, or into its
//!   destination's overflow, is not kept: it is in the store already and a later page reads
//!   it. The page being read may predate it, so that page is cut just before its key;
//! - a page never brings back an event the window holds, one in flight, or one whose attempt
//!   finished while the page was read (the page may have seen it before its attempt was
//!   recorded);
//! - evicting lowers the horizon or the destination's overflow, so a page being read from the
//!   old one no longer fits and is dropped (the next one starts from the new bound).

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
    /// Every due event with a key up to this one (inclusive) is in memory, in flight, or in
    /// its destination's overflow.
    Until(Key),
    /// Every due event is in memory, in flight, or in its destination's overflow.
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

    fn until(&self) -> Option<Key> {
        match self {
            Horizon::Until(key) => Some(key.clone()),
            Horizon::Nothing | Horizon::All => None,
        }
    }
}

/// A page to read: due events in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageRequest {
    /// The events after `after` (from the first when `None`), at most `limit`.
    Next { after: Option<Key>, limit: usize },
    /// The events of one destination (see [`destination_key`]) from `from` (inclusive) up to
    /// `until` (inclusive; no bound when `None`), at most `limit`.
    Destination {
        destination: String,
        from: Key,
        until: Option<Key>,
        limit: usize,
    },
}

/// What is being read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    Next,
    Destination(String),
}

/// A page being read.
#[derive(Debug)]
struct Loading {
    reading: Reading,
    limit: usize,
    /// A bound the page was read from moved while it was read: the page no longer fits.
    stale: bool,
    /// The smallest key the page's range gained while it was read: the page may predate it,
    /// so it is cut before it.
    cut: Option<Key>,
    /// Events whose attempt finished while the page was read: the page's copy may be older.
    finished: HashSet<String>,
}

impl Loading {
    fn cut_at(&mut self, key: &Key) {
        if self.cut.as_ref().map_or(true, |cut| key < cut) {
            self.cut = Some(key.clone());
        }
    }
}

/// One (scheme, host, port): its attempts in flight, its breaker, and its waiting events.
#[derive(Debug, Default)]
struct Destination {
    in_flight: usize,
    breaker: Breaker,
    /// Keys of the events waiting for this destination in memory, earliest first.
    due: BTreeSet<Key>,
    /// How many of them are pinned (they do not count against the quota).
    pinned: usize,
    /// When set, this destination's due events from this key (inclusive) up to the horizon
    /// are not in memory (beyond its quota); the ones before it are.
    overflow: Option<Key>,
}

impl Destination {
    fn head(&self) -> Option<i64> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Held events that count against the quota.
    fn held(&self) -> usize {
        self.due.len() - self.pinned
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
    /// Most events one destination holds: four rounds of its attempts, so it keeps going
    /// between two reads of its overflow, but at least a sixteenth of the window, so a few
    /// destinations share it without paging all the time.
    quota: usize,
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
    /// Destinations with an overflow.
    overflowing: HashSet<String>,
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
        let capacity = capacity.max(1);
        let per_host = per_host.max(1);
        Schedule {
            capacity,
            quota: per_host.saturating_mul(4).max(capacity / 16).min(capacity),
            per_host,
            events: HashMap::new(),
            window: BTreeSet::new(),
            pinned: HashSet::new(),
            destinations: HashMap::new(),
            overflowing: HashSet::new(),
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
        if !pinned {
            if !self.horizon.covers(&key) {
                // In the store already: a later page reads it.
                if let Some(loading) = &mut self.loading {
                    if loading.reading == Reading::Next {
                        loading.cut_at(&key);
                    }
                }
                return;
            }
            let dest_key = destination_key(&event.callback_url);
            let overflow = self
                .destinations
                .get(&dest_key)
                .and_then(|d| d.overflow.as_ref());
            if overflow.is_some_and(|from| key >= *from) {
                // In the store already: a page of its destination reads it.
                if let Some(loading) = &mut self.loading {
                    if loading.reading == Reading::Destination(dest_key) {
                        loading.cut_at(&key);
                    }
                }
                return;
            }
        }
        let dest_key = self.add(event, pinned);
        self.enforce_quota(&dest_key);
        self.trim();
    }

    /// Holds an event; returns its destination key.
    fn add(&mut self, event: DueEvent, pinned: bool) -> String {
        let key = key_of(&event);
        let dest_key = destination_key(&event.callback_url);
        let dest = self.destinations.entry(dest_key.clone()).or_default();
        let before = dest.head();
        dest.due.insert(key.clone());
        let after = dest.head();
        move_head(&mut self.heads, &dest_key, before, after);
        if pinned {
            dest.pinned += 1;
            self.pinned.insert(event.event_id.clone());
        } else {
            self.window.insert(key);
        }
        self.events
            .insert(event.event_id.clone(), (dest_key.clone(), event));
        dest_key
    }

    /// Takes an event out of the waiting set (a redelivery replaces a waiting retry).
    fn remove_waiting(&mut self, event_id: &str) -> Option<DueEvent> {
        let (dest_key, event) = self.events.remove(event_id)?;
        let key = key_of(&event);
        let pinned = self.pinned.remove(event_id);
        if !pinned {
            self.window.remove(&key);
        }
        if let Some(dest) = self.destinations.get_mut(&dest_key) {
            dest.pinned -= usize::from(pinned);
            let before = dest.head();
            dest.due.remove(&key);
            let after = dest.head();
            move_head(&mut self.heads, &dest_key, before, after);
        }
        Some(event)
    }

    /// Evicts a destination's latest events beyond its quota into its overflow.
    fn enforce_quota(&mut self, dest_key: &str) {
        loop {
            let Some(dest) = self.destinations.get(dest_key) else {
                return;
            };
            if dest.held() <= self.quota {
                return;
            }
            // Its latest event the store agrees with (pinned ones stay).
            let Some(latest) = dest
                .due
                .iter()
                .rev()
                .find(|(_, id)| !self.pinned.contains(id))
                .cloned()
            else {
                return;
            };
            self.remove_waiting(&latest.1);
            if let Some(dest) = self.destinations.get_mut(dest_key) {
                // Every held event of the destination comes before its overflow.
                dest.overflow = Some(latest);
            }
            self.overflowing.insert(dest_key.to_string());
            if let Some(loading) = &mut self.loading {
                if loading.reading == Reading::Destination(dest_key.to_string()) {
                    loading.stale = true;
                }
            }
        }
    }

    /// Evicts the latest events beyond capacity (the horizon moves back to the latest kept),
    /// then notes the peak.
    fn trim(&mut self) {
        let mut moved = false;
        while self.window.len() > self.capacity {
            let (_, id) = self
                .window
                .last()
                .cloned()
                .expect("window is over capacity");
            self.remove_waiting(&id);
            let last = self.window.last().cloned().expect("capacity is at least 1");
            self.horizon = Horizon::Until(last);
            moved = true;
        }
        if moved {
            if let Some(loading) = &mut self.loading {
                loading.stale = true;
            }
            // An overflow now past the horizon is the horizon's to read.
            let horizon = self.horizon.clone();
            let destinations = &mut self.destinations;
            self.overflowing.retain(|dest_key| {
                let Some(dest) = destinations.get_mut(dest_key) else {
                    return false;
                };
                if dest
                    .overflow
                    .as_ref()
                    .is_some_and(|from| horizon.covers(from))
                {
                    return true;
                }
                dest.overflow = None;
                false
            });
        }
        self.peak = self.peak.max(self.events.len());
    }

    /// The page to read next, if a destination's overflow or the window runs low. The window
    /// then counts the page as being read until [`Schedule::page_read`] or
    /// [`Schedule::page_failed`].
    pub fn next_page(&mut self) -> Option<PageRequest> {
        if self.loading.is_some() {
            return None;
        }
        let low = self.quota / 2;
        let draining = self.overflowing.iter().find_map(|dest_key| {
            let dest = self.destinations.get(dest_key)?;
            let from = dest.overflow.clone()?;
            (dest.held() <= low).then(|| (dest_key.clone(), from, dest.held()))
        });
        if let Some((destination, from, held)) = draining {
            // One more than it takes: the extra one says where the overflow now starts.
            let limit = self.quota - held + 1;
            self.loading = Some(Loading {
                reading: Reading::Destination(destination.clone()),
                limit,
                stale: false,
                cut: None,
                finished: HashSet::new(),
            });
            return Some(PageRequest::Destination {
                destination,
                from,
                until: self.horizon.until(),
                limit,
            });
        }
        if self.horizon == Horizon::All || self.window.len() > self.capacity / 2 {
            return None;
        }
        let after = self.horizon.until();
        let limit = self.capacity - self.window.len();
        self.loading = Some(Loading {
            reading: Reading::Next,
            limit,
            stale: false,
            cut: None,
            finished: HashSet::new(),
        });
        Some(PageRequest::Next { after, limit })
    }

    /// Whether a page's event is held or handled already (see the module notes).
    fn known(&self, loading: &Loading, event_id: &str) -> bool {
        self.events.contains_key(event_id)
            || self.in_flight.contains_key(event_id)
            || loading.finished.contains(event_id)
    }

    /// Joins a page read for the last [`PageRequest`] (due events in key order) to the window.
    pub fn page_read(&mut self, page: Vec<DueEvent>) {
        let Some(loading) = self.loading.take() else {
            return;
        };
        if loading.stale {
            return;
        }
        match &loading.reading {
            Reading::Next => self.join_next(&loading, page),
            Reading::Destination(dest_key) => self.join_destination(&loading, dest_key, page),
        }
        self.trim();
    }

    fn join_next(&mut self, loading: &Loading, page: Vec<DueEvent>) {
        let mut complete = page.len() < loading.limit && loading.cut.is_none();
        let mut last = None;
        for event in page {
            let key = key_of(&event);
            if loading.cut.as_ref().is_some_and(|cut| key >= *cut)
                || self.window.len() >= self.capacity
            {
                complete = false;
                break;
            }
            last = Some(key.clone());
            if self.known(loading, &event.event_id) {
                continue;
            }
            let dest_key = destination_key(&event.callback_url);
            let dest = self.destinations.entry(dest_key.clone()).or_default();
            if dest.overflow.is_some() {
                // After its overflow's start: part of the overflow once the horizon passes.
                continue;
            }
            if dest.held() >= self.quota {
                dest.overflow = Some(key);
                self.overflowing.insert(dest_key);
                continue;
            }
            self.add(event, false);
        }
        if complete {
            self.horizon = Horizon::All;
        } else if let Some(last) = last {
            self.horizon = Horizon::Until(last);
        }
    }

    fn join_destination(&mut self, loading: &Loading, dest_key: &str, page: Vec<DueEvent>) {
        // Where the overflow starts after this page: the first event not held.
        let mut overflow = loading.cut.clone();
        for (n, event) in page.into_iter().enumerate() {
            let key = key_of(&event);
            if loading.cut.as_ref().is_some_and(|cut| key >= *cut) {
                break;
            }
            if n + 1 == loading.limit {
                overflow = Some(key);
                break;
            }
            if self.known(loading, &event.event_id) {
                continue;
            }
            self.add(event, false);
        }
        if let Some(dest) = self.destinations.get_mut(dest_key) {
            dest.overflow = overflow.clone();
        }
        if overflow.is_none() {
            self.overflowing.remove(dest_key);
        }
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
            let (dest_key, event) = self.events.remove(&id).expect("due events are indexed");
            if self.pinned.remove(&id) {
                if let Some(dest) = self.destinations.get_mut(&dest_key) {
                    dest.pinned -= 1;
                }
            } else {
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
    struct StoreModel {
        rows: BTreeMap<Key, DueEvent>,
    }

    impl StoreModel {
        fn put(&mut self, e: &DueEvent) {
            self.rows.retain(|(_, id), _| *id != e.event_id);
            self.rows.insert(key_of(e), e.clone());
        }
        fn remove(&mut self, id: &str) {
            self.rows.retain(|(_, i), _| i != id);
        }
        fn page(&self, req: &PageRequest) -> Vec<DueEvent> {
            match req {
                PageRequest::Next { after, limit } => self
                    .rows
                    .iter()
                    .filter(|(k, _)| after.as_ref().map_or(true, |a| *k > a))
                    .take(*limit)
                    .map(|(_, e)| e.clone())
                    .collect(),
                PageRequest::Destination {
                    destination,
                    from,
                    until,
                    limit,
                } => self
                    .rows
                    .iter()
                    .filter(|(k, e)| {
                        *k >= from
                            && until.as_ref().map_or(true, |u| *k <= u)
                            && destination_key(&e.callback_url) == *destination
                    })
                    .take(*limit)
                    .map(|(_, e)| e.clone())
                    .collect(),
            }
        }
    }

    fn ids(events: &[DueEvent]) -> Vec<&str> {
        events.iter().map(|e| e.event_id.as_str()).collect()
    }

    /// Reads and joins pages until the window is full or the store is exhausted.
    fn fill(s: &mut Schedule, store: &StoreModel) {
        while let Some(req) = s.next_page() {
            let page = store.page(&req);
            s.page_read(page);
        }
    }

    #[test]
    fn takes_due_events_up_to_the_per_host_limit_and_wakes_for_the_next() {
        let mut s = Schedule::new(100, 2);
        let mut store = StoreModel::default();
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
        let mut store = StoreModel::default();
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
        let store = StoreModel::default();
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
        let mut store = StoreModel::default();
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
        let mut store = StoreModel::default();
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
    fn drain(s: &mut Schedule, store: &mut StoreModel, now: i64) -> Vec<String> {
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
        let mut store = StoreModel::default();
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
        let mut store = StoreModel::default();
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
        let mut store = StoreModel::default();
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
    fn a_destination_with_a_backlog_holds_its_quota_and_the_others_still_go_out() {
        // Quota: 4 rounds of 1 attempt = 4 events of the window of 64.
        let mut s = Schedule::new(64, 1);
        let mut store = StoreModel::default();
        for n in 0..1000 {
            store.put(&event(&format!("a{n:04}"), n, "down"));
        }
        store.put(&event("b", 5000, "up"));
        fill(&mut s, &store);
        assert_eq!(
            s.stats(0).waiting,
            5,
            "4 of `down`, and `b` behind its backlog"
        );
        let due = s.take_due(5000);
        assert_eq!(ids(&due.events), ["a0000", "b"]);
        // `down` fails (its retries go far ahead); `b` is delivered.
        let mut retried = 0;
        for e in due.events {
            if e.event_id == "b" {
                store.remove("b");
                s.finished(e, None, true, Some(true), 5000);
            } else {
                let mut later = e.clone();
                later.next_attempt_at = 1_000_000;
                store.put(&later);
                s.finished(e, Some(1_000_000), true, Some(false), 5000);
                retried += 1;
            }
        }
        assert_eq!(retried, 1);
        // The backlog drains through its overflow, in order, each event once.
        let mut sent = drain(&mut s, &mut store, 5000);
        assert_eq!(sent.len(), 999);
        assert!(sent.windows(2).all(|w| w[0] < w[1]), "in due order");
        assert!(s.stats(5000).waiting_peak <= 64);
        sent.extend(drain(&mut s, &mut store, 1_000_000));
        assert_eq!(sent.len(), 1000);
        assert_eq!(sent.last().map(String::as_str), Some("a0000"), "its retry");
    }

    #[test]
    fn a_retry_the_store_did_not_record_stays_in_memory() {
        let mut s = Schedule::new(1, 100);
        let mut store = StoreModel::default();
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
            let capacity = rng.gen_range(1..14);
            let mut s = Schedule::new(capacity, rng.gen_range(1..3));
            let hosts = ["h", "g", "f"];
            let mut store = StoreModel::default();
            let mut now = 0i64;
            let mut next_id = 0;
            let mut created = 0;
            let mut delivered: HashMap<String, u32> = HashMap::new();
            let mut in_flight: Vec<(DueEvent, bool)> = Vec::new();
            let mut pending_page: Option<Vec<DueEvent>> = None;
            for _ in 0..16 {
                let host = hosts[rng.gen_range(0..hosts.len())];
                store.put(&event(&format!("e{next_id}"), rng.gen_range(0..20), host));
                next_id += 1;
                created += 1;
            }
            fill(&mut s, &store);
            for step in 0..4000 {
                let finishing = step > 3000;
                match rng.gen_range(0..6) {
                    0 if !finishing && created < 60 => {
                        let host = hosts[rng.gen_range(0..hosts.len())];
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
