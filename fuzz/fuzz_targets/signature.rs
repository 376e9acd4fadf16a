//! Webhook signatures: `verify` / `verify_with_tolerance` on arbitrary secret, headers, body,
//! clock and tolerance; `secrets_equal`; and a round trip: a `webhook-signature` header made by
//! `standard_signature_header` (and an `X-Fetch-Hive-Signature` made by
//! `fetch_hive_signature`) for a valid `whsec_` secret verifies, and does not once one byte
//! of the body is flipped.
//!
//! Input layout: byte 0 selects which headers are present; bytes 1..17 are two i64 (the
//! clock and the tolerance); the rest is split at 0x00 into secret, webhook-id,
//! webhook-timestamp, webhook-signature, X-Fetch-Hive-Signature and body (the body is
//! everything after the fifth 0x00, so it may contain 0x00 itself).
#![no_main]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hivelet::signing::{
    fetch_hive_signature, secrets_equal, standard_signature, standard_signature_header, verify,
    verify_with_tolerance, ReceivedHeaders, VerifyError,
};
use libfuzzer_sys::fuzz_target;

fn i64_at(data: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = data.get(at + i).copied().unwrap_or(0);
    }
    i64::from_le_bytes(b)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let flags = data.first().copied().unwrap_or(0);
    let now = i64_at(data, 1);
    let tolerance = i64_at(data, 9);
    let rest = data.get(17..).unwrap_or(&[]);
    let mut parts = rest.splitn(6, |b| *b == 0);
    let secret = text(parts.next().unwrap_or(&[]));
    let id = text(parts.next().unwrap_or(&[]));
    let ts = text(parts.next().unwrap_or(&[]));
    let sig = text(parts.next().unwrap_or(&[]));
    let fh = text(parts.next().unwrap_or(&[]));
    let body = parts.next().unwrap_or(&[]);

    // 1. Arbitrary everything: must only ever return Ok or an error.
    let headers = ReceivedHeaders {
        webhook_id: (flags & 1 != 0).then_some(id.as_str()),
        webhook_timestamp: (flags & 2 != 0).then_some(ts.as_str()),
        webhook_signature: (flags & 4 != 0).then_some(sig.as_str()),
        fetch_hive_signature: (flags & 8 != 0).then_some(fh.as_str()),
    };
    let _ = verify(&secret, &headers, body, now);
    let _ = verify_with_tolerance(&secret, &headers, body, now, tolerance);
    let _ = standard_signature(&secret, &id, now, body);
    let _ = fetch_hive_signature(&secret, body);
    assert!(secrets_equal(&secret, &secret));
    assert_eq!(secrets_equal(&secret, &id), secret == id);

    // 2. Round trip with a valid secret made from the input's bytes.
    let key = if secret.is_empty() {
        b"k".as_slice()
    } else {
        secret.as_bytes()
    };
    let good = format!("whsec_{}", BASE64.encode(key));
    let other = format!("whsec_{}", BASE64.encode([key, b"x"].concat()));
    let signed_at = now;
    let secrets: Vec<&str> = if flags & 16 != 0 {
        vec![&other, &good]
    } else {
        vec![&good]
    };
    let header = standard_signature_header(&secrets, &id, signed_at, body)
        .expect("a whsec_ secret with base64 after the prefix signs");
    let fh_sig = fetch_hive_signature(&good, body);
    let ts_text = signed_at.to_string();
    let received = ReceivedHeaders {
        webhook_id: Some(&id),
        webhook_timestamp: Some(&ts_text),
        webhook_signature: Some(&header),
        fetch_hive_signature: (flags & 32 != 0).then_some(fh_sig.as_str()),
    };
    // The receiver's clock is within tolerance of the signing time.
    let skew = (tolerance.rem_euclid(301)).min(300);
    let clock = signed_at.saturating_add(if flags & 64 != 0 { -skew } else { skew });
    if clock.saturating_sub(signed_at).saturating_abs() <= 300 {
        assert_eq!(
            verify(&good, &received, body, clock),
            Ok(()),
            "a fresh signature did not verify: id={id:?} ts={signed_at} header={header:?}"
        );
    }
    assert_eq!(
        verify_with_tolerance(&good, &received, body, signed_at, 0),
        Ok(())
    );

    // One flipped byte in the body must be caught.
    let mut tampered = body.to_vec();
    if tampered.is_empty() {
        tampered.push(b'x');
    } else {
        let at = (flags as usize >> 1) % tampered.len();
        tampered[at] ^= 1 << (flags % 8);
    }
    assert!(
        matches!(
            verify_with_tolerance(&good, &received, &tampered, signed_at, 0),
            Err(VerifyError::BadSignature(_))
        ),
        "a changed body verified"
    );
    // And so must a different secret.
    if !secrets.contains(&other.as_str()) {
        assert!(matches!(
            verify_with_tolerance(&other, &received, body, signed_at, 0),
            Err(VerifyError::BadSignature(_))
        ));
    }
});
