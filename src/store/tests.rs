//! The store's commands and queries against a real SQLite file in a temporary directory,
//! through the same writer thread the daemon uses.

use super::*;
use crate::config::StoreConfig;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

fn open() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hivelet.db"), &StoreConfig::default()).unwrap();
    Fixture { _dir: dir, store }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.store.close();
    }
}

fn new_run(request_id: &str, callback: bool, created_at: i64) -> NewRun {
    NewRun {
        request_id: request_id.into(),
        deployment_key: "hello".into(),
        variant: "default".into(),
        version: 1,
        status: RunStatus::Queued,
        source: RunSource::Cli,
        callback_url: callback.then(|| "http://127.0.0.1:9/hook".into()),
        api_key_id: Some("key_1".into()),
        inputs_json: "{}".into(),
        metadata_json: r#"{"customer":"c1"}"#.into(),
        user: None,
        created_at,
        started_at: None,
        rerun_of: None,
        parent_request_id: None,
        schedule_id: None,
        scheduled_for: None,
        events_json: None,
        priority: 5,
        concurrency_key: None,
    }
}

fn finished(request_id: &str, ended_at: i64, event: bool) -> FinishedRun {
    FinishedRun {
        request_id: request_id.into(),
        status: RunStatus::Completed,
        output_json: Some("\"ok\"".into()),
        error_json: None,
        ended_at,
        usage_json: None,
        event: event.then(|| NewEvent {
            event_id: format!("evt_{}", &request_id[4..]),
            deployment_key: "hello".into(),
            event_type: "workflow.completed".into(),
            callback_url: "http://127.0.0.1:9/hook".into(),
            body: b"{}".to_vec(),
        }),
    }
}

fn attempt(event: &DueEvent, outcome: AttemptOutcome, at: i64) -> RecordAttempt {
    let failed = outcome != AttemptOutcome::Delivered;
    RecordAttempt {
        attempt: AttemptRow {
            attempt_id: format!("att_{}_{}", &event.event_id[4..], event.total_attempts + 1),
            event_id: event.event_id.clone(),
            request_id: event.request_id.clone(),
            attempt_number: event.total_attempts + 1,
            series: event.series,
            url: event.callback_url.clone(),
            request_headers_json: "{}".into(),
            status_code: Some(if failed { 503 } else { 200 }),
            error_kind: failed.then_some(ErrorKind::HttpStatus),
            error_message: failed.then(|| "HTTP 503".into()),
            response_headers_json: Some("{}".into()),
            response_body: Some(String::new()),
            started_at: at,
            duration_ms: 3,
            outcome,
            next_attempt_at: failed.then_some(at + 1000),
        },
        update: EventUpdate {
            state: match outcome {
                AttemptOutcome::Delivered => EventState::Delivered,
                AttemptOutcome::Retrying => EventState::Retrying,
                AttemptOutcome::Failed => EventState::Failed,
            },
            attempts: event.attempts + 1,
            total_attempts: event.total_attempts + 1,
            next_attempt_at: (outcome == AttemptOutcome::Retrying).then_some(at + 1000),
            failure_reason: (outcome == AttemptOutcome::Failed).then(|| "exhausted".into()),
        },
    }
}

fn step(request_id: &str, index: i64, id: &str, status: StepStatus, at: i64) -> StepRow {
    StepRow {
        request_id: request_id.into(),
        step_index: index,
        step_id: id.into(),
        step_type: "approval".into(),
        status,
        started_at: at,
        duration_ms: 0,
        output_json: None,
        error: None,
        attempts: 1,
        usage_json: None,
        parent: None,
        passes: String::new(),
        reason: None,
        child_request_id: None,
    }
}

/// A request id whose time part is `ms`, as the daemon makes them (purge relies on it).
fn req(ms: i64, n: u32) -> String {
    format!("req_{ms:012x}7000800{n:013x}")
}

#[actix_rt::test]
async fn mark_running_answers_whether_the_run_was_live() {
    let f = open();
    let id = req(1_000, 1);
    f.store
        .write(InsertRun(new_run(&id, false, 1_000)))
        .await
        .unwrap();
    let missing = MarkRunning {
        request_id: req(1_000, 2),
        started_at: 1_001,
    };
    assert!(!f.store.write(missing).await.unwrap());
    let mark = MarkRunning {
        request_id: id.clone(),
        started_at: 1_001,
    };
    assert!(f.store.write(mark.clone()).await.unwrap());
    f.store
        .write(FinishRun(finished(&id, 1_002, false)))
        .await
        .unwrap();
    assert!(
        !f.store.write(mark).await.unwrap(),
        "an ended run stays ended"
    );
    let (run, steps) = f.store.run_with_steps(id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.source, RunSource::Cli);
    assert_eq!(run.delivery, RunDelivery::Direct);
    assert_eq!(run.started_at, Some(1_001));
    assert_eq!(run.duration_ms, Some(1));
    assert!(steps.is_empty());
}

#[actix_rt::test]
async fn a_finished_callback_run_stores_its_event_once() {
    let f = open();
    let id = req(2_000, 1);
    f.store
        .write(InsertRun(new_run(&id, true, 2_000)))
        .await
        .unwrap();
    let first = f
        .store
        .write(FinishRun(finished(&id, 2_010, true)))
        .await
        .unwrap();
    assert!(first.ended && first.event_due);
    // A second end (a cancel that lost the race) changes nothing, and adds no event.
    let mut again = finished(&id, 2_020, true);
    again.status = RunStatus::Cancelled;
    assert!(!f.store.write(FinishRun(again)).await.unwrap().ended);
    let due = f.store.due_events_after_blocking(None, 10_000).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].request_id, id);
    assert_eq!(due[0].next_attempt_at, 2_010);
    assert_eq!((due[0].series, due[0].attempts), (1, 0));
    let (event, attempts) = f.store.delivery_of_run(id.clone()).await.unwrap();
    let event = event.unwrap();
    assert_eq!(event.state, EventState::Pending);
    assert!(attempts.is_empty());
    let (run, _) = f.store.run_with_steps(id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.delivery, RunDelivery::Callback);
}

#[actix_rt::test]
async fn attempts_move_the_event_and_redeliver_starts_a_new_series() {
    let f = open();
    let id = req(3_000, 1);
    f.store
        .write(InsertRun(new_run(&id, true, 3_000)))
        .await
        .unwrap();
    f.store
        .write(FinishRun(finished(&id, 3_001, true)))
        .await
        .unwrap();
    let event = f
        .store
        .due_events_after_blocking(None, 10_000)
        .unwrap()
        .remove(0);
    f.store
        .write(attempt(&event, AttemptOutcome::Retrying, 3_002))
        .await
        .unwrap();
    let due = f.store.due_events_after_blocking(None, 10_000).unwrap();
    assert_eq!((due[0].attempts, due[0].next_attempt_at), (1, 4_002));
    f.store
        .write(attempt(&due[0], AttemptOutcome::Delivered, 4_002))
        .await
        .unwrap();
    assert!(f
        .store
        .due_events_after_blocking(None, 10_000)
        .unwrap()
        .is_empty());
    let attempts = f.store.attempts_for_run(id.clone()).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Retrying);
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::HttpStatus));
    assert_eq!(attempts[1].outcome, AttemptOutcome::Delivered);
    assert_eq!(attempts[1].error_kind, None);

    let again = Redeliver {
        request_id: id.clone(),
        event_id: None,
        at: 5_000,
    };
    let event = f
        .store
        .write(again)
        .await
        .unwrap()
        .expect("the run has an event");
    assert_eq!(
        (event.series, event.attempts, event.total_attempts),
        (2, 0, 2)
    );
    assert_eq!(event.next_attempt_at, 5_000);
    let (record, _) = f.store.delivery_of_run(id).await.unwrap();
    assert_eq!(record.unwrap().state, EventState::Pending);
    assert_eq!(
        f.store
            .due_events_after_blocking(None, 10_000)
            .unwrap()
            .len(),
        1
    );

    let no_event = Redeliver {
        request_id: req(3_000, 9),
        event_id: None,
        at: 5_000,
    };
    assert!(f.store.write(no_event).await.unwrap().is_none());
}

#[actix_rt::test]
async fn purge_keeps_live_runs_and_runs_whose_event_is_due() {
    let f = open();
    let delivered = req(10_000, 1);
    let due = req(10_000, 2);
    let direct = req(10_000, 3);
    let live = req(10_000, 4);
    let recent = req(50_000, 5);
    for (id, callback) in [
        (&delivered, true),
        (&due, true),
        (&direct, false),
        (&live, false),
        (&recent, false),
    ] {
        f.store
            .write(InsertRun(new_run(id, callback, 10_000)))
            .await
            .unwrap();
    }
    for (id, event) in [(&delivered, true), (&due, true), (&direct, false)] {
        f.store
            .write(FinishRun(finished(id, 10_005, event)))
            .await
            .unwrap();
    }
    f.store
        .write(FinishRun(finished(&recent, 50_005, false)))
        .await
        .unwrap();
    let events = f.store.due_events_after_blocking(None, 10_000).unwrap();
    let first = events.iter().find(|e| e.request_id == delivered).unwrap();
    f.store
        .write(attempt(first, AttemptOutcome::Delivered, 10_006))
        .await
        .unwrap();

    assert_eq!(f.store.purge_runs(20_000).await.unwrap(), 2);
    for (id, kept) in [
        (delivered, false),
        (direct, false),
        (due.clone(), true),
        (live, true),
        (recent, true),
    ] {
        let found = f.store.run_with_steps(id.clone()).await.unwrap().is_some();
        assert_eq!(found, kept, "{id}");
    }
    assert!(f
        .store
        .attempts_for_run(req(10_000, 1))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(f.store.purge_runs(20_000).await.unwrap(), 0);
}

#[actix_rt::test]
async fn a_failing_command_fails_alone_and_undoes_all_its_statements() {
    let f = open();
    let a = req(20_000, 1);
    let b = req(20_000, 2);
    f.store
        .write(InsertRun(new_run(&a, true, 20_000)))
        .await
        .unwrap();
    f.store
        .write(InsertRun(new_run(&b, true, 20_000)))
        .await
        .unwrap();
    f.store
        .write(FinishRun(finished(&a, 20_001, true)))
        .await
        .unwrap();
    // The same event id again: the run's update succeeds, the event insert fails, and the
    // savepoint takes the update back.
    let mut clash = finished(&b, 20_002, true);
    clash.event.as_mut().unwrap().event_id = format!("evt_{}", &a[4..]);
    let (dup, clash, after) = futures_util::future::join3(
        f.store.write(InsertRun(new_run(&a, false, 20_000))),
        f.store.write(FinishRun(clash)),
        f.store.write(MarkRunning {
            request_id: b.clone(),
            started_at: 20_003,
        }),
    )
    .await;
    assert!(matches!(dup, Err(StoreError::Sqlite(_))), "{dup:?}");
    assert!(matches!(clash, Err(StoreError::Sqlite(_))), "{clash:?}");
    assert!(
        after.unwrap(),
        "the command after the failures still commits"
    );
    let (run, _) = f.store.run_with_steps(b).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.ended_at, None);
}

#[actix_rt::test]
async fn an_approval_is_answered_once_and_only_while_its_step_waits() {
    let f = open();
    let id = req(30_000, 1);
    let answer = |at| AnswerApproval {
        request_id: id.clone(),
        step_id: "ok".into(),
        response_json: r#"{"text":"yes"}"#.into(),
        at,
    };
    f.store
        .write(InsertRun(new_run(&id, false, 30_000)))
        .await
        .unwrap();
    f.store
        .write(MarkRunning {
            request_id: id.clone(),
            started_at: 30_001,
        })
        .await
        .unwrap();
    assert!(
        !f.store.write(answer(30_002)).await.unwrap(),
        "not waiting yet"
    );
    // Detached writes commit in order with the ones that wait.
    f.store
        .write_detached(RecordStep(step(&id, 0, "ok", StepStatus::Waiting, 30_003)));
    assert!(f.store.write(answer(30_004)).await.unwrap());
    assert!(
        !f.store.write(answer(30_005)).await.unwrap(),
        "already answered"
    );
    let trace = f.store.trace_blocking(&id).unwrap();
    let (steps, answers) = (trace.steps, trace.approvals);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Waiting);
    assert_eq!(
        answers,
        vec![("ok".to_string(), r#"{"text":"yes"}"#.to_string())]
    );
    let unfinished = f.store.unfinished_runs_blocking().unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].status, RunStatus::Running);
}

#[actix_rt::test]
async fn deployments_get_versions_and_keep_their_secret() {
    let f = open();
    let put = |version_text: &str, at| {
        PutDeployment(NewDeploymentVersion {
            key: "hello".into(),
            description: None,
            definition_json: version_text.into(),
            new_deployment_id: format!("dep_{at}"),
            new_signing_secret: format!("whsec_{at}"),
            at,
        })
    };
    let first = f.store.write(put("{\"v\":1}", 1)).await.unwrap();
    assert_eq!(
        first,
        Deployed {
            version: 1,
            created: true
        }
    );
    let second = f.store.write(put("{\"v\":2}", 2)).await.unwrap();
    assert_eq!(
        second,
        Deployed {
            version: 2,
            created: false
        }
    );
    let all = f.store.deployments_blocking().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].version, all[0].id.as_str()), (2, "dep_1"));
    assert_eq!(all[0].signing_secret, "whsec_1");
    assert_eq!(
        f.store
            .definition_at_blocking("hello", 1)
            .unwrap()
            .as_deref(),
        Some("{\"v\":1}")
    );
    let versions = f.store.deployment_versions("hello".into()).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    let rotate = RotateSecret {
        key: "hello".into(),
        new_secret: "whsec_new".into(),
        previous_until: 10,
    };
    assert!(f.store.write(rotate).await.unwrap());
    let all = f.store.deployments_blocking().unwrap();
    assert_eq!(all[0].previous_secret.as_deref(), Some("whsec_1"));
    let delete = || DeleteDeployment {
        key: "hello".into(),
    };
    assert!(f.store.write(delete()).await.unwrap());
    assert!(!f.store.write(delete()).await.unwrap());
    assert!(f.store.deployments_blocking().unwrap().is_empty());
}

#[actix_rt::test]
async fn keys_rotate_and_revoke_only_while_live() {
    let f = open();
    let key = KeyRecord {
        id: "key_1".into(),
        name: "ops".into(),
        role: Role::Admin,
        key_hash: "h1".into(),
        key_prefix: "hvk_1".into(),
        created_at: 1,
        last_used_at: None,
        revoked_at: None,
        previous_key_hash: None,
        previous_key_until: None,
    };
    f.store.write(InsertKey(key.clone())).await.unwrap();
    let rotate = |id: &str| RotateKey {
        id: id.into(),
        key_hash: "h2".into(),
        key_prefix: "hvk_2".into(),
        previous_until: None,
    };
    assert!(f.store.write(rotate("key_1")).await.unwrap());
    assert!(!f.store.write(rotate("key_9")).await.unwrap());
    f.store
        .write(TouchKey {
            id: "key_1".into(),
            at: 5,
        })
        .await
        .unwrap();
    let stored = f.store.key("key_1".into()).await.unwrap().unwrap();
    assert_eq!(stored.role, Role::Admin);
    assert_eq!(
        (stored.key_hash.as_str(), stored.last_used_at),
        ("h2", Some(5))
    );
    let revoke = || RevokeKey {
        id: "key_1".into(),
        at: 6,
    };
    assert_eq!(
        f.store.write(revoke()).await.unwrap(),
        Revocation::LastAdmin,
        "the only admin key stays"
    );
    let second_admin = KeyRecord {
        id: "key_2".into(),
        key_hash: "h3".into(),
        ..key
    };
    f.store.write(InsertKey(second_admin)).await.unwrap();
    assert_eq!(f.store.write(revoke()).await.unwrap(), Revocation::Revoked);
    assert_eq!(
        f.store.write(revoke()).await.unwrap(),
        Revocation::NotFound,
        "already revoked"
    );
    assert!(
        !f.store.write(rotate("key_1")).await.unwrap(),
        "a revoked key stays dead"
    );
    let keys = f.store.list_keys_blocking().unwrap();
    assert_eq!(keys.len(), 2);
    let revoked = keys.iter().find(|k| k.id == "key_1").unwrap();
    assert_eq!(revoked.revoked_at, Some(6));
    assert!(f.store.key("key_9".into()).await.unwrap().is_none());
}

#[actix_rt::test]
async fn idempotency_records_answer_within_their_window() {
    let f = open();
    let save = SaveIdempotent {
        api_key_id: "key_1".into(),
        idempotency_key: "k".into(),
        request_id: req(1, 1),
        response: r#"{"status":202}"#.into(),
        at: 1_000,
    };
    f.store.write(save).await.unwrap();
    let find = |since| f.store.find_idempotent("key_1".into(), "k".into(), since);
    assert_eq!(
        find(900).await.unwrap().as_deref(),
        Some(r#"{"status":202}"#)
    );
    assert_eq!(find(1_001).await.unwrap(), None);
    let other_key = f.store.find_idempotent("key_2".into(), "k".into(), 0);
    assert_eq!(other_key.await.unwrap(), None);
}

#[actix_rt::test]
async fn list_runs_filters_by_typed_states() {
    let f = open();
    let done = req(40_000, 1);
    let queued = req(40_001, 2);
    f.store
        .write(InsertRun(new_run(&done, true, 40_000)))
        .await
        .unwrap();
    f.store
        .write(InsertRun(new_run(&queued, false, 40_001)))
        .await
        .unwrap();
    f.store
        .write(FinishRun(finished(&done, 40_002, true)))
        .await
        .unwrap();
    let list = |filter: RunFilter| {
        f.store.list_runs(RunFilter {
            limit: 10,
            ..filter
        })
    };
    let all = list(RunFilter::default()).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|i| i.run.request_id.as_str())
            .collect::<Vec<_>>(),
        [queued.as_str(), done.as_str()],
        "newest first"
    );
    assert_eq!(all[1].delivery_state, Some(EventState::Pending));
    assert_eq!(all[0].delivery_state, None);
    let completed = list(RunFilter {
        status: Some(RunStatus::Completed),
        ..Default::default()
    });
    let completed = completed.await.unwrap();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].run.request_id, done);
    let direct = list(RunFilter {
        delivery: Some(RunDelivery::Direct),
        source: Some(RunSource::Cli),
        ..Default::default()
    });
    assert_eq!(direct.await.unwrap()[0].run.request_id, queued);
    let from_ui = list(RunFilter {
        source: Some(RunSource::Ui),
        ..Default::default()
    });
    assert!(from_ui.await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_backup_is_a_sound_copy_with_every_run() {
    let f = open();
    for n in 0..3 {
        let id = req(60_000, n);
        f.store
            .write(InsertRun(new_run(&id, false, 60_000)))
            .await
            .unwrap();
    }
    let copy = f._dir.path().join("copy.db");
    assert_eq!(backup(f.store.path(), &copy).unwrap(), 3);
    let again = backup(f.store.path(), &copy);
    assert!(matches!(again, Err(BackupError::Copy { .. })), "{again:?}");
    let missing = backup(&f._dir.path().join("none.db"), &f._dir.path().join("x.db"));
    assert!(
        matches!(missing, Err(BackupError::Open { .. })),
        "{missing:?}"
    );
}

#[actix_rt::test]
async fn a_rerun_is_stored_with_its_reused_lines_or_not_at_all() {
    let f = open();
    let old = req(1_000, 1);
    f.store
        .write(InsertRun(new_run(&old, false, 1_000)))
        .await
        .unwrap();
    let id = req(2_000, 1);
    let mut run = new_run(&id, false, 2_000);
    run.rerun_of = Some(old.clone());
    let line = StepRow {
        reason: Some("completed".into()),
        ..step(&id, 0, "a", StepStatus::Reused, 2_000)
    };
    f.store
        .write(InsertRerun {
            run,
            reused: vec![line.clone()],
        })
        .await
        .unwrap();
    let (stored, steps) = f.store.run_with_steps(id.clone()).await.unwrap().unwrap();
    assert_eq!(stored.rerun_of.as_deref(), Some(old.as_str()));
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Reused);
    assert_eq!(steps[0].reason.as_deref(), Some("completed"));

    // One transaction: a line that breaks a constraint (an unknown run) leaves no run row.
    let orphan = req(3_000, 1);
    let mut run = new_run(&orphan, false, 3_000);
    run.rerun_of = Some(old.clone());
    let bad = StepRow {
        step_type: String::new(),
        ..step(&req(3_000, 2), 0, "a", StepStatus::Reused, 3_000)
    };
    let written = f
        .store
        .write(InsertRerun {
            run,
            reused: vec![bad],
        })
        .await;
    assert!(written.is_err(), "{written:?}");
    assert!(f.store.run_with_steps(orphan).await.unwrap().is_none());

    // Finishing stores the summed usage.
    let mut done = finished(&id, 2_500, false);
    done.usage_json = Some(r#"{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#.into());
    assert!(f.store.write(FinishRun(done)).await.unwrap().ended);
    let (stored, _) = f.store.run_with_steps(id).await.unwrap().unwrap();
    assert_eq!(
        stored.usage_json.as_deref(),
        Some(r#"{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#)
    );
}

fn schedule_record(id: &str, next_run_at: Option<i64>) -> ScheduleRecord {
    ScheduleRecord {
        schedule_id: id.into(),
        name: None,
        deployment_key: "hello".into(),
        variant: "default".into(),
        inputs_json: "{}".into(),
        metadata_json: "{}".into(),
        user: None,
        cron: None,
        every: Some("1s".into()),
        timezone: "UTC".into(),
        callback_url: None,
        active: true,
        catch_up: "all".into(),
        next_run_at,
        last_request_id: None,
        last_run_at: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn scheduled_run(request_id: &str, scheduled_for: Option<i64>) -> NewRun {
    NewRun {
        source: RunSource::Schedule,
        schedule_id: Some("sch_1".into()),
        scheduled_for,
        ..new_run(request_id, false, 5_000)
    }
}

fn step_event(request_id: &str, n: u32) -> NewEvent {
    NewEvent {
        event_id: format!("evt_{}_{n}", &request_id[4..]),
        deployment_key: "hello".into(),
        event_type: "step.completed".into(),
        callback_url: "http://127.0.0.1:9/hook".into(),
        body: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

#[actix_rt::test]
async fn a_fire_stores_its_run_and_the_next_fire_together_or_not_at_all() {
    let f = open();
    f.store
        .write(PutDeployment(NewDeploymentVersion {
            key: "hello".into(),
            description: None,
            definition_json: "{}".into(),
            new_deployment_id: "dep_1".into(),
            new_signing_secret: "whsec_1".into(),
            at: 1,
        }))
        .await
        .unwrap();
    f.store
        .write(InsertSchedule(schedule_record("sch_1", Some(1_000))))
        .await
        .unwrap();
    let fire = |request_id: &str, expected_next, next| FireSchedule {
        schedule_id: "sch_1".into(),
        advance: Some(Advance {
            expected_next,
            next_run_at: Some(next),
        }),
        run: Some(scheduled_run(request_id, Some(expected_next))),
        at: 5_000,
    };
    assert!(f.store.write(fire("req_a", 1_000, 2_000)).await.unwrap());
    // The same fire again (a repeat after a crash would read the stored next fire, 2 000):
    // nothing is stored, not even the run.
    assert!(!f.store.write(fire("req_b", 1_000, 2_000)).await.unwrap());
    assert!(f
        .store
        .run_with_steps("req_b".into())
        .await
        .unwrap()
        .is_none());
    let (run, _) = f
        .store
        .run_with_steps("req_a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.source, RunSource::Schedule);
    assert_eq!(run.schedule_id.as_deref(), Some("sch_1"));
    assert_eq!(run.scheduled_for, Some(1_000));
    let stored = f.store.schedule("sch_1".into()).await.unwrap().unwrap();
    assert_eq!(stored.next_run_at, Some(2_000));
    assert_eq!(stored.last_request_id.as_deref(), Some("req_a"));
    assert_eq!(stored.last_run_at, Some(5_000));

    // A paused schedule does not fire; a trigger (no advance) still runs and leaves the
    // next fire alone.
    let mut paused = schedule_record("sch_1", Some(2_000));
    paused.active = false;
    assert!(f
        .store
        .write(UpdateSchedule {
            schedule: paused,
            reset_next: false,
        })
        .await
        .unwrap());
    assert!(!f.store.write(fire("req_c", 2_000, 3_000)).await.unwrap());
    let trigger = FireSchedule {
        schedule_id: "sch_1".into(),
        advance: None,
        run: Some(scheduled_run("req_d", None)),
        at: 6_000,
    };
    assert!(f.store.write(trigger).await.unwrap());
    let stored = f.store.schedule("sch_1".into()).await.unwrap().unwrap();
    assert_eq!(stored.next_run_at, Some(2_000));
    assert_eq!(stored.last_request_id.as_deref(), Some("req_d"));
    let filter = RunFilter {
        schedule_id: Some("sch_1".into()),
        limit: 10,
        ..Default::default()
    };
    let ids: Vec<String> = f
        .store
        .list_runs(filter)
        .await
        .unwrap()
        .into_iter()
        .map(|item| item.run.request_id)
        .collect();
    assert_eq!(ids, vec!["req_d".to_string(), "req_a".to_string()]);

    // Deleting the deployment deletes its schedules (their runs stay).
    assert!(f
        .store
        .write(DeleteDeployment {
            key: "hello".into()
        })
        .await
        .unwrap());
    assert!(f.store.schedule("sch_1".into()).await.unwrap().is_none());
    assert!(f
        .store
        .run_with_steps("req_a".into())
        .await
        .unwrap()
        .is_some());
}

#[actix_rt::test]
async fn a_runs_events_are_due_one_at_a_time_in_order() {
    let f = open();
    let id = req(60_000, 1);
    f.store
        .write(InsertRun(new_run(&id, true, 60_000)))
        .await
        .unwrap();
    let mut due_now = Vec::new();
    for n in 0..2 {
        due_now.push(
            f.store
                .write(RecordStepEvent {
                    step: step(&id, n, &format!("s{n}"), StepStatus::Completed, 60_001 + n),
                    event: step_event(&id, n as u32),
                    at: 60_001 + n,
                })
                .await
                .unwrap(),
        );
    }
    let end = f
        .store
        .write(FinishRun(finished(&id, 60_010, true)))
        .await
        .unwrap();
    assert_eq!(due_now, [true, false], "the second waits for the first");
    assert!(end.ended && !end.event_due, "the end waits too");
    assert_eq!(f.store.trace_blocking(&id).unwrap().steps.len(), 2);
    let states = |f: &Fixture| -> Vec<(i64, String, EventState)> {
        f.store
            .read_blocking(|conn| events::events_for_run(conn, &id))
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.event_type, e.state))
            .collect()
    };
    use EventState::*;
    assert_eq!(
        states(&f).iter().map(|s| s.2).collect::<Vec<_>>(),
        [Pending, Held, Held]
    );
    // Only the head is in the due set the supervisor reads.
    let due = f.store.due_events_after_blocking(None, 100).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].body.as_ref(), b"{\"n\":0}");

    // A failed attempt that will be retried keeps the others held.
    let promoted = f
        .store
        .write(attempt(&due[0], AttemptOutcome::Retrying, 60_020))
        .await
        .unwrap();
    assert!(promoted.is_none());
    let mut retried = due[0].clone();
    retried.attempts += 1;
    retried.total_attempts += 1;
    // Delivered: the next one becomes due, in the same write.
    let promoted = f
        .store
        .write(attempt(&retried, AttemptOutcome::Delivered, 60_030))
        .await
        .unwrap()
        .expect("the second event is due now");
    assert_eq!(promoted.body.as_ref(), b"{\"n\":1}");
    assert_eq!(promoted.next_attempt_at, 60_033);
    // Failing for good also lets the next one go.
    let last = f
        .store
        .write(attempt(&promoted, AttemptOutcome::Failed, 60_040))
        .await
        .unwrap()
        .expect("the end is due now");
    assert_eq!(
        states(&f),
        [
            (1, "step.completed".into(), Delivered),
            (2, "step.completed".into(), Failed),
            (3, "workflow.completed".into(), Pending),
        ]
    );
    assert!(f
        .store
        .write(attempt(&last, AttemptOutcome::Delivered, 60_050))
        .await
        .unwrap()
        .is_none());
    // The run's view and a redelivery concern its last event, its end.
    let (event, attempts) = f.store.delivery_of_run(id.clone()).await.unwrap();
    assert_eq!(event.unwrap().event_type, "workflow.completed");
    assert_eq!(attempts.len(), 4);
    assert_eq!(
        attempts[3].event_id, last.event_id,
        "in the order they were made"
    );
    let again = f
        .store
        .write(Redeliver {
            request_id: id.clone(),
            event_id: None,
            at: 60_060,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.event_id, last.event_id);
    assert_eq!(again.series, 2);
    let listed = f
        .store
        .list_runs(RunFilter {
            limit: 10,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "one row per run, however many events");
    assert_eq!(listed[0].delivery_state, Some(Pending));
}
