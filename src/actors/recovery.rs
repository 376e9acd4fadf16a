//! Recovery at start: what a previous process left unfinished. Runs found `queued` go back
//! to the queue; a run found `running` continues after its last finished step, rebuilt from
//! its stored trace and approval answers (`trace_point`), or waits again at its approval
//! step. The step a stopped process was in the middle of is marked `interrupted`.
//!
//! It runs once, before the InvokeActor starts, which takes the result (`Recovered`).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::approvals::PausedRun;
use super::lifecycle::{AdmittedRun, PreparedRun, Waiting};
use crate::ids;
use crate::store::{FinishRun, RecordStep, RunStatus, StepRow, Store};
use crate::workflow::engine::{Approval, ApprovalAnswer, ChildLink, DoneStep, Resume, StepStatus};
use crate::workflow::{Definition, OnError, StepDef, StepKind};

/// What a previous process left unfinished, found at start.
pub struct Recovered {
    /// Runs to queue again, oldest first.
    pub runs: Vec<AdmittedRun>,
    /// Runs waiting at an approval step without an answer.
    pub paused: Vec<PausedRun>,
}

/// Marks the step a stopped process was in the middle of as `interrupted`, so the trace shows
/// the cut-off attempt beside the re-run's. The step is the first top-level one that had not
/// ended (`open`, its position); a run stopped between steps (or waiting on an approval) has
/// none. A `branch` or `loop` cut off mid-way is marked as a whole; its nested steps that
/// had ended stay in the trace and are taken over.
fn record_interrupted_step(
    store: &Store,
    def: &Definition,
    run: &crate::store::RunRecord,
    rows: &[StepRow],
    open: Option<usize>,
) {
    let Some((step, index)) = open.and_then(|p| Some((def.steps.get(p)?, top_index(def, p)?)))
    else {
        return;
    };
    if matches!(step.kind, StepKind::Approval { .. }) {
        return;
    }
    let index = index as i64;
    // A `workflow` step whose child was stored was not cut off: it waits for that child
    // again (the child resumes too), and its end line replaces the `waiting` one.
    if matches!(step.kind, StepKind::Workflow { .. })
        && rows.iter().any(|r| {
            r.step_index == index
                && r.passes.is_empty()
                && r.status == StepStatus::Waiting
                && r.child_request_id.is_some()
        })
    {
        return;
    }
    // A prompt step cut off while it waited for provider capacity: its `waiting` line
    // becomes the interrupted one (same key), so no line stays `waiting` for good.
    let capacity_wait = rows.iter().find(|r| {
        r.step_index == index
            && r.passes.is_empty()
            && r.status == StepStatus::Waiting
            && r.reason.as_deref() == Some("provider_capacity")
    });
    let started_at = match capacity_wait {
        Some(row) => row.started_at,
        None => {
            // It started when the step before it ended (or when the run started).
            let started_at = rows
                .iter()
                .filter(|r| r.step_index < index)
                .map(|r| r.started_at + r.duration_ms)
                .max()
                .or(run.started_at)
                .unwrap_or(run.created_at);
            if rows
                .iter()
                .any(|r| r.step_index == index && r.passes.is_empty() && r.started_at == started_at)
            {
                return; // already marked by an earlier restart
            }
            started_at
        }
    };
    store.write_detached(RecordStep(StepRow {
        request_id: run.request_id.clone(),
        step_index: index,
        step_id: step.id.clone(),
        step_type: step.kind.type_name().to_string(),
        status: StepStatus::Interrupted,
        started_at,
        duration_ms: 0,
        output_json: None,
        error: Some("interrupted: hivelet stopped while this step ran; the run was resumed at the next start".into()),
        attempts: 1,
        usage_json: None,
        parent: None,
        passes: String::new(),
        reason: None,
        child_request_id: None,
    }));
}

/// Nested prompt steps cut off while they waited for provider capacity: their `waiting`
/// lines become `interrupted` (same key), as the top-level one does in
/// [`record_interrupted_step`]; the steps run again in their pass.
fn interrupt_nested_capacity_waits(store: &Store, rows: &[StepRow]) {
    for row in rows.iter().filter(|r| {
        r.parent.is_some()
            && r.status == StepStatus::Waiting
            && r.reason.as_deref() == Some("provider_capacity")
    }) {
        store.write_detached(RecordStep(StepRow {
            status: StepStatus::Interrupted,
            error: Some("interrupted: hivelet stopped while this step waited for provider capacity; the run was resumed at the next start".into()),
            reason: None,
            ..row.clone()
        }));
    }
}

/// The `step_index` (depth first) of the top-level step at `position`.
fn top_index(def: &Definition, position: usize) -> Option<usize> {
    def.walk()
        .iter()
        .position(|w| w.parent.is_none() && w.top == position)
}

/// Rebuilds the runs a previous process left `queued` or `running`, oldest first, each with
/// the deployment version it was admitted with. Their earlier step records stay in the trace.
/// A run that was `running` continues after its last finished step (see [`trace_point`]);
/// one waiting at an approval step without an answer waits again.
pub fn recover(
    store: &Store,
    deployments: &crate::deployments::Deployments,
) -> Result<Recovered, crate::store::StoreError> {
    use crate::store::FinishedRun;
    let unfinished = store.unfinished_runs_blocking()?;
    let mut recovered = Recovered {
        runs: Vec::with_capacity(unfinished.len()),
        paused: Vec::new(),
    };
    for run in unfinished {
        let Some(deployment) = deployments.at_version(store, &run.deployment_key, run.version)
        else {
            tracing::error!(request_id = %run.request_id, deployment = %run.deployment_key, "cannot resume: the deployment version is gone");
            let error = serde_json::json!({"message": "The deployment was deleted before the run could resume.", "error_code": "deployment_deleted", "step": null});
            store.write_detached(FinishRun(FinishedRun {
                request_id: run.request_id,
                status: RunStatus::Failed,
                output_json: None,
                error_json: Some(error.to_string()),
                ended_at: ids::now_ms(),
                usage_json: run.usage_json.clone(),
                event: None,
            }));
            continue;
        };
        let as_map = |text: &str| match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        // A queued run has no trace unless it is a rerun, whose `reused` lines were stored
        // with it: those are taken over like finished steps.
        let trace = store.trace_blocking(&run.request_id)?;
        let (rows, answers) = (trace.steps, trace.approvals);
        let usage = crate::usage::sum_stored(
            rows.iter()
                .filter(|r| r.status != StepStatus::Reused)
                .filter_map(|r| r.usage_json.as_deref()),
        );
        let point = if run.status == RunStatus::Running || !rows.is_empty() {
            let point = trace_point(&deployment.definition, &rows, &answers);
            if point.waiting.is_none() && run.status == RunStatus::Running {
                record_interrupted_step(store, &deployment.definition, &run, &rows, point.open);
                interrupt_nested_capacity_waits(store, &rows);
            }
            Some(point)
        } else {
            None
        };
        let (mut resume, waiting) = match point {
            Some(p) => (Some(p.resume), p.waiting),
            None => (None, None),
        };
        // A queued rerun never started: what it takes over is not a resume.
        let takeover = if run.status == RunStatus::Queued {
            resume.take()
        } else {
            None
        };
        let admitted = AdmittedRun {
            request_id: run.request_id,
            prepared: PreparedRun {
                deployment,
                variant: run.variant,
                inputs: as_map(&run.inputs_json),
                metadata: as_map(&run.metadata_json),
                user: run.user,
                callback_url: run.callback_url,
                events: crate::delivery::lifecycle::EventSet::from_stored(
                    run.events_json.as_deref(),
                ),
                source: run.source,
                api_key_id: run.api_key_id,
                parent_request_id: run.parent_request_id,
                priority: run.priority,
                concurrency_key: run.concurrency_key,
            },
            completion: None,
            started_at: run.started_at.unwrap_or(run.created_at),
            resume,
            takeover,
            usage,
        };
        match waiting {
            Some(waiting) => recovered.paused.push(PausedRun::new(admitted, waiting)),
            None => recovered.runs.push(admitted),
        }
    }
    Ok(recovered)
}

/// What a rerun from the top-level step at position `from` takes over from the earlier run's
/// trace (`rows`): the latest line of every step before it (nested ones included) that had
/// ended, marked `reused` with how it had ended in `reason`, and the [`Resume`] they make.
/// The lines still carry the earlier run's request id. `Err` names the first of those
/// top-level steps that had not ended (the earlier run failed or was cancelled there).
pub fn rerun_lines(
    def: &Definition,
    rows: &[StepRow],
    from: usize,
) -> Result<(Vec<StepRow>, Resume), String> {
    let walk = def.walk();
    let mut latest: HashMap<(i64, &str), &StepRow> = HashMap::new();
    for row in rows {
        let Some(walked) = usize::try_from(row.step_index)
            .ok()
            .and_then(|i| walk.get(i))
        else {
            continue;
        };
        if walked.top >= from || walked.step.id != row.step_id {
            continue;
        }
        let key = (row.step_index, row.passes.as_str());
        match latest.get(&key) {
            Some(seen) if seen.started_at > row.started_at => {}
            _ => {
                latest.insert(key, row);
            }
        }
    }
    for (index, walked) in walk.iter().enumerate() {
        if walked.parent.is_some() || walked.top >= from {
            continue;
        }
        let ended = latest
            .get(&(index as i64, ""))
            .and_then(|row| ended_status(walked.step, row));
        if ended.is_none() {
            return Err(walked.step.id.clone());
        }
    }
    let mut lines: Vec<StepRow> = latest
        .values()
        .filter_map(|row| {
            let step = walk[row.step_index as usize].step;
            let ended = ended_status(step, row)?;
            Some(StepRow {
                status: StepStatus::Reused,
                reason: Some(ended.as_str().to_owned()),
                ..(*row).clone()
            })
        })
        .collect();
    lines.sort_by(|a, b| (a.step_index, &a.passes).cmp(&(b.step_index, &b.passes)));
    let resume = trace_point(def, &lines, &[]).resume;
    Ok((lines, resume))
}

/// A run's place in its workflow, rebuilt from its stored trace and approval answers.
#[derive(Debug, Clone, PartialEq)]
struct TracePoint {
    /// What to continue from.
    pub resume: Resume,
    /// Set when the run waits at an approval step that has no answer yet.
    pub waiting: Option<Waiting>,
    /// The position of the first top-level step that had not ended (none when the run
    /// waits, or every step ended).
    pub open: Option<usize>,
}

/// Whether a trace line says its step ended in a way a resumed run takes over: completed,
/// skipped, or failed with `on_error = "continue"`.
fn ended_status(step: &StepDef, row: &StepRow) -> Option<StepStatus> {
    match row.status {
        StepStatus::Completed => Some(StepStatus::Completed),
        StepStatus::Skipped => Some(StepStatus::Skipped),
        StepStatus::Failed if step.on_error == OnError::Continue => Some(StepStatus::Failed),
        // A rerun's copy of an earlier run's line keeps how that step ended in `reason`.
        StepStatus::Reused => row
            .reason
            .as_deref()
            .and_then(StepStatus::parse)
            .filter(|s| *s != StepStatus::Reused)
            .or(Some(StepStatus::Completed)),
        _ => None,
    }
}

/// Rebuilds where a run stands from its trace (`rows`, as `store::runs::get_steps` reads
/// them) and its approval answers (step id, output JSON).
///
/// The top-level steps that ended (see [`ended_status`]) up to the first that did not are
/// done; a `waiting` approval step after them is answered (an answer is stored) or still
/// waiting. When the first step that had not ended is a `branch` or `loop`, the nested steps
/// inside it that ended are done too (by loop pass), so the run continues inside it: at the
/// first unfinished pass, in the case it took. Anything else (a step cut off by a crash, a
/// lost trace line) runs again.
fn trace_point(def: &Definition, rows: &[StepRow], answers: &[(String, String)]) -> TracePoint {
    // The latest line of each step and pass: a step that ran again after a restart has
    // several.
    let mut latest: HashMap<(i64, &str), &StepRow> = HashMap::new();
    for row in rows {
        let key = (row.step_index, row.passes.as_str());
        match latest.get(&key) {
            Some(seen) if seen.started_at > row.started_at => {}
            _ => {
                latest.insert(key, row);
            }
        }
    }
    let answers: HashMap<&str, &str> = answers
        .iter()
        .map(|(step, response)| (step.as_str(), response.as_str()))
        .collect();
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null)
    };
    let done = |step: &StepDef, row: &StepRow, status| DoneStep {
        step_id: step.id.clone(),
        passes: row.passes.clone(),
        status,
        output: parse(&row.output_json),
        error: row.error.clone(),
    };
    let mut point = TracePoint {
        resume: Resume::default(),
        waiting: None,
        open: None,
    };
    let walk = def.walk();
    for (index, walked) in walk.iter().enumerate() {
        if walked.parent.is_some() {
            continue;
        }
        let step = walked.step;
        let row = latest
            .get(&(index as i64, ""))
            .filter(|r| r.step_id == step.id);
        if let Some(status) = row.and_then(|r| ended_status(step, r)) {
            point
                .resume
                .done
                .push(done(step, row.expect("ended"), status));
            continue;
        }
        match row {
            Some(row)
                if row.status == StepStatus::Waiting
                    && matches!(step.kind, StepKind::Approval { .. }) =>
            {
                match answers.get(step.id.as_str()) {
                    Some(response) => {
                        let output = serde_json::from_str(response).unwrap_or(Value::Null);
                        point.resume.approvals.insert(
                            step.id.clone(),
                            Approval {
                                waiting_since_ms: row.started_at,
                                answer: ApprovalAnswer::Given(output),
                            },
                        );
                    }
                    None => {
                        let timeout_ms = match step.kind {
                            StepKind::Approval { timeout_ms, .. } => timeout_ms,
                            _ => None,
                        };
                        point.waiting = Some(Waiting {
                            step_id: step.id.clone(),
                            step_index: index,
                            since_ms: row.started_at,
                            timeout_at_ms: timeout_ms.map(|ms| {
                                row.started_at
                                    .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
                            }),
                        });
                    }
                }
            }
            _ => point.open = Some(walked.top),
        }
        break;
    }
    // Inside the first unfinished top-level step (or that step itself): the children that
    // `workflow` steps had stored and not seen end; those steps wait for them again.
    if let Some(open) = point.open {
        for (index, walked) in walk.iter().enumerate() {
            if walked.top != open || !matches!(walked.step.kind, StepKind::Workflow { .. }) {
                continue;
            }
            for ((at, passes), row) in &latest {
                if *at != index as i64 || row.step_id != walked.step.id {
                    continue;
                }
                if let (StepStatus::Waiting, Some(child)) = (row.status, &row.child_request_id) {
                    point.resume.children.insert(
                        (row.step_id.clone(), (*passes).to_owned()),
                        ChildLink {
                            request_id: child.clone(),
                            since_ms: row.started_at,
                        },
                    );
                }
            }
        }
    }
    // Inside the first unfinished top-level step: the nested steps that ended, by pass.
    if let Some(open) = point.open {
        let mut nested: Vec<(usize, &StepRow, &StepDef)> = Vec::new();
        for (index, walked) in walk.iter().enumerate() {
            if walked.top != open || walked.parent.is_none() {
                continue;
            }
            for ((at, _), row) in &latest {
                if *at == index as i64 && row.step_id == walked.step.id {
                    nested.push((index, row, walked.step));
                }
            }
        }
        nested.sort_by(|a, b| (a.0, &a.1.passes).cmp(&(b.0, &b.1.passes)));
        for (_, row, step) in nested {
            if let Some(status) = ended_status(step, row) {
                point.resume.done.push(done(step, row, status));
            }
        }
    }
    point
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DEF: &str = r#"
key = "t"
[[steps]]
id = "a"
type = "template"
template = "x"
[[steps]]
id = "b"
type = "template"
template = "x"
on_error = "continue"
[[steps]]
id = "c"
type = "template"
template = "x"
when = "false"
[[steps]]
id = "ok"
type = "approval"
timeout_ms = 1000
[[steps]]
id = "d"
type = "template"
template = "x"
"#;

    fn def() -> Definition {
        let mut def = Definition::from_toml_str(DEF).unwrap();
        def.validate(&crate::workflow::ValidateOptions {
            allow_command_steps: false,
            providers: &[],
        })
        .unwrap();
        def
    }

    fn row(
        index: i64,
        id: &str,
        status: StepStatus,
        started_at: i64,
        output: Option<&str>,
    ) -> StepRow {
        StepRow {
            request_id: "req_1".into(),
            step_index: index,
            step_id: id.into(),
            step_type: "template".into(),
            status,
            started_at,
            duration_ms: 1,
            output_json: output.map(str::to_owned),
            error: (status == StepStatus::Failed).then(|| "boom".to_owned()),
            attempts: 1,
            usage_json: None,
            parent: None,
            passes: String::new(),
            reason: None,
            child_request_id: None,
        }
    }

    fn trace() -> Vec<StepRow> {
        vec![
            row(0, "a", StepStatus::Failed, 10, None),
            row(0, "a", StepStatus::Completed, 20, Some("\"A\"")),
            row(1, "b", StepStatus::Failed, 30, None),
            row(2, "c", StepStatus::Skipped, 40, None),
            row(
                3,
                "ok",
                StepStatus::Waiting,
                50,
                Some("{\"question\": null}"),
            ),
        ]
    }

    #[test]
    fn done_steps_then_waiting_approval() {
        let point = trace_point(&def(), &trace(), &[]);
        let done: Vec<_> = point
            .resume
            .done
            .iter()
            .map(|d| (d.step_id.as_str(), d.status, d.output.clone()))
            .collect();
        assert_eq!(
            done,
            [
                ("a", StepStatus::Completed, json!("A")),
                ("b", StepStatus::Failed, Value::Null),
                ("c", StepStatus::Skipped, Value::Null),
            ]
        );
        assert_eq!(point.resume.done[1].error.as_deref(), Some("boom"));
        assert!(point.resume.approvals.is_empty());
        assert_eq!(
            point.waiting,
            Some(Waiting {
                step_id: "ok".into(),
                step_index: 3,
                since_ms: 50,
                timeout_at_ms: Some(1050),
            })
        );
    }

    #[test]
    fn answered_approval_and_interrupted_steps() {
        let answers = vec![("ok".to_owned(), "{\"text\": \"fine\"}".to_owned())];
        let point = trace_point(&def(), &trace(), &answers);
        assert_eq!(point.waiting, None);
        assert_eq!(point.resume.done.len(), 3);
        assert_eq!(
            point.resume.approvals["ok"],
            Approval {
                waiting_since_ms: 50,
                answer: ApprovalAnswer::Given(json!({"text": "fine"})),
            }
        );

        // A failed step that terminates the run runs again; nothing after it is reused.
        let mut rows = trace();
        rows[1] = row(0, "a", StepStatus::Failed, 20, None);
        let point = trace_point(&def(), &rows, &answers);
        assert!(
            point.resume.is_empty() && point.waiting.is_none(),
            "{point:?}"
        );

        // A trace line lost in a crash ends the reuse there.
        let rows: Vec<_> = trace().into_iter().filter(|r| r.step_id != "b").collect();
        let point = trace_point(&def(), &rows, &answers);
        assert_eq!(point.resume.done.len(), 1);
        assert!(point.resume.approvals.is_empty() && point.waiting.is_none());
    }

    #[test]
    fn a_rerun_takes_over_the_latest_ended_line_of_each_step_before_it() {
        // `a` failed once then completed, `b` failed with on_error = "continue", `c` skipped.
        let (lines, resume) = rerun_lines(&def(), &trace(), 3).unwrap();
        let taken: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.step_id.as_str(),
                    l.status,
                    l.reason.as_deref(),
                    l.started_at,
                )
            })
            .collect();
        assert_eq!(
            taken,
            [
                ("a", StepStatus::Reused, Some("completed"), 20),
                ("b", StepStatus::Reused, Some("failed"), 30),
                ("c", StepStatus::Reused, Some("skipped"), 40),
            ]
        );
        let done: Vec<_> = resume
            .done
            .iter()
            .map(|d| (d.step_id.as_str(), d.status, d.output.clone()))
            .collect();
        assert_eq!(
            done,
            [
                ("a", StepStatus::Completed, json!("A")),
                ("b", StepStatus::Failed, Value::Null),
                ("c", StepStatus::Skipped, Value::Null),
            ]
        );
        // Reused lines read back after a crash resume the same way.
        assert_eq!(trace_point(&def(), &lines, &[]).resume, resume);
        assert_eq!(trace_point(&def(), &lines, &[]).open, Some(3));

        // From the start nothing is taken over; past a step that never ended, nothing can be.
        assert!(rerun_lines(&def(), &trace(), 0).unwrap().0.is_empty());
        let rows: Vec<_> = trace().into_iter().filter(|r| r.step_id != "b").collect();
        assert_eq!(rerun_lines(&def(), &rows, 3).unwrap_err(), "b");
        // `ok` only waited: a rerun after it cannot take it over.
        assert_eq!(rerun_lines(&def(), &trace(), 4).unwrap_err(), "ok");
    }

    #[test]
    fn a_loop_cut_off_mid_way_resumes_with_its_finished_passes() {
        let mut def = Definition::from_toml_str(
            "key = \"l\"\n[[steps]]\nid = \"a\"\ntype = \"template\"\ntemplate = \"x\"\n[[steps]]\nid = \"each\"\ntype = \"loop\"\nfor_each = \"[1, 2, 3]\"\n[[steps.steps]]\nid = \"p\"\ntype = \"template\"\ntemplate = \"x\"\n[[steps.steps]]\nid = \"q\"\ntype = \"template\"\ntemplate = \"x\"\n[[steps]]\nid = \"z\"\ntype = \"template\"\ntemplate = \"x\"\n",
        )
        .unwrap();
        def.validate(&crate::workflow::ValidateOptions {
            allow_command_steps: false,
            providers: &[],
        })
        .unwrap();
        let nested = |index, id: &str, passes: &str, status, at, output| StepRow {
            parent: Some("each".into()),
            passes: passes.into(),
            ..row(index, id, status, at, output)
        };
        let rows = vec![
            row(0, "a", StepStatus::Completed, 10, Some("\"A\"")),
            nested(2, "p", "0", StepStatus::Completed, 20, Some("\"p0\"")),
            nested(2, "p", "1", StepStatus::Completed, 30, Some("\"p1\"")),
            nested(2, "p", "2", StepStatus::Completed, 40, Some("\"p2\"")),
            nested(3, "q", "0", StepStatus::Completed, 21, Some("\"q0\"")),
            nested(3, "q", "1", StepStatus::Failed, 31, None),
            nested(3, "q", "1", StepStatus::Completed, 32, Some("\"q1\"")),
        ];
        let point = trace_point(&def, &rows, &[]);
        assert_eq!(point.open, Some(1));
        assert_eq!(point.waiting, None);
        let done: Vec<_> = point
            .resume
            .done
            .iter()
            .map(|d| (d.step_id.as_str(), d.passes.as_str(), d.output.clone()))
            .collect();
        assert_eq!(
            done,
            [
                ("a", "", json!("A")),
                ("p", "0", json!("p0")),
                ("p", "1", json!("p1")),
                ("p", "2", json!("p2")),
                ("q", "0", json!("q0")),
                ("q", "1", json!("q1")),
            ]
        );
        assert_eq!(top_index(&def, 2), Some(4));
    }

    #[test]
    fn a_workflow_step_waiting_on_its_child_re_attaches() {
        let mut def = Definition::from_toml_str(
            "key = \"w\"\n[[steps]]\nid = \"a\"\ntype = \"template\"\ntemplate = \"x\"\n[[steps]]\nid = \"each\"\ntype = \"loop\"\nfor_each = \"[1, 2]\"\n[[steps.steps]]\nid = \"sub\"\ntype = \"workflow\"\ndeployment = \"other\"\n",
        )
        .unwrap();
        def.validate(&crate::workflow::ValidateOptions {
            allow_command_steps: false,
            providers: &[],
        })
        .unwrap();
        let sub = |passes: &str, status, at, child: &str| StepRow {
            parent: Some("each".into()),
            passes: passes.into(),
            step_type: "workflow".into(),
            reason: (status == StepStatus::Waiting).then(|| "child_run".to_owned()),
            child_request_id: Some(child.into()),
            ..row(2, "sub", status, at, Some("\"out\""))
        };
        let rows = vec![
            row(0, "a", StepStatus::Completed, 10, Some("\"A\"")),
            sub("0", StepStatus::Completed, 20, "req_c0"),
            sub("1", StepStatus::Waiting, 30, "req_c1"),
        ];
        let point = trace_point(&def, &rows, &[]);
        assert_eq!(point.open, Some(1));
        assert_eq!(point.waiting, None, "a child run is not an approval");
        assert_eq!(
            point.resume.children,
            HashMap::from([(
                ("sub".to_owned(), "1".to_owned()),
                ChildLink {
                    request_id: "req_c1".into(),
                    since_ms: 30,
                }
            )]),
            "only the pass whose child had not ended"
        );
        let done: Vec<_> = point
            .resume
            .done
            .iter()
            .map(|d| (d.step_id.as_str(), d.passes.as_str()))
            .collect();
        assert_eq!(done, [("a", ""), ("sub", "0")]);
    }
}
