//! `classify` maps status and code as documented, and `parse_retry_after`
//! reads both of the header's forms and anything else without a panic.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde_json::Value;
use tasks_cf_kv::{Envelope, Error, classify, hint, parse_retry_after};

use crate::envelope::{any_body, error_text};
use tasks_proptest_kit::{check, edits, fed, mutate_str};

/// The start of a body that is not an envelope, as documented: at most 200
/// bytes of its trimmed text, cut at a character boundary.
fn snippet(body: &[u8], status: u16) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("HTTP {status} with an empty body");
    }
    let end = (0..=text.len().min(200))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[..end].to_owned()
}

pub fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(&[200, 400, 401, 403, 404, 409, 413, 429, 500, 502, 503][..]),
        100..=599u16,
        any::<u16>(),
    ]
}

pub fn retry_after() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        any::<u64>().prop_map(|n| Some(n.to_string())),
        Just(Some("Wed, 21 Oct 2015 07:28:30 GMT".to_owned())),
        any::<String>().prop_map(Some),
    ]
}

#[test]
fn classify_follows_status_and_code() {
    let call = (status(), retry_after(), any_body(), 0..4_102_444_800u64);
    check("classify", call, |(status, retry_after, body, now)| {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        fed();
        let err = classify(status, retry_after.as_deref(), &body, now);
        let env = Envelope::<Value>::parse(&body);
        let code = env.as_ref().and_then(|e| e.code());
        let fallback = snippet(&body, status);
        let message = env.map_or_else(|| fallback.clone(), |e| error_text(&e.errors, &fallback));
        let want = if status == 429 || status >= 500 || matches!(code, Some(971 | 10022 | 10046)) {
            Error::Transient {
                status: Some(status),
                retry_after: retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, now)),
                message,
            }
        } else {
            let hint = match code {
                Some(10011 | 10013) => Some(hint::NAMESPACE_ID),
                Some(7003) => Some(hint::ACCOUNT_ID),
                Some(10037) => Some(hint::API_TOKEN),
                _ if status == 401 || status == 403 => Some(hint::API_TOKEN),
                _ => None,
            };
            match hint {
                Some(hint) => Error::Auth {
                    status,
                    code,
                    message,
                    hint,
                },
                None => Error::Api {
                    status,
                    code,
                    message,
                },
            }
        };
        prop_assert_eq!(err, want);
        Ok(())
    });
}

#[test]
fn retry_after_reads_seconds_and_dates() {
    let header = (
        any::<u64>(),
        0..253_402_300_799u64,
        0..253_402_300_799u64,
        "[ \t]{0,2}",
        any::<bool>(),
    );
    check("retry-after", header, |(secs, at, now, pad, as_date)| {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        fed();
        if as_date {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
            let value = format!("{pad}{}{pad}", httpdate::fmt_http_date(at));
            let want = at.duration_since(now).unwrap_or(Duration::ZERO);
            prop_assert_eq!(parse_retry_after(&value, now), Some(want));
        } else {
            let value = format!("{pad}{secs}{pad}");
            prop_assert_eq!(
                parse_retry_after(&value, now),
                Some(Duration::from_secs(secs))
            );
        }
        Ok(())
    });
}

#[test]
fn any_retry_after_is_answered() {
    let value = prop_oneof![
        any::<String>(),
        "[0-9 +-.eE]{0,24}",
        edits(b" ,:0129-GMTWed\xff", &["GMT", "-", ":", "9999", "Feb 30"])
            .prop_map(|e| mutate_str("Wed, 21 Oct 2015 07:28:30 GMT", &e)),
    ];
    check(
        "arbitrary retry-after",
        (value, any::<u64>()),
        |(value, now)| {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now % 253_402_300_799);
            fed();
            let got = parse_retry_after(&value, now);
            // A date means the time left until it, zero once past.
            if let (Some(wait), Ok(at)) = (got, httpdate::parse_http_date(value.trim())) {
                prop_assert_eq!(wait, at.duration_since(now).unwrap_or(Duration::ZERO));
            }
            Ok(())
        },
    );
}
