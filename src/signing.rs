//! Webhook signatures: Fetch Hive's `X-Fetch-Hive-Signature` and Standard Webhooks'
//! `webhook-signature`. Pure functions, shared by the delivery actor and the CLI's `verify`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a `webhook-timestamp` may be from now before `verify` calls it stale.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// Lower-case hex HMAC-SHA256 of the raw body, keyed with the secret string's UTF-8 bytes
/// (`whsec_` prefix included), as Fetch Hive sends it.
pub fn fetch_hive_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The key bytes Standard Webhooks uses: the base64 part after `whsec_`.
fn standard_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64.decode(encoded).map_err(|_| VerifyError::BadSecret)
}

/// One `v1,<base64>` signature over `{id}.{timestamp}.{body}`.
pub fn standard_signature(
    secret: &str,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, VerifyError> {
    let key = standard_key(secret)?;
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: the current secret first, then each still-valid
/// previous secret, space-separated.
pub fn standard_signature_header(
    secrets: &[&str],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, VerifyError> {
    let mut parts = Vec::with_capacity(secrets.len());
    for secret in secrets {
        parts.push(standard_signature(secret, webhook_id, timestamp, body)?);
    }
    Ok(parts.join(" "))
}

/// Why a delivery did not verify. The messages are what `hivelet verify` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the secret is not a valid whsec_ secret (the part after whsec_ must be base64)")]
    BadSecret,
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error(
        "stale timestamp: signed {age_secs} s ago (negative: in the future), beyond the {tolerance_secs} s tolerance"
    )]
    StaleTimestamp { age_secs: i64, tolerance_secs: i64 },
    #[error("bad signature: {0}")]
    BadSignature(String),
}

/// The headers a receiver got, as far as verification needs them.
#[derive(Debug, Default, Clone)]
pub struct ReceivedHeaders<'a> {
    pub fetch_hive_signature: Option<&'a str>,
    pub webhook_id: Option<&'a str>,
    pub webhook_timestamp: Option<&'a str>,
    pub webhook_signature: Option<&'a str>,
}

/// Checks a delivery the way a receiver should: the Standard Webhooks signature (with the
/// timestamp within tolerance of `now_secs`) when those headers are present, and the Fetch
/// Hive signature when that header is present. At least one must be there.
pub fn verify(
    secret: &str,
    headers: &ReceivedHeaders<'_>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    verify_with_tolerance(secret, headers, body, now_secs, TIMESTAMP_TOLERANCE_SECS)
}

/// [`verify`] with a chosen timestamp tolerance in seconds (`hivelet verify --tolerance`).
pub fn verify_with_tolerance(
    secret: &str,
    headers: &ReceivedHeaders<'_>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    use subtle::ConstantTimeEq;
    let mut checked_any = false;
    if let Some(sig) = headers.webhook_signature {
        let id = headers
            .webhook_id
            .ok_or(VerifyError::MissingHeader("webhook-id"))?;
        let ts_text = headers
            .webhook_timestamp
            .ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
        let ts: i64 = ts_text
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        let age = now_secs.saturating_sub(ts);
        if age.saturating_abs() > tolerance_secs {
            return Err(VerifyError::StaleTimestamp {
                age_secs: age,
                tolerance_secs,
            });
        }
        let expected = standard_signature(secret, id, ts, body)?;
        let matches = sig
            .split_whitespace()
            .any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())));
        if !matches {
            return Err(VerifyError::BadSignature(
                "webhook-signature does not match this secret for this body (wrong secret, or the body was changed)".into(),
            ));
        }
        checked_any = true;
    }
    if let Some(sig) = headers.fetch_hive_signature {
        let expected = fetch_hive_signature(secret, body);
        if !bool::from(sig.trim().as_bytes().ct_eq(expected.as_bytes())) {
            return Err(VerifyError::BadSignature(
                "X-Fetch-Hive-Signature does not match this secret for this body (wrong secret, or the body was changed)".into(),
            ));
        }
        checked_any = true;
    }
    if checked_any {
        Ok(())
    } else {
        Err(VerifyError::MissingHeader(
            "webhook-signature or X-Fetch-Hive-Signature",
        ))
    }
}

/// Compares two secrets without leaking where they differ through timing.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }
    #[derive(Deserialize)]
    struct Vector {
        name: String,
        secret: String,
        previous_secrets: Vec<String>,
        webhook_id: String,
        webhook_timestamp: i64,
        body: String,
        expected: Expected,
    }
    #[derive(Deserialize)]
    struct Expected {
        #[serde(rename = "x-fetch-hive-signature")]
        fetch_hive: String,
        #[serde(rename = "webhook-signature")]
        standard: String,
    }

    fn vectors() -> Vec<Vector> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/testdata/signature-vectors.json"
        );
        let text = std::fs::read_to_string(path)
            .or_else(|_| {
                std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/data/signature-vectors.json"
                ))
            })
            .expect("signature vectors");
        serde_json::from_str::<Vectors>(&text).unwrap().vectors
    }

    #[test]
    fn both_headers_match_the_shared_vectors() {
        for v in vectors() {
            assert_eq!(
                fetch_hive_signature(&v.secret, v.body.as_bytes()),
                v.expected.fetch_hive,
                "{}",
                v.name
            );
            let mut secrets = vec![v.secret.as_str()];
            secrets.extend(v.previous_secrets.iter().map(String::as_str));
            let header = standard_signature_header(
                &secrets,
                &v.webhook_id,
                v.webhook_timestamp,
                v.body.as_bytes(),
            )
            .unwrap();
            assert_eq!(header, v.expected.standard, "{}", v.name);
        }
    }

    #[test]
    fn verify_accepts_vectors_and_names_each_failure() {
        for v in vectors() {
            let ts = v.webhook_timestamp.to_string();
            let headers = ReceivedHeaders {
                fetch_hive_signature: Some(&v.expected.fetch_hive),
                webhook_id: Some(&v.webhook_id),
                webhook_timestamp: Some(&ts),
                webhook_signature: Some(&v.expected.standard),
            };
            let now = v.webhook_timestamp + 10;
            assert_eq!(
                verify(&v.secret, &headers, v.body.as_bytes(), now),
                Ok(()),
                "{}",
                v.name
            );

            let tampered = format!("{} ", v.body);
            assert!(matches!(
                verify(&v.secret, &headers, tampered.as_bytes(), now),
                Err(VerifyError::BadSignature(_))
            ));
            assert!(matches!(
                verify(&v.secret, &headers, v.body.as_bytes(), now + 3600),
                Err(VerifyError::StaleTimestamp { .. })
            ));
            let wrong = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
            assert!(matches!(
                verify(wrong, &headers, v.body.as_bytes(), now),
                Err(VerifyError::BadSignature(_))
            ));
        }
    }

    #[test]
    fn previous_secret_still_verifies_during_rotation() {
        let v = vectors()
            .into_iter()
            .find(|v| !v.previous_secrets.is_empty())
            .unwrap();
        let ts = v.webhook_timestamp.to_string();
        let headers = ReceivedHeaders {
            webhook_id: Some(&v.webhook_id),
            webhook_timestamp: Some(&ts),
            webhook_signature: Some(&v.expected.standard),
            ..Default::default()
        };
        verify(
            &v.previous_secrets[0],
            &headers,
            v.body.as_bytes(),
            v.webhook_timestamp,
        )
        .unwrap();
    }
}
