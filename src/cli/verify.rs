//! `hivelet verify`: checks a saved webhook (headers file + raw body file) against a signing
//! secret with [`signing::verify_with_tolerance`] and says exactly why it fails.
//!
//! Prints `valid: …` (exit 0) or `invalid: <why>` (exit 1); exit 2 when the files or the
//! secret cannot be read.

use std::path::Path;

use crate::signing::{self, ReceivedHeaders, VerifyError};

use super::VerifyArgs;

/// Header names as received (lower-cased), in file order, one entry per name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SavedHeaders(Vec<(String, String)>);

impl SavedHeaders {
    /// Parses a headers file: a JSON object (`{"webhook-id": "…", …}`; a value may be a
    /// string, a number or a list of strings), or `Name: value` lines as `curl -D` writes
    /// them (CRLF or LF; `HTTP/…` status lines start a new block and only the last block
    /// counts; a request line like `POST /hook HTTP/1.1` is skipped; folded lines continue
    /// the previous header).
    pub fn parse(text: &str) -> Result<SavedHeaders, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim_start().starts_with('{') {
            Self::parse_json(text)
        } else {
            Self::parse_lines(text)
        }
    }

    fn parse_json(text: &str) -> Result<SavedHeaders, String> {
        use serde_json::Value;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| format!("the headers file looks like JSON but does not parse: {e}"))?;
        let Value::Object(map) = value else {
            unreachable!("text starts with `{{`")
        };
        let mut headers = SavedHeaders::default();
        for (name, value) in map {
            match value {
                Value::String(s) => headers.insert(&name, &s),
                Value::Number(n) => headers.insert(&name, &n.to_string()),
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::String(s) => headers.insert(&name, &s),
                            Value::Number(n) => headers.insert(&name, &n.to_string()),
                            other => {
                                return Err(format!(
                                    "header {name:?}: expected strings, found {other}"
                                ))
                            }
                        }
                    }
                }
                other => return Err(format!("header {name:?}: expected a string, found {other}")),
            }
        }
        Ok(headers)
    }

    fn parse_lines(text: &str) -> Result<SavedHeaders, String> {
        let mut headers = SavedHeaders::default();
        for (n, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with("HTTP/") {
                // A new response (curl -D after a redirect or `100 Continue`): the last counts.
                headers.0.clear();
                continue;
            }
            if n == 0 && is_request_line(line) {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // Obsolete line folding: continues the previous header's value.
                match headers.0.last_mut() {
                    Some((_, value)) => {
                        value.push(' ');
                        value.push_str(line.trim());
                        continue;
                    }
                    None => return Err(format!("line {}: continuation without a header", n + 1)),
                }
            }
            let (name, value) = line
                .split_once(':')
                .filter(|(name, _)| is_token(name))
                .ok_or_else(|| {
                    format!(
                        "line {}: {:?} is not `Name: value` (expected headers as `curl -D` writes \
                         them, or a JSON object)",
                        n + 1,
                        truncate(line, 80)
                    )
                })?;
            headers.insert(name, value.trim());
        }
        Ok(headers)
    }

    /// A repeated `webhook-signature` adds its signatures (Standard Webhooks lists them
    /// space-separated); any other repeated header keeps its last value.
    pub fn insert(&mut self, name: &str, value: &str) {
        let name = name.trim().to_ascii_lowercase();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) if name == "webhook-signature" => {
                existing.push(' ');
                existing.push_str(value.trim());
            }
            Some((_, existing)) => *existing = value.trim().to_string(),
            None => self.0.push((name, value.trim().to_string())),
        }
    }

    /// A header's value; `name` is matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn received(&self) -> ReceivedHeaders<'_> {
        ReceivedHeaders {
            fetch_hive_signature: self.get("x-fetch-hive-signature"),
            webhook_id: self.get("webhook-id"),
            webhook_timestamp: self.get("webhook-timestamp"),
            webhook_signature: self.get("webhook-signature"),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// `POST /hook HTTP/1.1`: a raw request dump's first line.
fn is_request_line(line: &str) -> bool {
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("");
    let last = line.rsplit(' ').next().unwrap_or("");
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && last.starts_with("HTTP/")
}

/// An HTTP header name (RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<u8> {
    let secret = match args.secret.resolve() {
        Ok(secret) => secret,
        Err(err) => return cannot_check(format!("{err:#}")),
    };
    let headers_text = match std::fs::read(&args.headers) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) => return cannot_check(read_error("--headers", &args.headers, &err)),
    };
    let headers = match SavedHeaders::parse(&headers_text) {
        Ok(headers) => headers,
        Err(err) => return cannot_check(format!("{}: {err}", args.headers.display())),
    };
    let body = match std::fs::read(&args.body) {
        Ok(body) => body,
        Err(err) => return cannot_check(read_error("--body", &args.body, &err)),
    };
    let now = args.now.unwrap_or_else(|| crate::ids::now_ms() / 1000);
    match check(&secret, &headers, &body, now, args.tolerance) {
        Ok(summary) => {
            println!("{summary}");
            Ok(0)
        }
        Err(why) => {
            println!("invalid: {why}");
            Ok(1)
        }
    }
}

fn cannot_check(message: String) -> anyhow::Result<u8> {
    eprintln!("hivelet: {message}");
    Ok(2)
}

fn read_error(flag: &str, path: &Path, err: &std::io::Error) -> String {
    format!("{flag}: cannot read {}: {err}", path.display())
}

/// Checks one delivery; `Ok` is the `valid: …` line, `Err` says exactly why it is invalid.
pub fn check(
    secret: &str,
    headers: &SavedHeaders,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<String, String> {
    // A malformed secret is wrong whatever the headers are; say so first.
    if let Err(err) = signing::standard_signature(secret, "", 0, b"") {
        return Err(malformed_secret(secret, &err));
    }
    let received = headers.received();
    match signing::verify_with_tolerance(secret, &received, body, now, tolerance) {
        Ok(()) => Ok(valid_summary(&received, now)),
        Err(err) => Err(explain(secret, headers, body, now, tolerance, err)),
    }
}

fn malformed_secret(secret: &str, err: &VerifyError) -> String {
    let hint = if !secret.starts_with("whsec_") {
        " (signing secrets look like whsec_ followed by base64; this one has no whsec_ prefix)"
    } else {
        ""
    };
    format!("malformed secret: {err}{hint}")
}

fn valid_summary(received: &ReceivedHeaders<'_>, now: i64) -> String {
    let mut checked = Vec::new();
    if received.webhook_signature.is_some() {
        checked.push("webhook-signature");
    }
    if received.fetch_hive_signature.is_some() {
        checked.push("X-Fetch-Hive-Signature");
    }
    let checked = checked.join(" and ");
    match (received.webhook_signature, received.webhook_id) {
        (Some(_), Some(id)) => {
            let ts = received.webhook_timestamp.unwrap_or("").trim();
            let when = ts
                .parse::<i64>()
                .map(|t| format!(" = {}, {}", rfc3339_secs(t), relative(now - t)))
                .unwrap_or_default();
            format!(
                "valid: signed by this secret (webhook-id {id}, timestamp {ts}{when}; checked {checked})"
            )
        }
        _ => format!(
            "valid: signed by this secret (checked {checked}; no webhook-signature, so webhook-id \
             and webhook-timestamp are not covered)"
        ),
    }
}

/// Turns a verification error into one precise sentence.
fn explain(
    secret: &str,
    headers: &SavedHeaders,
    body: &[u8],
    now: i64,
    tolerance: i64,
    err: VerifyError,
) -> String {
    match err {
        VerifyError::BadSecret => malformed_secret(secret, &err),
        VerifyError::MissingHeader(name) => {
            let names = headers.names();
            let found = if names.is_empty() {
                "the headers file has no headers".to_string()
            } else {
                format!("the headers file has: {}", names.join(", "))
            };
            format!("missing header {name} ({found})")
        }
        VerifyError::BadTimestamp => format!(
            "webhook-timestamp {:?} is not a Unix time in seconds",
            headers.get("webhook-timestamp").unwrap_or("")
        ),
        VerifyError::StaleTimestamp {
            age_secs,
            tolerance_secs,
        } => {
            let ts = now.saturating_sub(age_secs);
            let (how, hint) = if age_secs >= 0 {
                (
                    format!("signed {} ago", duration_text(age_secs)),
                    "to check an old delivery, pass --now",
                )
            } else {
                (
                    format!("dated {} in the future", duration_text(age_secs)),
                    "is the sender's or this machine's clock off? to check anyway, pass --now",
                )
            };
            // Whether the signature itself is right tells a replay from a forgery.
            let signature =
                if signing::verify_with_tolerance(secret, &headers.received(), body, now, i64::MAX)
                    .is_ok()
                {
                    "the signature itself matches this secret"
                } else {
                    "the signature does not match this secret either"
                };
            format!(
                "stale timestamp: webhook-timestamp {ts} ({}) was {how}, more than the \
                 {tolerance_secs} s tolerance; {signature} ({hint} {ts} or a larger --tolerance)",
                rfc3339_secs(ts)
            )
        }
        VerifyError::BadSignature(_) => bad_signature(secret, headers, body, now, tolerance),
    }
}

/// Works out which signature failed and what that means.
fn bad_signature(
    secret: &str,
    headers: &SavedHeaders,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> String {
    let received = headers.received();
    let fh_ok = received.fetch_hive_signature.map(|sig| {
        signing::secrets_equal(sig.trim(), &signing::fetch_hive_signature(secret, body))
    });
    let standard_ok = match (
        received.webhook_signature,
        received.webhook_id,
        received
            .webhook_timestamp
            .and_then(|t| t.trim().parse::<i64>().ok()),
    ) {
        (Some(sig), Some(id), Some(ts)) => signing::standard_signature(secret, id, ts, body)
            .ok()
            .map(|expected| {
                sig.split_whitespace()
                    .any(|candidate| signing::secrets_equal(candidate, &expected))
            }),
        _ => None,
    };
    let signatures = received
        .webhook_signature
        .map(|s| s.split_whitespace().count())
        .unwrap_or(0);

    let mut why = match (standard_ok, fh_ok) {
        (Some(false), Some(true)) => "bad signature: webhook-signature does not match, but \
             X-Fetch-Hive-Signature does, so the body and the secret are right: webhook-id or \
             webhook-timestamp was changed after signing"
            .to_string(),
        (Some(true), Some(false)) if signatures > 1 => "bad signature: webhook-signature \
             matches this secret, but X-Fetch-Hive-Signature does not; during a secret rotation \
             X-Fetch-Hive-Signature is signed with the new secret only, so this is probably the \
             previous secret (receivers checking X-Fetch-Hive-Signature need the new one)"
            .to_string(),
        (Some(true), Some(false)) => "bad signature: webhook-signature matches this secret, but \
             X-Fetch-Hive-Signature does not (the X-Fetch-Hive-Signature header was changed, or \
             it was signed with a newer secret)"
            .to_string(),
        (Some(false), _) if signatures > 1 => format!(
            "bad signature: none of the {signatures} signatures in webhook-signature matches \
             this secret for this body (wrong secret, or the body was changed)"
        ),
        (Some(false), _) => "bad signature: webhook-signature does not match this secret for \
             this body (wrong secret, or the body was changed)"
            .to_string(),
        _ => "bad signature: X-Fetch-Hive-Signature does not match this secret for this body \
             (wrong secret, or the body was changed)"
            .to_string(),
    };

    // A common slip: the body was saved with a newline an editor or `echo` added.
    let trimmed = body
        .strip_suffix(b"\r\n")
        .or_else(|| body.strip_suffix(b"\n"));
    if let Some(trimmed) = trimmed {
        if signing::verify_with_tolerance(secret, &received, trimmed, now, tolerance).is_ok() {
            why.push_str(
                "; without the newline at the end of the body file it verifies: the body was \
                 saved with a newline the delivery did not have (save the raw bytes)",
            );
        }
    }
    why
}

/// RFC 3339 for Unix seconds; a time outside 1970..=9999 is said as such, not formatted.
fn rfc3339_secs(secs: i64) -> String {
    if !(0..=253_402_300_799).contains(&secs) {
        return "not a date between 1970 and 9999".to_string();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `3600 s (1h)`.
fn duration_text(secs: i64) -> String {
    let secs = secs.unsigned_abs();
    if secs < 60 {
        format!("{secs} s")
    } else {
        format!(
            "{secs} s ({})",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        )
    }
}

fn relative(age: i64) -> String {
    if age >= 0 {
        format!("{} ago", duration_text(age))
    } else {
        format!("{} in the future", duration_text(age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const ID: &str = "evt_019d52846ea37682b03522fd0695cc44";
    const TS: i64 = 1764100000;
    const BODY: &str = "{\"event_type\":\"workflow.completed\",\"request_id\":\"req_019d52846ea37682b03522fd0695cc43\",\"data\":{\"run_status\":\"completed\",\"output\":\"Hello, Ada.\"}}";
    const STANDARD: &str = "v1,ra/jsqm6le+51uXz7IJa/rgp4QnHSn4O6IUYKjrTZUw=";
    const FETCH_HIVE: &str = "abfa01265f64270c0fd77f54e519434e887c40777b349936798a122b78a2a30e";

    fn curl_dump() -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nUser-Agent: hivelet/0.1.0\r\n\
             X-Fetch-Hive-Signature: {FETCH_HIVE}\r\nX-Fetch-Hive-Request-Id: req_1\r\n\
             Webhook-Id: {ID}\r\nWEBHOOK-TIMESTAMP: {TS}\r\nwebhook-signature: {STANDARD}\r\n\r\n"
        )
    }

    #[test]
    fn parses_curl_dump_with_status_line_and_crlf() {
        let h = SavedHeaders::parse(&curl_dump()).unwrap();
        assert_eq!(h.get("webhook-id"), Some(ID));
        assert_eq!(h.get("Webhook-Timestamp"), Some("1764100000"));
        assert_eq!(h.get("WEBHOOK-SIGNATURE"), Some(STANDARD));
        assert_eq!(h.get("x-fetch-hive-signature"), Some(FETCH_HIVE));
        assert_eq!(h.get("content-type"), Some("application/json"));
        assert_eq!(h.get("http/1.1 200 ok"), None);
        assert_eq!(h.names().len(), 7);
        let r = h.received();
        assert_eq!(r.webhook_id, Some(ID));
        assert_eq!(r.webhook_signature, Some(STANDARD));
    }

    #[test]
    fn last_response_block_counts_and_lf_only_works() {
        let text = format!(
            "HTTP/1.1 100 Continue\n\nHTTP/1.1 301 Moved\nLocation: /x\nwebhook-id: old\n\n{}",
            curl_dump().replace("\r\n", "\n")
        );
        let h = SavedHeaders::parse(&text).unwrap();
        assert_eq!(h.get("location"), None);
        assert_eq!(h.get("webhook-id"), Some(ID));
    }

    #[test]
    fn request_dump_folding_and_repeated_signatures() {
        let text = "POST /hook HTTP/1.1\r\nHost: localhost\r\nwebhook-signature: v1,a\r\n\
                    webhook-signature: v1,b\r\nX-Long: one\r\n two\r\nwebhook-id: x\r\nwebhook-id: y\r\n";
        let h = SavedHeaders::parse(text).unwrap();
        assert_eq!(h.get("host"), Some("localhost"));
        assert_eq!(h.get("webhook-signature"), Some("v1,a v1,b"));
        assert_eq!(h.get("x-long"), Some("one two"));
        assert_eq!(h.get("webhook-id"), Some("y"));
    }

    #[test]
    fn parses_a_json_object() {
        let text = format!(
            "  {{\"Webhook-Id\": \"{ID}\", \"webhook-timestamp\": {TS}, \
             \"webhook-signature\": [\"{STANDARD}\", \"v1,other\"], \"x-fetch-hive-signature\": \"{FETCH_HIVE}\"}}\n"
        );
        let h = SavedHeaders::parse(&text).unwrap();
        assert_eq!(h.get("webhook-id"), Some(ID));
        assert_eq!(h.get("webhook-timestamp"), Some("1764100000"));
        assert_eq!(
            h.get("webhook-signature"),
            Some(format!("{STANDARD} v1,other").as_str())
        );
        assert_eq!(h.get("X-Fetch-Hive-Signature"), Some(FETCH_HIVE));
    }

    #[test]
    fn rejects_what_is_not_headers() {
        let err = SavedHeaders::parse("hello world\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        let err = SavedHeaders::parse("{\"a\": {\"b\": 1}}").unwrap_err();
        assert!(err.contains("\"a\""), "{err}");
        assert!(SavedHeaders::parse("{not json").is_err());
        assert_eq!(SavedHeaders::parse("").unwrap().names().len(), 0);
    }

    fn headers() -> SavedHeaders {
        SavedHeaders::parse(&curl_dump()).unwrap()
    }

    #[test]
    fn check_says_valid_and_why_not() {
        let ok = check(SECRET, &headers(), BODY.as_bytes(), TS + 10, 300).unwrap();
        assert!(
            ok.starts_with(&format!(
                "valid: signed by this secret (webhook-id {ID}, timestamp {TS}"
            )),
            "{ok}"
        );

        let tampered = BODY.replace("Ada", "Eve");
        let err = check(SECRET, &headers(), tampered.as_bytes(), TS, 300).unwrap_err();
        assert!(err.starts_with("bad signature"), "{err}");

        let err = check(SECRET, &headers(), BODY.as_bytes(), TS + 3600, 300).unwrap_err();
        assert!(err.starts_with("stale timestamp"), "{err}");
        assert!(
            err.contains("3600 s") && err.contains("300 s tolerance"),
            "{err}"
        );
        assert!(check(SECRET, &headers(), BODY.as_bytes(), TS + 3600, 4000).is_ok());

        let err = check("whsec_not base64!", &headers(), BODY.as_bytes(), TS, 300).unwrap_err();
        assert!(err.starts_with("malformed secret"), "{err}");

        let mut only_id = SavedHeaders::default();
        only_id.insert("webhook-id", ID);
        let err = check(SECRET, &only_id, BODY.as_bytes(), TS, 300).unwrap_err();
        assert!(err.starts_with("missing header"), "{err}");
        assert!(err.contains("webhook-id"), "{err}");
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        for ts in ["-9223372036854775808", "9223372036854775807", "-1"] {
            let mut h = headers();
            h.insert("webhook-timestamp", ts);
            let err = check(SECRET, &h, BODY.as_bytes(), TS, 300).unwrap_err();
            assert!(err.starts_with("stale timestamp"), "{err}");
        }
    }

    #[test]
    fn check_pins_down_the_cause() {
        // Trailing newline added when saving.
        let err = check(SECRET, &headers(), format!("{BODY}\n").as_bytes(), TS, 300).unwrap_err();
        assert!(err.contains("newline"), "{err}");
        // Body right, webhook-id changed.
        let mut h = headers();
        h.insert("webhook-id", "evt_other");
        let err = check(SECRET, &h, BODY.as_bytes(), TS, 300).unwrap_err();
        assert!(
            err.contains("webhook-id or webhook-timestamp was changed"),
            "{err}"
        );
        // Signed by the previous secret during a rotation.
        let previous = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";
        let mut h = headers();
        let both = signing::standard_signature_header(&[SECRET, previous], ID, TS, BODY.as_bytes())
            .unwrap();
        h.0.retain(|(n, _)| n != "webhook-signature");
        h.insert("webhook-signature", &both);
        let err = check(previous, &h, BODY.as_bytes(), TS, 300).unwrap_err();
        assert!(err.contains("previous secret"), "{err}");
        assert!(check(SECRET, &h, BODY.as_bytes(), TS, 300).is_ok());
    }
}
