//! Parameter values several routes share, parsed exactly as the OpenAPI document declares
//! them ([`Timestamp`]): a point in time is Unix milliseconds or an RFC 3339 date-time (JSON
//! Schema's `date-time`: `T`, seconds, and `Z` or an offset), nothing looser, so what the
//! document allows is accepted and what it refuses is refused. Likewise a callback URL
//! ([`CallbackUrl`]).

use serde_json::Value;
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ApiError;

/// The callback URLs the OpenAPI document describes: http(s), a host name (its last label
/// starting with a letter) or an IPv4 address, an optional port, path, query and fragment.
/// `invoke_body::is_valid_callback_url` accepts all of these (and more that no pattern can
/// state, such as IPv6 literals), so a URL the document allows is never refused.
pub const CALLBACK_URL_OR_BLANK: &str = concat!(
    r"^[ \t\r\n]*$|",
    r"^https?://(",
    r"(([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?)",
    r"|(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))",
    r")(:[0-9]{1,4})?([/?#][A-Za-z0-9._~!$&'()*+,;=:@/?#%-]*)?$",
);

/// The spaces a blank `callback_url` may hold: the pattern's `[ \t\r\n]`, so that a value
/// the document calls blank is the one treated as absent.
pub const BLANK: &[char] = &[' ', '\t', '\r', '\n'];

/// An absolute http(s) callback URL, or blank (then absent): [`CALLBACK_URL_OR_BLANK`].
pub struct CallbackUrl;

impl PartialSchema for CallbackUrl {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(CALLBACK_URL_OR_BLANK))
            .description(Some("An absolute http(s) URL; blank counts as absent"))
            .into()
    }
}

impl ToSchema for CallbackUrl {}

/// `^[ \t\r\n]*$`: a blank callback URL, which counts as absent.
const BLANK_PATTERN: &str = r"^[ \t\r\n]*$";

fn nullable_bool() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::Array(vec![Type::Boolean, Type::Null]))
}

/// A callback URL that is given: the pattern without its blank alternative.
fn given_callback_url() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(
        CALLBACK_URL_OR_BLANK
            .strip_prefix(r"^[ \t\r\n]*$|")
            .expect("the pattern starts with its blank alternative"),
    ))
}

/// `async.events` (SPEC §11): what is POSTed to the callback URL; null or left out is the
/// default, the run's end.
fn async_events() -> AnyOfBuilder {
    AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(
            ArrayBuilder::new()
                .items(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(crate::delivery::lifecycle::NAMES)),
                )
                .min_items(Some(1)),
        )
        .description(Some(
            "Which events are POSTed to `callback_url`: `workflow.completed`, `workflow.failed`, \
             `workflow.cancelled` (the default: all three), `step.completed`, \
             `approval.requested`. A run's events arrive in order.",
        ))
}

/// Async delivery switched on: a callback URL, and `enabled` true or left out.
pub struct AsyncOn;

impl PartialSchema for AsyncOn {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property(
                "enabled",
                nullable_bool().enum_values(Some([Some(true), None])),
            )
            .property("callback_url", given_callback_url())
            .property("events", async_events())
            .required("callback_url")
            .description(Some(
                "Async delivery: the final result is POSTed, signed, to `callback_url`.",
            ))
            .into()
    }
}

impl ToSchema for AsyncOn {}

/// The invoke's `async` object, as `invoke_body::parse_async` reads it: on with a callback
/// URL (`enabled` true or left out), off with `enabled: false`, or off when it names no URL
/// and does not ask for one. `enabled: true` without a URL is refused.
pub struct AsyncOptions;

impl PartialSchema for AsyncOptions {
    fn schema() -> RefOr<Schema> {
        let off = ObjectBuilder::new()
            .property(
                "enabled",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([false])),
            )
            .property(
                "callback_url",
                AnyOfBuilder::new()
                    .item(ObjectBuilder::new().schema_type(Type::Null))
                    .item(CallbackUrl::schema()),
            )
            .property("events", async_events())
            .required("enabled");
        let unset = ObjectBuilder::new()
            .property("enabled", ObjectBuilder::new().schema_type(Type::Null))
            .property(
                "callback_url",
                AnyOfBuilder::new()
                    .item(ObjectBuilder::new().schema_type(Type::Null))
                    .item(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(BLANK_PATTERN)),
                    ),
            )
            .property("events", async_events());
        AnyOfBuilder::new()
            .item(AsyncOn::schema())
            .item(off)
            .item(unset)
            .description(Some(
                "Async delivery: the final result is POSTed, signed, to `callback_url`. On when \
                 `callback_url` is given (unless `enabled` is false); `enabled: true` needs a \
                 `callback_url`.",
            ))
            .into()
    }
}

impl ToSchema for AsyncOptions {}

/// Invoke metadata: flat, non-empty keys, values string, number, boolean or null.
pub struct Metadata;

impl PartialSchema for Metadata {
    fn schema() -> RefOr<Schema> {
        let scalar = ObjectBuilder::new().schema_type(SchemaType::Array(vec![
            Type::String,
            Type::Number,
            Type::Boolean,
            Type::Null,
        ]));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(scalar))
            .property_names(Some(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1))))
            .description(Some(
                "Flat: non-empty keys; values string, number, boolean or null. Stored with the run and filterable (`meta.<key>`).",
            ))
            .into()
    }
}

impl ToSchema for Metadata {}

/// At most this many digits of milliseconds: every such number fits an `i64`.
const MAX_MS_DIGITS: usize = 18;
const MAX_MS: i64 = 999_999_999_999_999_999;

/// A point in time: Unix milliseconds (a number, or a string of digits), or an RFC 3339
/// date-time. Only described here; values are read by [`parse_time`] and [`time_value`].
pub struct Timestamp;

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(-MAX_MS))
                    .maximum(Some(MAX_MS)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(format!("^-?[0-9]{{1,{MAX_MS_DIGITS}}}$"))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .description(Some(
                "Unix milliseconds, or an RFC 3339 date-time such as `2026-01-01T00:00:00Z`",
            ))
            .into()
    }
}

impl ToSchema for Timestamp {}

fn bad_time(field: &str) -> ApiError {
    ApiError::field(
        field,
        format!("{field} must be an RFC 3339 time or Unix milliseconds"),
    )
}

/// A query string's time: digits (Unix ms) or an RFC 3339 date-time.
pub fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    parse_ms(value)
        .or_else(|| parse_rfc3339(value))
        .ok_or_else(|| bad_time(field))
}

/// A JSON body's time: a whole number (Unix ms), or a string as in [`parse_time`]. `None`
/// when the value is absent or null.
pub fn time_value(field: &str, value: Option<&Value>) -> Result<Option<i64>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => parse_time(field, text).map(Some),
        Some(Value::Number(n)) => {
            // `1.0` is a whole number too (JSON Schema's `integer` says so).
            let ms = n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_MS as f64)
                    .map(|f| f as i64)
            });
            ms.filter(|ms| ms.abs() <= MAX_MS)
                .map(Some)
                .ok_or_else(|| bad_time(field))
        }
        Some(_) => Err(bad_time(field)),
    }
}

fn parse_ms(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty()
        || digits.len() > MAX_MS_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    text.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` and `Z` in either case, seconds up to 60
/// (a leap second), as Unix milliseconds.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i).is_some_and(|x| x.eq_ignore_ascii_case(&c));
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Milliseconds: the first three digits, padded.
        let frac = &b[start..i];
        millis = (0..3).fold(0i64, |n, k| {
            n * 10 + frac.get(k).map_or(0, |d| i64::from(d - b'0'))
        });
    }
    let offset_minutes = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc3339_date_times_and_milliseconds() {
        assert_eq!(parse_time("t", "0").unwrap(), 0);
        assert_eq!(parse_time("t", "-5").unwrap(), -5);
        assert_eq!(parse_time("t", "1970-01-01T01:00:00Z").unwrap(), 3_600_000);
        assert_eq!(
            parse_time("t", "1970-01-01t01:00:00.5z").unwrap(),
            3_600_500
        );
        assert_eq!(
            parse_time("t", "1970-01-01T02:00:00+01:00").unwrap(),
            3_600_000
        );
        assert_eq!(
            parse_time("t", "2026-01-31T00:00:00.123456Z").unwrap(),
            1_769_817_600_123
        );
        assert_eq!(
            parse_time("t", "2000-02-29T00:00:00Z").unwrap(),
            951_782_400_000
        );
        for bad in [
            "",
            "yesterday",
            "1e5",
            "2026-01-01",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+24:00",
            "1234567890123456789",
        ] {
            assert!(parse_time("since", bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            parse_time("since", "x").unwrap_err().body()["field"],
            "since"
        );
    }

    #[test]
    fn body_times_are_whole_numbers_or_strings() {
        assert_eq!(time_value("before", Some(&json!(0))).unwrap(), Some(0));
        assert_eq!(time_value("before", Some(&json!(5.0))).unwrap(), Some(5));
        assert_eq!(time_value("before", Some(&json!("7"))).unwrap(), Some(7));
        assert_eq!(time_value("before", None).unwrap(), None);
        for bad in [json!(1.5), json!(true), json!({}), json!(1e30)] {
            assert!(time_value("before", Some(&bad)).is_err(), "{bad}");
        }
    }
}
