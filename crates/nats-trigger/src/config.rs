//! Manifest configuration: `[application.trigger.nats]` and `[[trigger.nats]]`.

use serde::Deserialize;

/// Server used when the manifest names none.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Most messages one subscription may handle at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// `[application.trigger.nats]`: how to reach the server. String values may
/// hold `{{ variable }}` expressions; the plugin resolves them first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerMetadata {
    /// Server URL, or several separated by commas. Default `nats://127.0.0.1:4222`.
    #[serde(default)]
    pub url: Option<String>,
    /// User name; needs `password`.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for `user`.
    #[serde(default)]
    pub password: Option<String>,
    /// Authentication token.
    #[serde(default)]
    pub token: Option<String>,
    /// Path of a `.creds` file (JWT + NKey seed).
    #[serde(default)]
    pub creds_file: Option<String>,
}

/// One `[[trigger.nats]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// The component that handles the messages.
    pub component: String,
    /// Subject to subscribe to; `*` and `>` wildcards allowed.
    pub subject: String,
    /// Queue group: instances in the same group share the messages, each
    /// message goes to one of them.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// Messages handled at once (default 1: in order).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Longest a handler may run, in milliseconds (default 30,000). Past it
    /// the call is cancelled and the component is called once more with the
    /// header [`crate::HANDLER_TIMEOUT_HEADER`], so it can park the message
    /// without the dependency that hung.
    #[serde(default)]
    pub handler_timeout_ms: Option<u64>,
}

/// How to authenticate, at most one way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No authentication.
    None,
    /// User and password.
    UserPassword(String, String),
    /// Token.
    Token(String),
    /// A `.creds` file.
    CredsFile(String),
}

/// A configuration mistake, named so it can be fixed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("trigger-nats configuration: {0}")]
pub struct ConfigError(pub String);

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl TriggerMetadata {
    /// The server URL(s).
    pub fn url(&self) -> &str {
        non_empty(&self.url).unwrap_or(DEFAULT_URL)
    }

    /// The one way to authenticate, or an error when settings clash.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let user = non_empty(&self.user);
        let password = non_empty(&self.password);
        let token = non_empty(&self.token);
        let creds = non_empty(&self.creds_file);
        let kinds = [
            user.is_some() || password.is_some(),
            token.is_some(),
            creds.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ConfigError(
                "set only one of user + password, token or creds_file in [application.trigger.nats]".into(),
            ));
        }
        Ok(match (user, password, token, creds) {
            (Some(u), Some(p), _, _) => Credentials::UserPassword(u.into(), p.into()),
            (Some(_), None, _, _) => {
                return Err(ConfigError("user is set but password is not".into()));
            }
            (None, Some(_), _, _) => {
                return Err(ConfigError("password is set but user is not".into()));
            }
            (_, _, Some(t), _) => Credentials::Token(t.into()),
            (_, _, _, Some(c)) => Credentials::CredsFile(c.into()),
            _ => Credentials::None,
        })
    }
}

/// One subscription the listener will open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Component to call.
    pub component: String,
    /// Subject (possibly with wildcards).
    pub subject: String,
    /// Queue group, if any.
    pub queue_group: Option<String>,
    /// Messages handled at once.
    pub max_in_flight: usize,
    /// Longest a handler may run.
    pub handler_timeout: std::time::Duration,
}

/// Default [`Subscription::handler_timeout`], in milliseconds.
pub const DEFAULT_HANDLER_TIMEOUT_MS: u64 = 30_000;
/// Allowed `handler_timeout_ms` values.
const HANDLER_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// Checks a subscription subject: dot-separated non-empty tokens without
/// whitespace; `*` only as a whole token; `>` only as the whole last token.
pub fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("subject must not be empty".into());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!("subject {subject:?} has an empty token"));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(format!("subject {subject:?} contains whitespace"));
        }
        if t.contains('*') && *t != "*" {
            return Err(format!("subject {subject:?}: '*' must be a whole token"));
        }
        if t.contains('>') && (*t != ">" || i + 1 != tokens.len()) {
            return Err(format!(
                "subject {subject:?}: '>' must be the whole last token"
            ));
        }
    }
    Ok(())
}

/// Turns the manifest's entries into subscriptions, checking each.
pub fn plan(entries: &[TriggerConfig]) -> Result<Vec<Subscription>, ConfigError> {
    let mut subs: Vec<Subscription> = Vec::with_capacity(entries.len());
    for e in entries {
        let at = |msg: String| {
            ConfigError(format!(
                "[[trigger.nats]] for component {:?}: {msg}",
                e.component
            ))
        };
        if e.component.trim().is_empty() {
            return Err(ConfigError(
                "[[trigger.nats]] entry without a component".into(),
            ));
        }
        validate_subject(&e.subject).map_err(at)?;
        let queue_group = match e.queue_group.as_deref() {
            None => None,
            Some(q) if q.is_empty() || q.chars().any(char::is_whitespace) => {
                return Err(at(format!(
                    "queue_group {q:?} must be non-empty and without whitespace"
                )));
            }
            Some(q) => Some(q.to_owned()),
        };
        let max_in_flight = e.max_in_flight.unwrap_or(1);
        if !(1..=MAX_IN_FLIGHT).contains(&max_in_flight) {
            return Err(at(format!(
                "max_in_flight must be between 1 and {MAX_IN_FLIGHT} (got {max_in_flight})"
            )));
        }
        let timeout_ms = e.handler_timeout_ms.unwrap_or(DEFAULT_HANDLER_TIMEOUT_MS);
        if !HANDLER_TIMEOUT_MS.contains(&timeout_ms) {
            return Err(at(format!(
                "handler_timeout_ms must be between {} and {} (got {timeout_ms})",
                HANDLER_TIMEOUT_MS.start(),
                HANDLER_TIMEOUT_MS.end()
            )));
        }
        let sub = Subscription {
            component: e.component.clone(),
            subject: e.subject.clone(),
            queue_group,
            max_in_flight,
            handler_timeout: std::time::Duration::from_millis(timeout_ms),
        };
        if subs.iter().any(|s| {
            s.component == sub.component
                && s.subject == sub.subject
                && s.queue_group == sub.queue_group
        }) {
            return Err(at(format!("subject {:?} is listed twice", sub.subject)));
        }
        subs.push(sub);
    }
    Ok(subs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(subject: &str) -> TriggerConfig {
        TriggerConfig {
            component: "writer".into(),
            subject: subject.into(),
            queue_group: None,
            max_in_flight: None,
            handler_timeout_ms: None,
        }
    }

    #[test]
    fn subjects() {
        for ok in ["tasks.created", "tasks.*", "tasks.>", ">", "*.x.*", "a"] {
            assert_eq!(validate_subject(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("tasks.", "empty token"),
            ("a..b", "empty token"),
            ("a b", "whitespace"),
            ("ta*", "whole token"),
            ("a.>.b", "last token"),
            ("a>", "last token"),
        ] {
            let err = validate_subject(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn plan_defaults_and_checks() -> Result<(), ConfigError> {
        let subs = plan(&[entry("tasks.*")])?;
        assert_eq!(subs[0].max_in_flight, 1);
        assert_eq!(subs[0].queue_group, None);
        let bad = |e: TriggerConfig| plan(&[e]).expect_err("invalid").0;
        assert!(
            bad(TriggerConfig {
                max_in_flight: Some(0),
                ..entry("a")
            })
            .contains("max_in_flight must be between 1 and 1024 (got 0)")
        );
        assert!(
            bad(TriggerConfig {
                queue_group: Some("a b".into()),
                ..entry("a")
            })
            .contains("queue_group")
        );
        assert!(bad(entry("a..b")).contains("component \"writer\""));
        assert!(
            plan(&[entry("a"), entry("a")])
                .expect_err("dup")
                .0
                .contains("listed twice")
        );
        Ok(())
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = toml_like(r#"{"component":"w","subject":"a","queue":"x"}"#);
        assert!(err.contains("unknown field `queue`"), "{err}");
        let err = serde_json::from_str::<TriggerMetadata>(r#"{"address":"nats://x"}"#)
            .map(|_| ())
            .expect_err("unknown");
        assert!(err.to_string().contains("unknown field `address`"), "{err}");
    }

    fn toml_like(json: &str) -> String {
        serde_json::from_str::<TriggerConfig>(json)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn credentials_are_one_kind_at_most() {
        let m = |user: Option<&str>,
                 password: Option<&str>,
                 token: Option<&str>,
                 creds: Option<&str>| TriggerMetadata {
            url: None,
            user: user.map(Into::into),
            password: password.map(Into::into),
            token: token.map(Into::into),
            creds_file: creds.map(Into::into),
        };
        assert_eq!(
            m(None, None, None, None).credentials(),
            Ok(Credentials::None)
        );
        assert_eq!(
            m(Some("u"), Some("p"), None, None).credentials(),
            Ok(Credentials::UserPassword("u".into(), "p".into()))
        );
        assert_eq!(
            m(None, None, Some("t"), None).credentials(),
            Ok(Credentials::Token("t".into()))
        );
        assert_eq!(
            m(None, None, None, Some("/x.creds")).credentials(),
            Ok(Credentials::CredsFile("/x.creds".into()))
        );
        // Empty strings (an unset variable) count as absent.
        assert_eq!(
            m(Some(""), Some(""), Some(" "), None).credentials(),
            Ok(Credentials::None)
        );
        assert!(m(Some("u"), None, None, None).credentials().is_err());
        assert!(m(None, Some("p"), None, None).credentials().is_err());
        assert!(
            m(Some("u"), Some("p"), Some("t"), None)
                .credentials()
                .expect_err("clash")
                .0
                .contains("only one of")
        );
        assert_eq!(m(None, None, None, None).url(), DEFAULT_URL);
    }
}
