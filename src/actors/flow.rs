//! The run queue with flow control (SPEC §12): queued runs leave highest `priority` first,
//! then oldest first, and a run whose deployment's concurrency key already has `limit` runs
//! running stays queued while runs with other keys (or none) go ahead.
//!
//! Every key (per deployment) keeps its own ordered queue; a second ordered set holds the
//! head of each queue that may start now. Taking the next run, queueing one, and a run
//! starting or ending each cost a logarithmic update, however long the queue or however many
//! keys wait at their limit.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::lifecycle::{AdmittedRun, PreparedRun};

/// A concurrency key is per deployment: (deployment key, rendered key). `None`: no key.
type Group = Option<(String, String)>;

/// Queue order: runs handed back to the front (class 0) before the rest, then higher
/// priority, then admission order.
type Order = (u8, Reverse<u8>, i64);

fn group_of(run: &PreparedRun) -> Group {
    run.concurrency_key
        .as_ref()
        .map(|key| (run.deployment.key.clone(), key.clone()))
}

fn limit_of(run: &PreparedRun) -> usize {
    run.deployment
        .definition
        .concurrency
        .as_ref()
        .map_or(usize::MAX, |c| c.limit as usize)
}

#[derive(Default)]
pub(super) struct FlowQueue {
    next_seq: i64,
    /// Runs handed back to the front get ever smaller sequence numbers.
    next_front: i64,
    groups: HashMap<Group, BTreeMap<Order, AdmittedRun>>,
    /// Where each queued run is, by request id.
    index: HashMap<String, (Group, Order)>,
    /// The heads of the groups that may start a run now.
    ready: BTreeSet<(Order, Group)>,
    /// The entry each group has in `ready`.
    ready_of: HashMap<Group, Order>,
    /// Runs of each key holding a run slot now.
    running: HashMap<(String, String), usize>,
    /// The key of each such run, by request id.
    holding: HashMap<String, (String, String)>,
    /// Child runs queued after a restart: they start at once, without a slot.
    children: Vec<AdmittedRun>,
}

impl FlowQueue {
    /// Queues runs found unfinished at start. Those that had started before go first, in
    /// the order given; the rest by priority.
    pub(super) fn recovered(runs: Vec<AdmittedRun>) -> Self {
        let mut queue = FlowQueue::default();
        for run in runs {
            if run.resume.is_some() {
                let seq = queue.seq();
                queue.insert(run, (0, Reverse(0), seq));
            } else {
                queue.push_back(run);
            }
        }
        queue
    }

    fn seq(&mut self) -> i64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Queues a newly admitted run by its priority.
    pub(super) fn push_back(&mut self, run: AdmittedRun) {
        let order = (1, Reverse(run.prepared.priority), self.seq());
        self.insert(run, order);
    }

    /// Queues a run before every other (it was admitted and ran before them).
    pub(super) fn push_front(&mut self, run: AdmittedRun) {
        self.next_front -= 1;
        let order = (0, Reverse(0), self.next_front);
        self.insert(run, order);
    }

    fn insert(&mut self, run: AdmittedRun, order: Order) {
        if run.prepared.parent_request_id.is_some() {
            self.children.push(run);
            return;
        }
        let group = group_of(&run.prepared);
        self.index
            .insert(run.request_id.clone(), (group.clone(), order));
        self.groups
            .entry(group.clone())
            .or_default()
            .insert(order, run);
        self.refresh(&group);
    }

    /// Puts the group's head into `ready` when the group may start a run, and out otherwise.
    fn refresh(&mut self, group: &Group) {
        if let Some(order) = self.ready_of.remove(group) {
            self.ready.remove(&(order, group.clone()));
        }
        let Some(runs) = self.groups.get(group) else {
            return;
        };
        let Some((order, head)) = runs.first_key_value() else {
            self.groups.remove(group);
            return;
        };
        let room = match group {
            None => true,
            Some(key) => self.running.get(key).copied().unwrap_or(0) < limit_of(&head.prepared),
        };
        if room {
            self.ready.insert((*order, group.clone()));
            self.ready_of.insert(group.clone(), *order);
        }
    }

    /// Takes the child runs queued after a restart.
    pub(super) fn take_children(&mut self) -> Vec<AdmittedRun> {
        std::mem::take(&mut self.children)
    }

    /// Takes the first run that may start now. The caller then [`hold`](Self::hold)s its key.
    pub(super) fn pop_ready(&mut self) -> Option<AdmittedRun> {
        let (order, group) = self.ready.pop_first()?;
        self.ready_of.remove(&group);
        let run = self
            .groups
            .get_mut(&group)
            .and_then(|runs| runs.remove(&order))
            .expect("a ready head is queued");
        self.index.remove(&run.request_id);
        self.refresh(&group);
        Some(run)
    }

    /// Whether a run with this key may start now (its key is below its limit).
    pub(super) fn has_room(&self, run: &PreparedRun) -> bool {
        match group_of(run) {
            None => true,
            Some(key) => self.running.get(&key).copied().unwrap_or(0) < limit_of(run),
        }
    }

    /// Counts a run that takes a run slot against its key.
    pub(super) fn hold(&mut self, request_id: &str, run: &PreparedRun) {
        let Some(key) = group_of(run) else {
            return;
        };
        *self.running.entry(key.clone()).or_default() += 1;
        self.holding.insert(request_id.to_owned(), key.clone());
        self.refresh(&Some(key));
    }

    /// A run gave up its slot (it ended, or waits at an approval step): its key has room
    /// for one more.
    pub(super) fn release(&mut self, request_id: &str) {
        let Some(key) = self.holding.remove(request_id) else {
            return;
        };
        if let Some(n) = self.running.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&key);
            }
        }
        self.refresh(&Some(key));
    }

    /// Takes a queued run out (it was cancelled).
    pub(super) fn remove(&mut self, request_id: &str) -> Option<AdmittedRun> {
        if let Some(pos) = self
            .children
            .iter()
            .position(|r| r.request_id == request_id)
        {
            return Some(self.children.remove(pos));
        }
        let (group, order) = self.index.remove(request_id)?;
        let run = self.groups.get_mut(&group)?.remove(&order);
        self.refresh(&group);
        run
    }

    pub(super) fn contains(&self, request_id: &str) -> bool {
        self.index.contains_key(request_id)
            || self.children.iter().any(|r| r.request_id == request_id)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len() + self.children.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Map;

    use super::*;
    use crate::deployments::LiveDeployment;
    use crate::workflow::Definition;

    fn deployment(limit: u32) -> Arc<LiveDeployment> {
        let src = format!(
            "key = \"d\"\n[concurrency]\nkey = \"{{{{ metadata.c }}}}\"\nlimit = {limit}\n\
             [[steps]]\nid = \"t\"\ntype = \"template\"\ntemplate = \"x\"\n"
        );
        Arc::new(LiveDeployment {
            key: "d".into(),
            id: "dep_1".into(),
            version: 1,
            definition: Arc::new(Definition::from_toml_str(&src).unwrap()),
            signing_secret: "whsec_x".into(),
            previous_secret: None,
            previous_secret_until: None,
            created_at: 0,
            updated_at: 0,
        })
    }

    fn run(id: &str, priority: u8, key: Option<&str>, limit: u32) -> AdmittedRun {
        AdmittedRun {
            request_id: id.into(),
            prepared: PreparedRun {
                deployment: deployment(limit),
                variant: "default".into(),
                inputs: Map::new(),
                metadata: Map::new(),
                user: None,
                callback_url: None,
                source: crate::store::RunSource::Api,
                api_key_id: None,
                parent_request_id: None,
                events: Default::default(),
                priority,
                concurrency_key: key.map(str::to_owned),
            },
            completion: None,
            started_at: 0,
            resume: None,
            takeover: None,
            usage: None,
        }
    }

    /// Takes every run that may start now, holding each one's key as it starts.
    fn start_all(q: &mut FlowQueue) -> Vec<String> {
        let mut started = Vec::new();
        while let Some(r) = q.pop_ready() {
            q.hold(&r.request_id, &r.prepared);
            started.push(r.request_id);
        }
        started
    }

    #[test]
    fn priority_first_then_admission_order_and_the_front_before_all() {
        let mut q = FlowQueue::default();
        q.push_back(run("a1", 1, None, 1));
        q.push_back(run("b9", 9, None, 1));
        q.push_back(run("c5", 5, None, 1));
        q.push_back(run("d9", 9, None, 1));
        q.push_front(run("f0", 0, None, 1));
        assert_eq!(q.len(), 5);
        assert_eq!(start_all(&mut q), ["f0", "b9", "d9", "c5", "a1"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_key_at_its_limit_lets_other_keys_pass_and_its_next_run_starts_on_release() {
        let mut q = FlowQueue::default();
        for (id, key) in [
            ("a1", "A"),
            ("a2", "A"),
            ("a3", "A"),
            ("b1", "B"),
            ("n1", ""),
        ] {
            let key = (!key.is_empty()).then_some(key);
            q.push_back(run(id, 5, key, 1));
        }
        assert_eq!(start_all(&mut q), ["a1", "b1", "n1"]);
        assert!(!q.has_room(&run("a4", 5, Some("A"), 1).prepared));
        assert!(q.has_room(&run("c1", 5, Some("C"), 1).prepared));
        q.release("b1");
        assert_eq!(start_all(&mut q), Vec::<String>::new());
        q.release("a1");
        assert_eq!(start_all(&mut q), ["a2"]);
        // A cancelled queued run leaves no trace in the order.
        assert!(q.remove("a3").is_some());
        assert!(!q.contains("a3"));
        q.release("a2");
        assert_eq!(start_all(&mut q), Vec::<String>::new());
        assert!(q.is_empty());
    }

    #[test]
    fn a_limit_of_two_starts_two() {
        let mut q = FlowQueue::default();
        for id in ["a1", "a2", "a3"] {
            q.push_back(run(id, 5, Some("A"), 2));
        }
        assert_eq!(start_all(&mut q), ["a1", "a2"]);
        q.release("a2");
        assert_eq!(start_all(&mut q), ["a3"]);
    }
}
