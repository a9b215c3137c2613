//! The manifest's `[[trigger.nats]]` entries, checked and turned into the
//! subscriptions the listener opens (core NATS, or JetStream).

use crate::config::{ConfigError, MAX_IN_FLIGHT, TriggerConfig, validate_subject};

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
    /// JetStream mode, when the entry names a stream.
    pub jetstream: Option<crate::jetstream::Plan>,
}

/// Default [`Subscription::handler_timeout`], in milliseconds.
pub const DEFAULT_HANDLER_TIMEOUT_MS: u64 = 30_000;
/// Allowed `handler_timeout_ms` values.
const HANDLER_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

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
        let jetstream = crate::jetstream::plan(e, timeout_ms).map_err(at)?;
        let sub = Subscription {
            component: e.component.clone(),
            subject: e.subject.clone(),
            queue_group,
            max_in_flight,
            handler_timeout: std::time::Duration::from_millis(timeout_ms),
            jetstream,
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
    use crate::config::tests::entry;

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
}
