//! The client's error type and the mapping from HTTP answers to it.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::envelope::Envelope;

/// Names of the Spin variables an [`Error::Auth`] hint points at.
pub mod hint {
    /// The API token (bad, expired or lacking KV permissions).
    pub const API_TOKEN: &str = "cf_api_token";
    /// The account id (the URL did not route).
    pub const ACCOUNT_ID: &str = "cf_account_id";
    /// The namespace id (malformed or not found).
    pub const NAMESPACE_ID: &str = "cf_namespace_id";
}

/// Cloudflare error codes this client acts on.
pub mod code {
    /// Key not found (a value read answers 404 with it).
    pub const KEY_NOT_FOUND: u32 = 10009;
    /// Authentication error (with 401/403; miniflare also uses it as a catch-all).
    pub const AUTHENTICATION: u32 = 10000;
    /// Malformed namespace id.
    pub const MALFORMED_NAMESPACE: u32 = 10011;
    /// Namespace not found.
    pub const NAMESPACE_NOT_FOUND: u32 = 10013;
    /// The token lacks permission for this operation.
    pub const NO_PERMISSION: u32 = 10037;
    /// No route for the URI (a wrong account id in the base URL).
    pub const NO_ROUTE: u32 = 7003;
    /// The global REST rate limit (1,200 requests per 5 minutes).
    pub const RATE_LIMITED: u32 = 971;
    /// KV: too many requests.
    pub const TOO_MANY_REQUESTS: u32 = 10022;
    /// KV: too many bulk requests.
    pub const TOO_MANY_BULK_REQUESTS: u32 = 10046;
}

/// What went wrong with a KV call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Worth retrying later: HTTP 429 or 5xx, a rate-limit code, or no
    /// response at all (`status` is `None`).
    #[error("cloudflare kv temporarily unavailable ({}): {message}{}", status_text(*status), wait_text(*retry_after))]
    Transient {
        /// The HTTP status, `None` for a transport failure.
        status: Option<u16>,
        /// How long the server asked callers to wait (`Retry-After`).
        retry_after: Option<Duration>,
        /// What the server or transport said.
        message: String,
    },
    /// The credentials or ids are wrong; retrying will not help.
    #[error("cloudflare kv refused the request (HTTP {status}{}): {message}; check the variable {hint:?}", code_text(*code))]
    Auth {
        /// The HTTP status.
        status: u16,
        /// Cloudflare's error code, when the body had one.
        code: Option<u32>,
        /// Cloudflare's message.
        message: String,
        /// The Spin variable to fix (see [`hint`]).
        hint: &'static str,
    },
    /// Refused before sending: a key or value outside Cloudflare's limits,
    /// or a bad client setting.
    #[error("invalid kv request: {0}")]
    Invalid(String),
    /// Any other answer from the API.
    #[error("cloudflare kv error (HTTP {status}{}): {message}", code_text(*code))]
    Api {
        /// The HTTP status.
        status: u16,
        /// Cloudflare's error code, when the body had one.
        code: Option<u32>,
        /// Cloudflare's message, or the start of a non-JSON body.
        message: String,
    },
    /// A bulk write or delete still reported these keys as unsuccessful
    /// after the bounded retries; the other keys were applied.
    #[error("cloudflare kv left {} key(s) unapplied after retrying, first {:?}", unsuccessful_keys.len(), unsuccessful_keys.first())]
    Incomplete {
        /// The keys Cloudflare did not apply.
        unsuccessful_keys: Vec<String>,
    },
}

fn status_text(status: Option<u16>) -> String {
    status.map_or_else(|| "no response".to_owned(), |s| format!("HTTP {s}"))
}

fn wait_text(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |d| {
        format!("; retry after {}s", d.as_secs_f64())
    })
}

fn code_text(code: Option<u32>) -> String {
    code.map_or_else(String::new, |c| format!(", code {c}"))
}

impl Error {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. } | Error::Incomplete { .. })
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Replaces every occurrence of `secret` in the messages, so a server or
    /// transport that echoes the token cannot leak it into logs.
    pub(crate) fn redact(mut self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        match &mut self {
            Error::Transient { message, .. }
            | Error::Auth { message, .. }
            | Error::Api { message, .. }
            | Error::Invalid(message) => {
                if message.contains(secret) {
                    *message = message.replace(secret, "[redacted]");
                }
            }
            Error::Incomplete { .. } => {}
        }
        self
    }
}

/// Maps a non-successful answer (any status outside 2xx, or a 2xx whose
/// envelope says `success: false`) to an [`Error`]. `now` dates `Retry-After`.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8], now: SystemTime) -> Error {
    let envelope = Envelope::<Value>::parse(body);
    let code = envelope.as_ref().and_then(Envelope::code);
    let fallback = body_snippet(body, status);
    let message = envelope.map_or_else(|| fallback.clone(), |e| e.error_text(&fallback));
    let rate_limited = matches!(
        code,
        Some(code::RATE_LIMITED | code::TOO_MANY_REQUESTS | code::TOO_MANY_BULK_REQUESTS)
    );
    if status == 429 || status >= 500 || rate_limited {
        return Error::Transient {
            status: Some(status),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
            message,
        };
    }
    let hint = match code {
        Some(code::MALFORMED_NAMESPACE | code::NAMESPACE_NOT_FOUND) => Some(hint::NAMESPACE_ID),
        Some(code::NO_ROUTE) => Some(hint::ACCOUNT_ID),
        Some(code::NO_PERMISSION) => Some(hint::API_TOKEN),
        // 10000 is also miniflare's catch-all, so it means auth only with 401/403.
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
}

/// The start of a body that is not an envelope, for the error message.
fn body_snippet(body: &[u8], status: u16) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("HTTP {status} with an empty body");
    }
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Parses `Retry-After`: delay seconds (`"120"`) or an HTTP-date, which is
/// turned into the time left from `now` (zero once past). Anything else is
/// `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: u32, message: &str) -> Vec<u8> {
        serde_json::json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn retry_after_forms() {
        // 2015-10-21T07:28:00Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("2", Some(2)),
            (" 300 ", Some(300)),
            ("Wed, 21 Oct 2015 07:28:30 GMT", Some(30)),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Some(0)),
            ("Wednesday, 21-Oct-15 07:29:00 GMT", Some(60)),
            ("Wed Oct 21 07:28:05 2015", Some(5)),
            ("-1", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                want.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn status_and_code_mapping() {
        let now = SystemTime::UNIX_EPOCH;
        type Check = fn(&Error) -> bool;
        let cases: &[(u16, Option<u32>, Check)] = &[
            (429, Some(971), |e| {
                matches!(
                    e,
                    Error::Transient {
                        status: Some(429),
                        ..
                    }
                )
            }),
            (500, Some(10000), |e| e.is_transient()),
            (502, None, |e| e.is_transient()),
            (503, Some(10001), |e| e.is_transient()),
            // Throttling codes are transient whatever the status.
            (400, Some(10022), |e| e.is_transient()),
            (400, Some(10046), |e| e.is_transient()),
            (401, None, |e| {
                matches!(
                    e,
                    Error::Auth {
                        hint: hint::API_TOKEN,
                        status: 401,
                        ..
                    }
                )
            }),
            (403, Some(10000), |e| {
                matches!(
                    e,
                    Error::Auth {
                        hint: hint::API_TOKEN,
                        code: Some(10000),
                        ..
                    }
                )
            }),
            (403, Some(10037), |e| {
                matches!(
                    e,
                    Error::Auth {
                        hint: hint::API_TOKEN,
                        ..
                    }
                )
            }),
            (404, Some(10013), |e| {
                matches!(
                    e,
                    Error::Auth {
                        hint: hint::NAMESPACE_ID,
                        ..
                    }
                )
            }),
            (400, Some(10011), |e| {
                matches!(
                    e,
                    Error::Auth {
                        hint: hint::NAMESPACE_ID,
                        ..
                    }
                )
            }),
            (404, Some(7003), |e| {
                matches!(
                    e,
                    Error::Auth {
                        hint: hint::ACCOUNT_ID,
                        ..
                    }
                )
            }),
            (400, Some(10001), |e| {
                matches!(
                    e,
                    Error::Api {
                        status: 400,
                        code: Some(10001),
                        ..
                    }
                )
            }),
            (414, Some(10000), |e| {
                // 10000 with a non-auth status is miniflare's catch-all.
                matches!(e, Error::Api { status: 414, .. })
            }),
            (404, Some(10009), |e| {
                matches!(
                    e,
                    Error::Api {
                        code: Some(10009),
                        ..
                    }
                )
            }),
            (400, Some(10048), |e| !e.is_transient()),
        ];
        for (status, code, check) in cases {
            let b = code.map(|c| body(c, "msg")).unwrap_or_default();
            let err = classify(*status, None, &b, now);
            assert!(check(&err), "{status} {code:?} gave {err:?}");
        }
    }

    #[test]
    fn non_envelope_bodies_keep_their_text() {
        let err = classify(404, None, b"404 Not Found", SystemTime::UNIX_EPOCH);
        assert_eq!(
            err,
            Error::Api {
                status: 404,
                code: None,
                message: "404 Not Found".to_owned()
            }
        );
        let err = classify(403, None, b"Invalid Host header", SystemTime::UNIX_EPOCH);
        assert!(matches!(err, Error::Auth { code: None, .. }));
        let err = classify(500, None, b"", SystemTime::UNIX_EPOCH);
        assert!(err.to_string().contains("empty body"), "{err}");
        let long = "é".repeat(300);
        let err = classify(400, None, long.as_bytes(), SystemTime::UNIX_EPOCH);
        assert!(matches!(err, Error::Api { ref message, .. } if message.len() <= 200));
    }

    #[test]
    fn transient_carries_retry_after() {
        let err = classify(
            429,
            Some("7"),
            &body(971, "slow down"),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(err.to_string().contains("retry after 7s"), "{err}");
        assert!(err.to_string().contains("slow down (code 971)"), "{err}");
    }

    #[test]
    fn messages_are_redacted() {
        let err = classify(
            403,
            None,
            &body(10000, "bad token sekret123"),
            SystemTime::UNIX_EPOCH,
        )
        .redact("sekret123");
        let text = err.to_string();
        assert!(!text.contains("sekret123"), "{text}");
        assert!(text.contains("cf_api_token"), "{text}");
    }
}
