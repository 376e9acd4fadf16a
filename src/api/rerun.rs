//! `POST /v1/runs/{id}/rerun` (SPEC §10): a new run of an ended one, with the same
//! deployment version, variant, metadata, user and async configuration, that takes over the
//! outputs of the top-level steps before `from_step` (trace status `reused`) and runs the
//! rest. Everything is checked before anything is stored.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::admit::admit_as;
use super::extract::{Authed, OptionalJsonBody};
use super::invoke_body::{parse_async, parse_events};
use super::requests::load_run;
use super::routing::endpoint;
use super::state::AppState;
use crate::actors::recovery::rerun_lines;
use crate::actors::{Mode, PreparedRun, Rerun};
use crate::delivery::lifecycle::EventSet;
use crate::error::ApiError;
use crate::store::{RunRecord, RunSource, RunStatus, StepRow};
use crate::workflow::check_inputs;
use crate::workflow::engine::Resume;
use crate::workflow::reads::first_reader;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/runs/{id}/rerun").post(rerun));
}

/// The body of a rerun; every field may be left out, and so may the body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from_step": "summarize", "inputs": {"tone": "formal"}, "wait": true}))]
pub struct RerunBody {
    /// A top-level step id: the steps before it are taken over, it and the rest run again.
    /// Left out: everything runs again.
    pub from_step: Option<String>,
    /// Inputs merged over the earlier run's (then checked against the deployment's inputs).
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Map<String, Value>>,
    /// `{"enabled": true, "callback_url": "…"}` as for invoke; left out: the earlier run's.
    #[serde(rename = "async")]
    #[schema(value_type = Option<super::params::AsyncOptions>)]
    pub async_config: Option<Value>,
    /// Wait for the new run and answer like a sync invoke (a callback is still delivered).
    #[serde(default)]
    pub wait: bool,
}

/// Reruns an ended run as a new run (`rerun_of` = this id), taking over the outputs of the
/// top-level steps before `from_step`.
#[utoipa::path(post, path = "/v1/runs/{id}/rerun", operation_id = "rerun_run", tag = "runs",
    params(("id" = String, Path, description = "The ended run's `req_…` id")),
    request_body(content = Option<RerunBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "With `wait`: the new run completed", body = super::views::InvokeCompleted),
        (status = 202, description = "The new run was accepted (running or queued)", body = super::views::InvokeAccepted),
        (status = 404, description = "`Run not found.`", body = crate::error::ErrorEnvelope),
        (status = 409, description = "The run has not ended yet, or its deployment version is gone", body = crate::error::ErrorEnvelope),
        (status = 422, description = "A bad `from_step`, `inputs`, `async` or `wait`", body = crate::error::ErrorEnvelope),
        (status = 429, description = "`concurrency_limit` (wait, every slot busy) or `queue_full`", body = crate::error::ErrorEnvelope),
        (status = 502, description = "With `wait`: the new run failed or was cancelled", body = crate::error::RunFailedEnvelope),
        (status = 503, description = "The daemon is stopping, or the database cannot take writes", body = crate::error::ErrorEnvelope),
        super::responses::NeedsKey,
        super::responses::BadBody,
    ))]
async fn rerun(
    state: web::Data<AppState>,
    http: HttpRequest,
    Authed(caller): Authed,
    id: web::Path<String>,
    body: OptionalJsonBody,
) -> Result<HttpResponse, ApiError> {
    let body: RerunBody = match body.0 {
        None => RerunBody::default(),
        Some(value) => parse_body(value)?,
    };
    let (earlier, steps) = load_run(&state, &caller, id.into_inner(), "Run not found.").await?;
    if matches!(earlier.status, RunStatus::Queued | RunStatus::Running) {
        return Err(ApiError::Conflict(format!(
            "The run has not ended yet ({}); rerun it once it has completed, failed or been cancelled.",
            earlier.status.as_str()
        )));
    }
    let source = super::invoke::invoke_source(&http);
    let wait = body.wait;
    let from_step = body.from_step.clone();
    let (run, rerun) = plan(
        &state,
        &earlier,
        &steps,
        body,
        source,
        caller.key_id.clone(),
    )?;
    let mode = if wait {
        if run.deployment.definition.requires_async() {
            return Err(ApiError::field(
                "wait",
                "This workflow runs only asynchronously (it is async_only or has an approval step); leave out \"wait\".",
            ));
        }
        Mode::Sync
    } else {
        Mode::Async
    };
    tracing::info!(rerun_of = %earlier.request_id, from_step = ?from_step, reused = rerun.reused.len(), "rerun requested");
    Ok(admit_as(&state, run, mode, Some(rerun))
        .await?
        .into_response())
}

fn parse_body(value: Value) -> Result<RerunBody, ApiError> {
    if !value.is_object() {
        return Err(ApiError::field(
            "body",
            "The body must be a JSON object like {\"from_step\": \"…\", \"inputs\": {…}}.",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { "body".into() } else { field };
        ApiError::field(field, format!("{}", e.inner()))
    })
}

/// Checks the rerun against the earlier run and its deployment version, and prepares the
/// new run with what it takes over.
fn plan(
    state: &AppState,
    earlier: &RunRecord,
    steps: &[StepRow],
    body: RerunBody,
    source: RunSource,
    api_key_id: String,
) -> Result<(PreparedRun, Rerun), ApiError> {
    let RerunBody {
        from_step,
        inputs: new_inputs,
        async_config,
        wait: _,
    } = body;
    // A short read of an older version's definition, only when it is not the live one.
    let deployment = state
        .deployments
        .at_version(&state.store, &earlier.deployment_key, earlier.version)
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "Version {} of deployment {} is gone (the deployment was deleted), so this run cannot be rerun.",
                earlier.version, earlier.deployment_key
            ))
        })?;
    if deployment.vars(&earlier.variant).is_none() {
        return Err(ApiError::Conflict(format!(
            "Variant {} no longer exists in deployment {}, so this run cannot be rerun.",
            earlier.variant, earlier.deployment_key
        )));
    }
    let def = &deployment.definition;
    let from = match from_step.as_deref() {
        None => 0,
        Some(id) => match def.steps.iter().position(|s| s.id == id) {
            Some(position) => position,
            None if def.walk().iter().any(|w| w.step.id == id) => {
                return Err(ApiError::field(
                    "from_step",
                    format!("from_step {id:?} is nested inside a branch or loop; from_step must be a top-level step (the one that contains it, or an earlier one)."),
                ))
            }
            None => {
                return Err(ApiError::field(
                    "from_step",
                    format!("from_step {id:?} is not a step of this workflow."),
                ))
            }
        },
    };

    let old_inputs = as_map(&earlier.inputs_json);
    let inputs = match new_inputs {
        None => old_inputs.clone(),
        Some(new) => {
            let mut merged = old_inputs.clone();
            merged.extend(new);
            let checked =
                check_inputs(def, &merged).map_err(|e| ApiError::field(e.field, e.message))?;
            let changed: Vec<&str> = checked
                .iter()
                .filter(|(k, v)| old_inputs.get(*k) != Some(*v))
                .map(|(k, _)| k.as_str())
                .chain(
                    old_inputs
                        .keys()
                        .filter(|k| !checked.contains_key(*k))
                        .map(String::as_str),
                )
                .collect();
            if let Some(reader) = first_reader(def, &changed) {
                if from > reader {
                    return Err(ApiError::field(
                        "inputs",
                        format!(
                            "Step {} reads the changed inputs ({}) but would be taken over from the earlier run; rerun from step {} or earlier.",
                            def.steps[reader].id,
                            changed.join(", "),
                            def.steps[reader].id
                        ),
                    ));
                }
            }
            checked
        }
    };

    let (reused, resume) = if from == 0 {
        (Vec::new(), Resume::default())
    } else {
        rerun_lines(def, steps, from).map_err(|step| {
            ApiError::field(
                "from_step",
                format!("Step {step} did not finish in run {}, so it cannot be taken over; rerun from step {step} or earlier.", earlier.request_id),
            )
        })?
    };

    // A new `async` object brings its own `events` (the default when it has none).
    let (callback_url, events) = match async_config {
        Some(value) => (parse_async(Some(&value))?, parse_events(Some(&value))?),
        None => (
            earlier.callback_url.clone(),
            EventSet::from_stored(earlier.events_json.as_deref()),
        ),
    };
    if callback_url.is_none() && def.requires_async() {
        return Err(ApiError::field(
            "async",
            "This workflow must run asynchronously (it is async_only or has an approval step): keep the callback, or send \"async\": {\"enabled\": true, \"callback_url\": \"…\"}",
        ));
    }
    let metadata = as_map(&earlier.metadata_json);
    let concurrency_key = crate::flow::concurrency_key(
        &deployment.definition,
        &inputs,
        &metadata,
        earlier.user.as_deref(),
        deployment.vars(&earlier.variant),
    )
    .map_err(|message| ApiError::field("concurrency.key", message))?;
    Ok((
        PreparedRun {
            deployment,
            variant: earlier.variant.clone(),
            inputs,
            metadata,
            user: earlier.user.clone(),
            callback_url,
            events,
            source,
            api_key_id: Some(api_key_id),
            // A rerun stands on its own, even when the earlier run was a child.
            parent_request_id: None,
            priority: earlier.priority,
            concurrency_key,
        },
        Rerun {
            of: earlier.request_id.clone(),
            reused,
            resume,
        },
    ))
}

fn as_map(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}
