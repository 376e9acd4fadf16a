//! `hivelet schedules list|add|pause|resume|trigger|delete` (SPEC §12).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::commands::{finish, parse_input};
use super::Client;

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List schedules with their next fire and last run
    List,
    /// Create a schedule: --cron or --every
    Add(AddArgs),
    /// Stop a schedule firing (it stays; `resume` starts it again from now)
    Pause { id: String },
    /// Let a paused schedule fire again, from now on
    Resume { id: String },
    /// Start one run of a schedule now
    Trigger { id: String },
    /// Delete a schedule (its runs stay)
    Delete { id: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("timing").required(true).args(["cron", "every"])))]
pub struct AddArgs {
    /// Deployment key
    pub deployment: String,
    /// 5-field cron expression, e.g. "0 9 * * MON-FRI"
    #[arg(long)]
    pub cron: Option<String>,
    /// A duration of at least 1s, e.g. 15m
    #[arg(long)]
    pub every: Option<String>,
    /// IANA time zone (default: the machine's)
    #[arg(long)]
    pub timezone: Option<String>,
    /// Variant (default: `default`)
    #[arg(long)]
    pub variant: Option<String>,
    /// One input as name=value (value parsed as JSON when it parses, else text); repeatable
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// All inputs as a JSON object
    #[arg(long, value_name = "JSON")]
    pub inputs_json: Option<String>,
    /// Where each run's signed result is POSTed
    #[arg(long)]
    pub callback_url: Option<String>,
    /// Missed fires after downtime: skip, once (default) or all
    #[arg(long, value_parser = ["skip", "once", "all"])]
    pub catch_up: Option<String>,
    /// Create it paused
    #[arg(long)]
    pub paused: bool,
}

pub fn run(client: &Client, cmd: SchedulesCommand, json_out: bool) -> anyhow::Result<u8> {
    match cmd {
        SchedulesCommand::List => {
            let reply = client.get("/v1/schedules")?;
            finish(reply, json_out, |body| print_list(&body["schedules"]))
        }
        SchedulesCommand::Add(args) => {
            let reply = client.post_json("/v1/schedules", &add_body(&args)?)?;
            finish(reply, json_out, |body| {
                println!(
                    "{} next run {}",
                    text(&body["id"]),
                    text(&body["next_run_at"])
                );
            })
        }
        SchedulesCommand::Pause { id } => set_active(client, &id, false, json_out),
        SchedulesCommand::Resume { id } => set_active(client, &id, true, json_out),
        SchedulesCommand::Trigger { id } => {
            let reply = client.request(
                "POST",
                &format!("/v1/schedules/{}/trigger", encode(&id)),
                None,
                None,
            )?;
            finish(reply, json_out, |body| {
                println!(
                    "{} {}",
                    text(&body["request_id"]),
                    text(&body["run_status"])
                );
            })
        }
        SchedulesCommand::Delete { id } => {
            let reply = client.delete(&format!("/v1/schedules/{}", encode(&id)))?;
            finish(reply, json_out, |_| println!("deleted {id}"))
        }
    }
}

fn add_body(args: &AddArgs) -> anyhow::Result<Value> {
    let mut inputs = match &args.inputs_json {
        Some(text) => {
            match serde_json::from_str(text).context("--inputs-json is not valid JSON")? {
                Value::Object(map) => map,
                _ => bail!("--inputs-json must be a JSON object"),
            }
        }
        None => Map::new(),
    };
    for pair in &args.inputs {
        let (name, value) = parse_input(pair)?;
        inputs.insert(name, value);
    }
    let mut body = json!({"deployment": args.deployment, "inputs": inputs});
    let optional = [
        ("cron", &args.cron),
        ("every", &args.every),
        ("timezone", &args.timezone),
        ("variant", &args.variant),
        ("callback_url", &args.callback_url),
        ("catch_up", &args.catch_up),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            body[field] = json!(value);
        }
    }
    if args.paused {
        body["active"] = json!(false);
    }
    Ok(body)
}

fn set_active(client: &Client, id: &str, active: bool, json_out: bool) -> anyhow::Result<u8> {
    let reply = client.request(
        "PATCH",
        &format!("/v1/schedules/{}", encode(id)),
        Some("application/json"),
        Some(json!({ "active": active }).to_string().into_bytes()),
    )?;
    finish(reply, json_out, |body| {
        if active {
            println!("resumed {id}; next run {}", text(&body["next_run_at"]));
        } else {
            println!("paused {id}");
        }
    })
}

fn encode(part: &str) -> String {
    url::form_urlencoded::byte_serialize(part.as_bytes()).collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

fn print_list(schedules: &Value) {
    println!(
        "{:<36} {:<16} {:<18} {:<8} {:<24} {:<36}",
        "ID", "DEPLOYMENT", "WHEN", "ACTIVE", "NEXT RUN", "LAST RUN"
    );
    for s in schedules.as_array().into_iter().flatten() {
        let when = match (s["cron"].as_str(), s["every"].as_str()) {
            (Some(cron), _) => cron.to_string(),
            (None, Some(every)) => format!("every {every}"),
            (None, None) => "-".into(),
        };
        println!(
            "{:<36} {:<16} {:<18} {:<8} {:<24} {:<36}",
            text(&s["id"]),
            text(&s["deployment"]),
            when,
            if s["active"] == true { "yes" } else { "paused" },
            text(&s["next_run_at"]),
            text(&s["last_run"]["request_id"]),
        );
    }
}
