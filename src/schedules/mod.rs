//! Schedules (SPEC §12): runs started on a timetable. `timing` is the pure timetable
//! arithmetic; this module checks a schedule's fields (from the API or a workflow file's
//! `[[schedules]]`) and turns a stored schedule into the run it starts. The store keeps the
//! schedules and their next fire; the scheduler actor (`actors/scheduler.rs`) fires them.

pub mod timing;

use serde_json::{Map, Value};

use crate::actors::PreparedRun;
use crate::api::invoke_body::{is_valid_callback_url, parse_metadata};
use crate::deployments::Deployments;
use crate::error::ApiError;
use crate::store::{DeleteSchedule, InsertSchedule, Store, StoreError, UpdateSchedule};
use crate::store::{RunSource, ScheduleRecord};
use crate::workflow::definition::{Definition, DefinitionError};
use crate::workflow::inputs::check_inputs;
use timing::{CatchUp, Timetable, Timing};

/// The fields a schedule body may have (`name` only in workflow files).
pub const FIELDS: &[&str] = &[
    "deployment",
    "variant",
    "inputs",
    "metadata",
    "user",
    "cron",
    "every",
    "timezone",
    "callback_url",
    "active",
    "catch_up",
];

/// A checked schedule, not yet stored.
#[derive(Debug, Clone)]
pub struct Draft {
    pub deployment: String,
    pub variant: String,
    pub inputs: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
    pub cron: Option<String>,
    pub every: Option<String>,
    pub timezone: String,
    pub callback_url: Option<String>,
    pub active: bool,
    pub catch_up: CatchUp,
}

fn optional_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(ApiError::field(field, format!("{field} must be a string"))),
    }
}

/// Checks a whole schedule body (a PATCH is merged onto the stored schedule first), against
/// the live deployments; every error names its field, and nothing is stored on error.
pub fn check(body: &Value, deployments: &Deployments) -> Result<Draft, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("Request body must be a JSON object.".into()))?;
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::field(
            unknown.clone(),
            format!(
                "unknown field {unknown:?}; a schedule has {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let deployment = optional_string(obj, "deployment")?
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::field("deployment", "deployment is required"))?;
    let live = deployments
        .get(&deployment)
        .ok_or_else(|| ApiError::field("deployment", "Deployment not found."))?;
    check_fields(obj, deployment, &live.definition)
}

/// Checks a schedule's fields (all but `deployment`, which is given) against the
/// deployment's definition.
fn check_fields(
    obj: &Map<String, Value>,
    deployment: String,
    definition: &Definition,
) -> Result<Draft, ApiError> {
    let variant = optional_string(obj, "variant")?.unwrap_or_else(|| "default".into());
    if !definition.variants.contains_key(&variant) {
        return Err(ApiError::field("variant", "Variant not found."));
    }
    let inputs = match obj.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(ApiError::field("inputs", "inputs must be an object")),
    };
    let inputs =
        check_inputs(definition, &inputs).map_err(|e| ApiError::field(e.field, e.message))?;
    let metadata = parse_metadata(obj.get("metadata"))?;
    let user = optional_string(obj, "user")?;
    let cron = optional_string(obj, "cron")?;
    let every = optional_string(obj, "every")?;
    match (&cron, &every) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "cron",
                "give either cron or every, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::field(
                "cron",
                "a schedule needs cron (\"0 9 * * MON-FRI\") or every (\"15m\")",
            ))
        }
        (Some(c), None) => {
            timing::parse_cron(c).map_err(|e| ApiError::field("cron", e))?;
        }
        (None, Some(e)) => {
            timing::parse_every(e).map_err(|m| ApiError::field("every", m))?;
        }
    }
    let timezone = optional_string(obj, "timezone")?.unwrap_or_else(timing::system_timezone);
    let tz = timing::parse_timezone(&timezone).map_err(|e| ApiError::field("timezone", e))?;
    if let Some(expr) = &cron {
        let table = Timetable {
            timing: Timing::Cron(Box::new(
                timing::parse_cron(expr).map_err(|e| ApiError::field("cron", e))?,
            )),
            tz,
            anchor_ms: 0,
        };
        if table.next_after(crate::ids::now_ms()).is_none() {
            return Err(ApiError::field(
                "cron",
                format!("cron {expr:?} never matches a date (such as 30 February)"),
            ));
        }
    }
    let callback_url = optional_string(obj, "callback_url")?
        .map(|u| u.trim_matches(crate::api::params::BLANK).to_string())
        .filter(|u| !u.is_empty());
    if callback_url
        .as_deref()
        .is_some_and(|u| !is_valid_callback_url(u))
    {
        return Err(ApiError::field(
            "callback_url",
            "callback_url must be a valid URL",
        ));
    }
    let active = match obj.get("active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("active", "active must be true or false")),
    };
    let catch_up = match obj.get("catch_up") {
        None | Some(Value::Null) => CatchUp::Once,
        Some(Value::String(s)) => CatchUp::parse(s).ok_or_else(|| {
            ApiError::field("catch_up", "catch_up must be \"skip\", \"once\" or \"all\"")
        })?,
        Some(_) => {
            return Err(ApiError::field(
                "catch_up",
                "catch_up must be \"skip\", \"once\" or \"all\"",
            ))
        }
    };
    Ok(Draft {
        deployment,
        variant,
        inputs,
        metadata,
        user,
        cron,
        every,
        timezone,
        callback_url,
        active,
        catch_up,
    })
}

/// A stored schedule's fields as a body, for merging a PATCH onto it.
pub fn as_body(s: &ScheduleRecord) -> Map<String, Value> {
    let mut obj = Map::new();
    let json = |text: &str| serde_json::from_str(text).unwrap_or(Value::Object(Map::new()));
    obj.insert("deployment".into(), s.deployment_key.clone().into());
    obj.insert("variant".into(), s.variant.clone().into());
    obj.insert("inputs".into(), json(&s.inputs_json));
    obj.insert("metadata".into(), json(&s.metadata_json));
    obj.insert("user".into(), s.user.clone().into());
    obj.insert("cron".into(), s.cron.clone().into());
    obj.insert("every".into(), s.every.clone().into());
    obj.insert("timezone".into(), s.timezone.clone().into());
    obj.insert("callback_url".into(), s.callback_url.clone().into());
    obj.insert("active".into(), s.active.into());
    obj.insert("catch_up".into(), s.catch_up.clone().into());
    obj
}

/// Merges a PATCH body onto a stored schedule: the fields it names replace the stored ones;
/// `cron` and `every` replace each other.
pub fn merge_patch(stored: &ScheduleRecord, patch: &Value) -> Result<Value, ApiError> {
    let patch = patch
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("Request body must be a JSON object.".into()))?;
    let mut body = as_body(stored);
    if patch.get("cron").is_some_and(|v| !v.is_null()) {
        body.insert("every".into(), Value::Null);
    }
    if patch.get("every").is_some_and(|v| !v.is_null()) {
        body.insert("cron".into(), Value::Null);
    }
    for (k, v) in patch {
        body.insert(k.clone(), v.clone());
    }
    Ok(Value::Object(body))
}

/// A schedule's timetable, from its stored fields.
pub fn timetable(s: &ScheduleRecord) -> Result<Timetable, String> {
    let timing = match (&s.cron, &s.every) {
        (Some(c), _) => Timing::Cron(Box::new(timing::parse_cron(c)?)),
        (None, Some(e)) => Timing::Every(timing::parse_every(e)?),
        (None, None) => return Err("neither cron nor every".into()),
    };
    Ok(Timetable {
        timing,
        tz: timing::parse_timezone(&s.timezone)?,
        anchor_ms: s.created_at,
    })
}

impl Draft {
    /// The schedule to store: a new one (`stored` is `None`) or an edit of `stored`. Its
    /// next fire is computed from `now_ms` when it is new, its timetable changed, or it was
    /// paused or resumed; `None` while paused. Answers whether the next fire was reset.
    pub fn record(
        self,
        stored: Option<&ScheduleRecord>,
        name: Option<String>,
        now_ms: i64,
    ) -> (ScheduleRecord, bool) {
        let mut record = ScheduleRecord {
            schedule_id: stored.map_or_else(crate::ids::schedule_id, |s| s.schedule_id.clone()),
            name: stored.map_or(name, |s| s.name.clone()),
            deployment_key: self.deployment,
            variant: self.variant,
            inputs_json: Value::Object(self.inputs).to_string(),
            metadata_json: Value::Object(self.metadata).to_string(),
            user: self.user,
            cron: self.cron,
            every: self.every,
            timezone: self.timezone,
            callback_url: self.callback_url,
            active: self.active,
            catch_up: self.catch_up.as_str().to_string(),
            next_run_at: None,
            last_request_id: stored.and_then(|s| s.last_request_id.clone()),
            last_run_at: stored.and_then(|s| s.last_run_at),
            created_at: stored.map_or(now_ms, |s| s.created_at),
            updated_at: now_ms,
        };
        let reset = match stored {
            None => true,
            Some(s) => {
                s.cron != record.cron
                    || s.every != record.every
                    || s.timezone != record.timezone
                    || s.active != record.active
            }
        };
        record.next_run_at = match stored {
            Some(s) if !reset => s.next_run_at,
            _ if !record.active => None,
            _ => timetable(&record).ok().and_then(|t| t.next_after(now_ms)),
        };
        (record, reset)
    }
}

/// The run a stored schedule starts, checked against the deployment as it is now.
pub fn prepared_run(s: &ScheduleRecord, deployments: &Deployments) -> Result<PreparedRun, String> {
    let deployment = deployments
        .get(&s.deployment_key)
        .ok_or_else(|| format!("deployment {:?} no longer exists", s.deployment_key))?;
    if deployment.vars(&s.variant).is_none() {
        return Err(format!("variant {:?} no longer exists", s.variant));
    }
    let object = |text: &str| match serde_json::from_str(text) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    let inputs = check_inputs(&deployment.definition, &object(&s.inputs_json))
        .map_err(|e| format!("{}: {}", e.field, e.message))?;
    let metadata = object(&s.metadata_json);
    let concurrency_key = crate::flow::concurrency_key(
        &deployment.definition,
        &inputs,
        &metadata,
        s.user.as_deref(),
        deployment.vars(&s.variant),
    )
    .map_err(|e| format!("concurrency.key: {e}"))?;
    Ok(PreparedRun {
        deployment,
        variant: s.variant.clone(),
        inputs,
        metadata,
        user: s.user.clone(),
        callback_url: s.callback_url.clone(),
        source: RunSource::Schedule,
        api_key_id: None,
        parent_request_id: None,
        // A schedule's callback gets the default events: the run's end.
        events: Default::default(),
        priority: crate::flow::DEFAULT_PRIORITY,
        concurrency_key,
    })
}

/// The `[[schedules]]` of a workflow file, checked against the definition itself: each needs
/// a unique `name` (how a redeploy finds it again) and the fields of `POST /v1/schedules`
/// but `deployment`. Errors name `schedules[i].<field>`.
pub fn check_definition(def: &Definition) -> Result<Vec<(String, Draft)>, DefinitionError> {
    let mut drafts: Vec<(String, Draft)> = Vec::new();
    for (i, table) in def.schedules.iter().enumerate() {
        let at = |field: &str| format!("schedules[{i}].{field}");
        let mut fields = table.clone();
        let name = match fields.remove("name") {
            Some(Value::String(n)) if !n.trim().is_empty() => n.trim().to_string(),
            _ => {
                return Err(DefinitionError::top(
                    &at("name"),
                    "a schedule in a workflow file needs a name (a non-empty string)",
                ))
            }
        };
        if drafts.iter().any(|(n, _)| *n == name) {
            return Err(DefinitionError::top(
                &at("name"),
                format!("two schedules are named {name:?}"),
            ));
        }
        if fields.contains_key("deployment") {
            return Err(DefinitionError::top(
                &at("deployment"),
                "a schedule in a workflow file runs that workflow; leave out deployment",
            ));
        }
        let draft = check_unknown(&fields)
            .and_then(|()| check_fields(&fields, def.key.clone(), def))
            .map_err(|e| match e {
                ApiError::Validation { message, field } => {
                    DefinitionError::top(&at(field.as_deref().unwrap_or("")), message)
                }
                other => DefinitionError::top(&at(""), other.to_string()),
            })?;
        drafts.push((name, draft));
    }
    Ok(drafts)
}

fn check_unknown(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::field(
            unknown.clone(),
            format!(
                "unknown field {unknown:?}; a schedule has name, {}",
                FIELDS[1..].join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// Makes the stored schedules of a just-deployed definition match its `[[schedules]]`:
/// new names are created, existing ones edited (their next fire moves only when their
/// timetable or `active` changed), and named schedules no longer in the file deleted.
/// Schedules created through the API (without a name) are left alone.
pub async fn sync(store: &Store, def: &Definition) -> Result<bool, StoreError> {
    let drafts = check_definition(def).map_err(|e| StoreError::Refused(e.to_string()))?;
    let stored: Vec<ScheduleRecord> = store
        .schedules()
        .await?
        .into_iter()
        .filter(|s| s.deployment_key == def.key && s.name.is_some())
        .collect();
    let now = crate::ids::now_ms();
    let mut changed = false;
    for (name, draft) in drafts {
        match stored.iter().find(|s| s.name.as_deref() == Some(&name)) {
            Some(existing) => {
                let (record, reset_next) = draft.record(Some(existing), None, now);
                let unchanged = ScheduleRecord {
                    updated_at: existing.updated_at,
                    ..record.clone()
                } == *existing;
                if unchanged {
                    continue;
                }
                store
                    .write(UpdateSchedule {
                        schedule: record,
                        reset_next,
                    })
                    .await?;
            }
            None => {
                let (record, _) = draft.record(None, Some(name), now);
                store.write(InsertSchedule(record)).await?;
            }
        }
        changed = true;
    }
    fn named(t: &Map<String, Value>) -> Option<&str> {
        t.get("name").and_then(Value::as_str).map(str::trim)
    }
    for gone in stored
        .iter()
        .filter(|s| !def.schedules.iter().any(|t| named(t) == s.name.as_deref()))
    {
        store
            .write(DeleteSchedule {
                schedule_id: gone.schedule_id.clone(),
            })
            .await?;
        changed = true;
    }
    Ok(changed)
}
