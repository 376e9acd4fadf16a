//! The client subcommands.

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Map, Value};

use super::{Client, Command, ConfigCommand, GlobalArgs, InvokeArgs, KeysCommand, SnippetArgs};
use crate::config::{Config, Overrides};

pub fn run(command: Command, global: &GlobalArgs, overrides: &Overrides) -> anyhow::Result<u8> {
    // These work on their own: no daemon, no configuration.
    let command = match command {
        Command::Verify(args) => return super::verify::run(&args),
        Command::Listen(args) => return super::listen::run(&args),
        Command::Service(cmd) => return super::service::run(cmd, overrides),
        other => other,
    };
    let config = Config::load(overrides);
    if let Command::Config(cmd) = &command {
        return config_command(cmd, config);
    }
    let config = config?;
    if let Command::Backup { file } = &command {
        return super::backup::run(&config, file);
    }
    let client = Client::discover(&config, global.url.as_deref(), global.api_key.as_deref())?;
    match command {
        Command::Deploy { file } => deploy(&client, &file, global.json),
        Command::Invoke(args) => invoke(&client, args, global.json),
        Command::Keys(cmd) => keys(&client, cmd, global.json),
        Command::Secret(cmd) => super::secret::run(&client, cmd, global.json),
        Command::Runs(cmd) => super::runs::run(&client, cmd, global.json),
        Command::Schedules(cmd) => super::schedules::run(&client, cmd, global.json),
        Command::Snippet(args) => snippet(&client, &args, global.json),
        Command::Serve(_)
        | Command::Config(_)
        | Command::Verify(_)
        | Command::Listen(_)
        | Command::Backup { .. }
        | Command::Service(_) => {
            unreachable!("handled above")
        }
    }
}

fn config_command(
    cmd: &ConfigCommand,
    config: Result<Config, crate::config::ConfigError>,
) -> anyhow::Result<u8> {
    match (cmd, config) {
        (_, Err(err)) => {
            eprintln!("hivelet: configuration error: {err}");
            Ok(2)
        }
        (ConfigCommand::Check, Ok(config)) => {
            let source = if config.paths.config_file.exists() {
                ""
            } else {
                " (file absent: defaults)"
            };
            println!("ok: {}{source}", config.paths.config_file.display());
            println!("data dir: {}", config.paths.data_dir.display());
            Ok(0)
        }
        (ConfigCommand::Dump, Ok(config)) => {
            print!("{}", config.dump());
            Ok(0)
        }
    }
}

/// Prints a successful reply, or the error envelope's message with exit code 1.
pub(super) fn finish(
    reply: super::client::Reply,
    json_out: bool,
    print: impl FnOnce(&Value),
) -> anyhow::Result<u8> {
    if !reply.ok() {
        if json_out {
            println!("{}", serde_json::to_string_pretty(&reply.body)?);
        }
        eprintln!("hivelet: {} (HTTP {})", reply.error_message(), reply.status);
        return Ok(1);
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&reply.body)?);
    } else {
        print(&reply.body);
    }
    Ok(0)
}

fn deploy(client: &Client, file: &std::path::Path, json_out: bool) -> anyhow::Result<u8> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let is_toml = crate::deployments::is_toml_path(file);
    let key = if is_toml {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| anyhow!("{}: {}", file.display(), e))?;
        table
            .get("key")
            .and_then(|k| k.as_str())
            .map(str::to_string)
    } else {
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", file.display()))?;
        value.get("key").and_then(Value::as_str).map(str::to_string)
    };
    let key = key.ok_or_else(|| anyhow!("{}: the definition has no `key`", file.display()))?;
    let content_type = if is_toml {
        "application/toml"
    } else {
        "application/json"
    };
    let reply = client.request(
        "PUT",
        &format!("/v1/deployments/{key}"),
        Some(content_type),
        Some(text.into_bytes()),
    )?;
    finish(reply, json_out, |body| {
        println!(
            "deployed {} version {}",
            body["key"].as_str().unwrap_or(&key),
            body["version"]
        );
    })
}

/// `name=value`: the value as JSON when it parses (numbers, booleans, objects), else text.
pub(super) fn parse_input(pair: &str) -> anyhow::Result<(String, Value)> {
    let (name, value) = pair
        .split_once('=')
        .ok_or_else(|| anyhow!("--input must be NAME=VALUE, got `{pair}`"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((name.to_string(), value))
}

fn invoke(client: &Client, args: InvokeArgs, json_out: bool) -> anyhow::Result<u8> {
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
    if let Some(variant) = &args.variant {
        body["variant"] = json!(variant);
    }
    if args.async_mode {
        body["async"] = json!({"enabled": true, "callback_url": args.callback_url});
    }
    if args.stream {
        body["stream"] = json!(true);
        return super::stream::invoke(client, &body, json_out);
    }
    let reply = client.post_json("/v1/workflow/invoke", &body)?;
    finish(reply, json_out, |body| match body.get("output") {
        Some(Value::String(text)) => println!("{text}"),
        Some(other) => println!(
            "{}",
            serde_json::to_string_pretty(other).unwrap_or_default()
        ),
        None => println!(
            "{} {}",
            body["request_id"].as_str().unwrap_or(""),
            body["run_status"].as_str().unwrap_or("")
        ),
    })
}

fn keys(client: &Client, cmd: KeysCommand, json_out: bool) -> anyhow::Result<u8> {
    match cmd {
        KeysCommand::Create { name, role } => {
            let reply = client.post_json("/v1/keys", &json!({"name": name, "role": role}))?;
            finish(reply, json_out, |body| {
                println!("{}", body["key"].as_str().unwrap_or(""));
                eprintln!(
                    "created {} ({}, {}); the key above is shown only once",
                    body["id"].as_str().unwrap_or(""),
                    body["name"].as_str().unwrap_or(""),
                    body["role"].as_str().unwrap_or("")
                );
            })
        }
        KeysCommand::List => {
            let reply = client.get("/v1/keys")?;
            finish(reply, json_out, |body| {
                println!(
                    "{:<38} {:<16} {:<7} {:<14} {:<25} STATE",
                    "ID", "NAME", "ROLE", "KEY", "LAST USED"
                );
                for key in body["keys"].as_array().into_iter().flatten() {
                    println!(
                        "{:<38} {:<16} {:<7} {:<14} {:<25} {}",
                        key["id"].as_str().unwrap_or(""),
                        key["name"].as_str().unwrap_or(""),
                        key["role"].as_str().unwrap_or(""),
                        key["masked_key"].as_str().unwrap_or(""),
                        key["last_used_at"].as_str().unwrap_or("never"),
                        if key["revoked"].as_bool() == Some(true) {
                            "revoked"
                        } else {
                            "active"
                        },
                    );
                }
            })
        }
        KeysCommand::Rotate { id } => {
            let reply = client.request("POST", &format!("/v1/keys/{id}/rotate"), None, None)?;
            finish(reply, json_out, |body| {
                println!("{}", body["key"].as_str().unwrap_or(""));
            })
        }
        KeysCommand::Revoke { id } => {
            let reply = client.delete(&format!("/v1/keys/{id}"))?;
            finish(reply, json_out, |_| println!("revoked {id}"))
        }
    }
}

fn snippet(client: &Client, args: &SnippetArgs, json_out: bool) -> anyhow::Result<u8> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("base_url", &client.base_url);
    if let Some(variant) = &args.variant {
        query.append_pair("variant", variant);
    }
    if args.async_mode {
        query.append_pair("async", "true");
        if let Some(url) = &args.callback_url {
            query.append_pair("callback_url", url);
        }
    }
    let path = format!(
        "/v1/deployments/{}/snippet?{}",
        args.deployment,
        query.finish()
    );
    let reply = client.get(&path)?;
    finish(reply, json_out, |body| {
        println!("{}", body["curl"].as_str().unwrap_or_default());
        if let Some(secret) = body["signing_secret"].as_str() {
            println!("\n# Signing secret (verifies the webhook): {secret}");
        }
    })
}
