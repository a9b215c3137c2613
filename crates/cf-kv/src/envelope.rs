//! The v4 JSON envelope every KV endpoint answers with (except a successful
//! value read, which is the raw bytes).

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// One entry of `errors` or `messages`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// Cloudflare's numeric code (1000 and up); absent in some malformed bodies.
    #[serde(default)]
    pub code: Option<u32>,
    /// The human-readable text.
    #[serde(default)]
    pub message: String,
}

/// `result_info` of the list endpoint.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ResultInfo {
    /// How many entries this page holds.
    #[serde(default)]
    pub count: Option<u64>,
    /// The cursor for the next page; empty or absent on the last one.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `{success, errors, messages, result, result_info}`. Fields missing from a
/// body default, so both the success and failure shapes parse.
#[derive(Clone, Debug, Deserialize)]
pub struct Envelope<T> {
    /// Whether the call succeeded.
    #[serde(default)]
    pub success: bool,
    /// Why it failed.
    #[serde(default)]
    pub errors: Vec<Message>,
    /// Informational messages.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// The payload; `null` on failure and for calls with nothing to return.
    #[serde(default = "none")]
    pub result: Option<T>,
    /// Paging information (list keys only).
    #[serde(default)]
    pub result_info: Option<ResultInfo>,
}

// `#[serde(default)]` on `Option<T>` would require `T: Default`.
fn none<T>() -> Option<T> {
    None
}

impl<T: DeserializeOwned> Envelope<T> {
    /// Parses a body, or `None` when it is not an envelope (a text 404 from a
    /// router, an HTML error page from a proxy).
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

impl<T> Envelope<T> {
    /// The first error's code.
    pub fn code(&self) -> Option<u32> {
        self.errors.first().and_then(|m| m.code)
    }

    /// The errors' texts joined, or `fallback` when there are none.
    pub fn error_text(&self, fallback: &str) -> String {
        if self.errors.is_empty() {
            return fallback.to_owned();
        }
        self.errors
            .iter()
            .map(|m| match m.code {
                Some(code) => format!("{} (code {code})", m.message),
                None => m.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn parses_the_failure_shape() {
        let body = br#"{"result":null,"success":false,"errors":[{"code":10009,"message":"get: 'key not found'"}],"messages":[]}"#;
        let env = Envelope::<Value>::parse(body).expect("envelope");
        assert!(!env.success);
        assert_eq!(env.code(), Some(10009));
        assert!(env.result.is_none());
        assert_eq!(
            env.error_text("x"),
            "get: 'key not found' (code 10009)".to_owned()
        );
    }

    #[test]
    fn parses_list_paging() {
        let body = br#"{"success":true,"errors":[],"messages":[],"result":[{"name":"a"}],"result_info":{"count":1,"cursor":"YQ=="}}"#;
        let env = Envelope::<Vec<Value>>::parse(body).expect("envelope");
        assert!(env.success);
        assert_eq!(env.result.map(|r| r.len()), Some(1));
        let info = env.result_info.expect("result_info");
        assert_eq!(info.count, Some(1));
        assert_eq!(info.cursor.as_deref(), Some("YQ=="));
    }

    #[test]
    fn tolerates_missing_fields_and_extra_ones() {
        let body = br#"{"success":true,"result":{},"errors":[{"code":1,"message":"m","documentation_url":"u"}]}"#;
        let env = Envelope::<Value>::parse(body).expect("envelope");
        assert!(env.messages.is_empty());
        assert_eq!(env.code(), Some(1));
        assert!(env.result_info.is_none());
    }

    #[test]
    fn non_json_is_not_an_envelope() {
        assert!(Envelope::<Value>::parse(b"404 Not Found").is_none());
        assert!(Envelope::<Value>::parse(b"").is_none());
    }

    #[test]
    fn several_errors_are_all_reported() {
        let env = Envelope::<Value>::parse(
            br#"{"success":false,"errors":[{"code":1,"message":"a"},{"message":"b"}]}"#,
        )
        .expect("envelope");
        assert_eq!(env.error_text("x"), "a (code 1); b");
        let empty = Envelope::<Value>::parse(br#"{"success":false}"#).expect("envelope");
        assert_eq!(empty.error_text("HTTP 400"), "HTTP 400");
    }
}
