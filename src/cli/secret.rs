//! `hivelet secret rotate DEPLOYMENT`: replaces a deployment's webhook signing secret.
//!
//! The new secret goes to stdout alone (so `SECRET=$(hivelet secret rotate hello)` works);
//! until when the previous secret keeps signing goes to stderr.

use serde_json::{json, Value};

use super::commands::finish;
use super::{Client, SecretCommand};

pub fn run(client: &Client, cmd: SecretCommand, json_out: bool) -> anyhow::Result<u8> {
    match cmd {
        SecretCommand::Rotate { deployment } => rotate(client, &deployment, json_out),
    }
}

fn rotate(client: &Client, deployment: &str, json_out: bool) -> anyhow::Result<u8> {
    let path = format!(
        "/v1/deployments/{}/rotate-secret",
        url::form_urlencoded::byte_serialize(deployment.as_bytes()).collect::<String>()
    );
    let reply = client.post_json(&path, &json!({}))?;
    finish(reply, json_out, |body| {
        println!("{}", body["signing_secret"].as_str().unwrap_or(""));
        let key = body["key"].as_str().unwrap_or(deployment);
        eprintln!(
            "rotated the signing secret of {key}; {}",
            previous_validity(&body["previous_secret_valid_until"])
        );
    })
}

/// What to say about the previous secret, from `previous_secret_valid_until`.
fn previous_validity(until: &Value) -> String {
    let when = match until {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => match n.as_i64() {
            // Unix milliseconds or seconds: either way, say it as RFC 3339.
            Some(ms) if ms > 100_000_000_000 => crate::ids::rfc3339(ms),
            Some(secs) => crate::ids::rfc3339(secs.saturating_mul(1000)),
            None => n.to_string(),
        },
        _ => return "the previous secret is no longer valid".to_string(),
    };
    format!(
        "the previous secret stays valid until {when} (deliveries carry signatures for both until then)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_until_when_the_previous_secret_is_valid() {
        assert!(previous_validity(&json!("2026-01-02T03:04:05Z"))
            .contains("valid until 2026-01-02T03:04:05Z"));
        assert!(previous_validity(&json!(1_767_323_045_000_i64))
            .contains("valid until 2026-01-02T03:04:05"));
        assert_eq!(
            previous_validity(&Value::Null),
            "the previous secret is no longer valid"
        );
    }
}
