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
    /// An NKey seed (`SU…`), to authenticate as its user.
    #[serde(default)]
    pub nkey_seed: Option<String>,
    /// Path of a file holding an NKey seed.
    #[serde(default)]
    pub nkey_seed_file: Option<String>,
    /// PEM file of the certificate authorities to trust for the server's
    /// certificate (default: the system's).
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// PEM file of this client's certificate, for servers that verify
    /// clients (needs `tls_key_file`).
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    /// PEM file of the key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<String>,
    /// Refuse to talk to the server without TLS (implied by a `tls://` URL
    /// and by the TLS files).
    #[serde(default)]
    pub tls_required: Option<bool>,
    /// The JetStream domain to use (a leaf node's hub, say): requests go to
    /// `$JS.<domain>.API`.
    #[serde(default)]
    pub jetstream_domain: Option<String>,
    /// The JetStream API prefix to use (an account import), instead of
    /// `$JS.API`.
    #[serde(default)]
    pub api_prefix: Option<String>,
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
    /// Calls the component with no message every this many milliseconds
    /// (100-3,600,000; default: never), for work that must go on when no
    /// message comes: a writer replays what a store outage parked once the
    /// store answers again, without waiting for the next event. Only for a
    /// component exporting `handle-batch` (called with an empty batch); one
    /// such call at a time per component, bounded by `handler_timeout_ms`,
    /// and none once the trigger is stopping. See [`crate::tick`].
    #[serde(default)]
    pub tick_ms: Option<u64>,

    /// JetStream mode: the stream to consume (setting it switches the entry
    /// from core NATS to a durable pull consumer; see [`crate::jetstream`]).
    #[serde(default)]
    pub stream: Option<String>,
    /// JetStream: the durable pull consumer's name; instances with the same
    /// name share its messages.
    #[serde(default)]
    pub consumer: Option<String>,
    /// JetStream, creating the consumer: where it starts in the stream:
    /// `all` (the default: every message the stream holds), `new` (only
    /// messages published after it is made), `by_start_sequence` (from
    /// `opt_start_seq`) or `by_start_time` (from `opt_start_time`). Set, it
    /// is also checked against a consumer that exists already.
    #[serde(default)]
    pub deliver_policy: Option<String>,
    /// JetStream, with `deliver_policy = "by_start_sequence"`: the first
    /// stream sequence delivered (1 or more).
    #[serde(default)]
    pub opt_start_seq: Option<u64>,
    /// JetStream, with `deliver_policy = "by_start_time"`: the first
    /// message delivered is the first stored at or after this time (RFC
    /// 3339, e.g. `2026-12-06T20:00:00Z`).
    #[serde(default)]
    pub opt_start_time: Option<String>,
    /// JetStream: how long a delivered message may stay unacknowledged
    /// before the server redelivers it (default 60,000; more than
    /// `handler_timeout_ms`).
    #[serde(default)]
    pub ack_wait_ms: Option<u64>,
    /// JetStream: deliveries of one message before the server gives up on
    /// it (default -1: never).
    #[serde(default)]
    pub max_deliver: Option<i64>,
    /// JetStream: most messages handed to one guest call (default 100).
    #[serde(default)]
    pub batch: Option<usize>,
    /// JetStream: longest one pull waits for messages, in milliseconds
    /// (default 1,000); a stop waits for the current pull at most this long.
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    /// JetStream: unacknowledged messages the consumer allows across all
    /// instances (default `batch`: one batch in flight, which keeps each
    /// task's events in order across instances).
    #[serde(default)]
    pub max_ack_pending: Option<i64>,
    /// JetStream: subjects of the stream, to create it when it is missing
    /// (unset: a missing stream is an error).
    #[serde(default)]
    pub stream_subjects: Option<Vec<String>>,
    /// JetStream, creating the stream: `file` (default) or `memory`.
    #[serde(default)]
    pub stream_storage: Option<String>,
    /// JetStream, creating the stream: copies kept in a cluster (1-5, default 1).
    #[serde(default)]
    pub stream_replicas: Option<u32>,
    /// JetStream, creating the stream: oldest message kept, in milliseconds (default: no limit).
    #[serde(default)]
    pub stream_max_age_ms: Option<u64>,
    /// JetStream, creating the stream: most messages kept (default: no limit).
    #[serde(default)]
    pub stream_max_msgs: Option<i64>,
    /// JetStream, creating the stream: most bytes kept (default: no limit).
    #[serde(default)]
    pub stream_max_bytes: Option<i64>,
    /// JetStream: where a message goes that the component failed on
    /// `max_attempts` times in a row: published there through JetStream (a
    /// stream must store the subject) with the reason, then terminated, so
    /// the messages after it go on. Unset: a failing message is retried
    /// until it succeeds, holding back the ones after it.
    #[serde(default)]
    pub dead_letter_subject: Option<String>,
    /// JetStream: failed calls of one message before it goes to
    /// `dead_letter_subject` (default 5; needs `dead_letter_subject`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// JetStream: the stream may store subjects that no entry of this app
    /// takes (another app consumes them). Unset, the trigger refuses to
    /// start when one of the stream's subjects is outside every entry's
    /// `subject`: such messages would be stored, acknowledged to their
    /// publisher, and never handled.
    #[serde(default)]
    pub allow_unconsumed_subjects: Option<bool>,
    /// JetStream, creating the stream: how long a `Nats-Msg-Id` is
    /// remembered to drop a duplicate publish, in milliseconds (default 120,000).
    #[serde(default)]
    pub stream_duplicate_window_ms: Option<u64>,
    /// JetStream: handle messages of different keys at the same time, in up
    /// to this many partitions (1-64; default 1: one pull in flight across
    /// all instances, every message in stream order). Needs `ordering_key`.
    /// See [`crate::partition`].
    #[serde(default)]
    pub partitions: Option<u32>,
    /// JetStream, with `partitions` or `concurrency`: what a message's key
    /// is (`payload:<path>`, `subject:<n>` or `header:<name>`); the messages
    /// of one key are handled in stream order, one at a time.
    #[serde(default)]
    pub ordering_key: Option<String>,
    /// JetStream: guest calls at once per pull (1-16; default 1: one call,
    /// the pull's messages in stream order). A pull's messages are split by
    /// `ordering_key` (needed) so that each key's messages go to one call,
    /// in order. See [`crate::partition`].
    #[serde(default)]
    pub concurrency: Option<u32>,
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
    /// An NKey seed (read from `nkey_seed_file` when given that way).
    NKey(String),
}

/// TLS settings for the connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Certificate authorities to trust instead of the system's.
    pub ca_file: Option<String>,
    /// This client's certificate and key files.
    pub client: Option<(String, String)>,
    /// TLS is required.
    pub required: bool,
}

/// Where the JetStream API is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum JetStreamApi {
    /// `$JS.API`.
    #[default]
    Default,
    /// A JetStream domain: `$JS.<domain>.API`.
    Domain(String),
    /// Another prefix.
    Prefix(String),
}

/// Everything needed to connect, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The server URL(s).
    pub url: String,
    /// How to authenticate.
    pub credentials: Credentials,
    /// TLS settings.
    pub tls: Tls,
    /// Where the JetStream API is.
    pub jetstream_api: JetStreamApi,
}

/// A file a setting names, checked readable now (not in a reconnect loop).
fn readable(field: &str, path: &str) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| ConfigError(format!("{field} {path:?} cannot be read: {e}")))
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

    /// Everything needed to connect, or an error naming the settings that
    /// clash and the files that cannot be read. Secrets are never quoted.
    pub fn connection(&self) -> Result<Connection, ConfigError> {
        let credentials = self.credentials()?;
        match &credentials {
            Credentials::CredsFile(path) => readable("creds_file", path)?,
            Credentials::NKey(seed) if !seed.starts_with("SU") || seed.len() < 50 => {
                return Err(ConfigError(
                    "the NKey seed (nkey_seed or nkey_seed_file) is not a user seed: it starts with SU (nsc or nk -gen user make one)"
                        .into(),
                ));
            }
            _ => {}
        }
        let ca_file = non_empty(&self.tls_ca_file).map(str::to_owned);
        if let Some(ca) = &ca_file {
            readable("tls_ca_file", ca)?;
        }
        let client = match (
            non_empty(&self.tls_cert_file),
            non_empty(&self.tls_key_file),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                readable("tls_cert_file", cert)?;
                readable("tls_key_file", key)?;
                Some((cert.to_owned(), key.to_owned()))
            }
            (Some(_), None) => {
                return Err(ConfigError(
                    "tls_cert_file is set but tls_key_file is not".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "tls_key_file is set but tls_cert_file is not".into(),
                ));
            }
        };
        let url = self.url();
        let tls_url = url
            .split(',')
            .any(|u| u.trim().to_ascii_lowercase().starts_with("tls://"));
        if self.tls_required == Some(false) && (tls_url || ca_file.is_some() || client.is_some()) {
            return Err(ConfigError(
                "tls_required = false, but a tls:// URL or TLS files are set".into(),
            ));
        }
        let required =
            self.tls_required.unwrap_or(false) || tls_url || ca_file.is_some() || client.is_some();
        let jetstream_api = match (
            non_empty(&self.jetstream_domain),
            non_empty(&self.api_prefix),
        ) {
            (None, None) => JetStreamApi::Default,
            (Some(d), None) => {
                if d.contains(['.', '*', '>']) || d.chars().any(char::is_whitespace) {
                    return Err(ConfigError(format!(
                        "jetstream_domain {d:?} must be one subject token (no dots, wildcards or spaces)"
                    )));
                }
                JetStreamApi::Domain(d.to_owned())
            }
            (None, Some(p)) => {
                validate_subject(p).map_err(|e| ConfigError(format!("api_prefix: {e}")))?;
                if p.contains(['*', '>']) {
                    return Err(ConfigError(format!(
                        "api_prefix {p:?} must not hold wildcards"
                    )));
                }
                JetStreamApi::Prefix(p.to_owned())
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "set jetstream_domain or api_prefix, not both (a domain is the prefix $JS.<domain>.API)".into(),
                ));
            }
        };
        Ok(Connection {
            url: url.to_owned(),
            credentials,
            tls: Tls {
                ca_file,
                client,
                required,
            },
            jetstream_api,
        })
    }

    /// The one way to authenticate, or an error when settings clash.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let user = non_empty(&self.user);
        let password = non_empty(&self.password);
        let token = non_empty(&self.token);
        let creds = non_empty(&self.creds_file);
        let nkey = non_empty(&self.nkey_seed);
        let nkey_file = non_empty(&self.nkey_seed_file);
        let kinds = [
            user.is_some() || password.is_some(),
            token.is_some(),
            creds.is_some(),
            nkey.is_some(),
            nkey_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ConfigError(
                "set only one of user + password, token, creds_file, nkey_seed or nkey_seed_file in [application.trigger.nats]".into(),
            ));
        }
        if let Some(seed) = nkey {
            return Ok(Credentials::NKey(seed.to_owned()));
        }
        if let Some(path) = nkey_file {
            let seed = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("nkey_seed_file {path:?} cannot be read: {e}")))?;
            return Ok(Credentials::NKey(seed.trim().to_owned()));
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

/// Whether every subject `subject` matches (a pattern, wildcards allowed)
/// also matches `filter`: the filter takes all of it.
pub fn subject_covers(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            // `>` takes one or more tokens, whatever they are.
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some subject matches both patterns.
pub fn subjects_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(subject: &str) -> TriggerConfig {
        serde_json::from_value(serde_json::json!({"component": "writer", "subject": subject}))
            .expect("a minimal entry")
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
    fn covering_and_overlapping_subjects() {
        for (filter, subject, covers) in [
            ("tasks.>", "tasks.>", true),
            ("tasks.>", "tasks.*", true),
            ("tasks.>", "tasks.a.b", true),
            ("tasks.*", "tasks.created", true),
            ("tasks.*", "tasks.*", true),
            ("tasks.*", "tasks.>", false),
            ("tasks.*", "tasks.a.b", false),
            ("tasks.created", "tasks.*", false),
            ("tasks.created", "tasks.created", true),
            (">", "a", true),
            ("*.x", "a.x", true),
            ("*.x", "a.y", false),
            ("tasks", "tasks.>", false),
            ("tasks.>", "tasks", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.*.*", false),
        ] {
            assert_eq!(
                subject_covers(filter, subject),
                covers,
                "{filter} / {subject}"
            );
        }
        for (a, b, overlap) in [
            ("tasks.*", "tasks.created", true),
            ("tasks.*", "tasks.>", true),
            ("tasks.*", "tasks.a.b", false),
            ("tasks.>", "tasks", false),
            ("a.*", "*.b", true),
            ("a.b", "a.c", false),
            (">", "x.y.z", true),
            ("a.*.c", "a.b.>", true),
            ("a.*.c", "a.b.d", false),
        ] {
            assert_eq!(subjects_overlap(a, b), overlap, "{a} / {b}");
            assert_eq!(subjects_overlap(b, a), overlap, "{b} / {a}");
        }
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
            ..TriggerMetadata::default()
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
