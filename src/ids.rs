//! Prefixed identifiers. Run and event ids are UUIDv7 (time-ordered), so new rows append to
//! the end of the primary-key index instead of scattering writes across it.

use rand::RngCore;
use uuid::Uuid;

fn prefixed_v7(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 32);
    id.push_str(prefix);
    id.push_str(
        Uuid::now_v7()
            .simple()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    id
}

/// `req_` + 32 lower-case hex: one run.
pub fn request_id() -> String {
    prefixed_v7("req_")
}

/// `evt_` + 32 hex: the completion event of a callback run, stable across retries.
pub fn event_id() -> String {
    prefixed_v7("evt_")
}

/// `att_` + 32 hex: one delivery attempt.
pub fn attempt_id() -> String {
    prefixed_v7("att_")
}

/// `dep_` + 32 hex: a deployment's stable id.
pub fn deployment_id() -> String {
    prefixed_v7("dep_")
}

/// `key_` + 32 hex: the public id of an API key (not the secret).
pub fn key_id() -> String {
    prefixed_v7("key_")
}

/// `sch_` + 32 hex: a schedule.
pub fn schedule_id() -> String {
    prefixed_v7("sch_")
}

/// `hvk_` + 32 random bytes in URL-safe base64: an API key secret.
pub fn api_key_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "hvk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// `whsec_` + standard base64 of 32 random bytes: a deployment's signing secret.
pub fn signing_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// True when `id` looks like `req_` + 32 lower-case hex.
pub fn is_request_id(id: &str) -> bool {
    is_prefixed_hex(id, "req_")
}

/// True when `id` looks like `evt_` + 32 lower-case hex.
pub fn is_event_id(id: &str) -> bool {
    is_prefixed_hex(id, "evt_")
}

fn is_prefixed_hex(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, milliseconds) for a Unix-milliseconds time.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_have_the_contract_shape_and_sort_by_time() {
        let a = request_id();
        let b = request_id();
        assert!(is_request_id(&a), "{a}");
        assert!(a < b, "UUIDv7 ids must sort by creation: {a} {b}");
        assert!(!is_request_id("req_XYZ"));
    }

    #[test]
    fn secrets_have_their_prefixes() {
        use base64::Engine;
        let s = signing_secret();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert!(api_key_secret().starts_with("hvk_"));
    }
}
