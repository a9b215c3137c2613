//! Fault rules posted to `/__proxy/faults`, and which one a request meets.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// The JSON body of `POST /__proxy/faults`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultSpec {
    /// Answer with this status instead of forwarding.
    pub status: Option<u16>,
    /// `Retry-After` value for `status`: seconds (number) or an HTTP-date (string).
    pub retry_after: Option<Value>,
    /// Cloudflare error code in the answer's envelope (default: 971 for 429,
    /// 10000 otherwise).
    pub code: Option<u32>,
    /// Error message in the answer's envelope.
    pub message: Option<String>,
    /// Close the connection without answering.
    pub drop: Option<bool>,
    /// Delay before forwarding (or before the fault).
    pub latency_ms: Option<u64>,
    /// How many matching requests the rule applies to; forever when absent.
    pub count: Option<u64>,
    /// Only requests whose path contains this substring.
    pub path: Option<String>,
    /// Only requests with this method (`PUT`, `POST`, …).
    pub method: Option<String>,
    /// Remove every rule.
    pub clear: Option<bool>,
}

/// What a faulted request gets instead of the upstream's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// An error answer.
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After` header value.
        retry_after: Option<String>,
        /// The JSON body.
        body: String,
    },
    /// No answer: the connection is closed.
    Drop,
}

#[derive(Debug)]
struct Rule {
    path: Option<String>,
    method: Option<String>,
    remaining: Option<u64>,
    latency: Duration,
    action: Option<Action>,
}

impl Rule {
    fn matches(&self, method: Option<&str>, path: &str) -> bool {
        self.remaining != Some(0)
            && self.path.as_deref().is_none_or(|p| path.contains(p))
            && self
                .method
                .as_deref()
                .is_none_or(|m| method.is_some_and(|x| x.eq_ignore_ascii_case(m)))
    }
}

/// What happens to one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Wait this long first.
    pub delay: Duration,
    /// Then do this instead of forwarding.
    pub action: Option<Action>,
}

/// The live rules, oldest first.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<Rule>,
}

impl Faults {
    /// Applies a posted spec: adds a rule or clears them all.
    pub fn apply(&mut self, spec: FaultSpec) -> Result<(), String> {
        if spec.clear == Some(true) {
            self.rules.clear();
            return Ok(());
        }
        let drop = spec.drop == Some(true);
        let has_retry_after = spec.retry_after.is_some();
        let action = match (spec.status, drop) {
            (Some(_), true) => {
                return Err("give either \"status\" or \"drop\", not both".to_owned());
            }
            (Some(status), false) => {
                if !(100..=599).contains(&status) {
                    return Err(format!("status {status} is not an HTTP status"));
                }
                let retry_after = match spec.retry_after {
                    None => None,
                    Some(Value::Number(n)) => Some(n.to_string()),
                    Some(Value::String(s)) => Some(s),
                    Some(other) => {
                        return Err(format!("retryAfter {other} must be a number or a string"));
                    }
                };
                let code = spec.code.unwrap_or(if status == 429 { 971 } else { 10000 });
                let message = spec
                    .message
                    .unwrap_or_else(|| format!("injected by cf-fault-proxy: HTTP {status}"));
                let body = serde_json::json!({
                    "success": false,
                    "errors": [{"code": code, "message": message}],
                    "messages": [],
                    "result": null,
                })
                .to_string();
                Some(Action::Status {
                    status,
                    retry_after,
                    body,
                })
            }
            (None, true) => Some(Action::Drop),
            (None, false) => None,
        };
        if action.is_none() && spec.latency_ms.is_none() {
            return Err(
                "a fault needs \"status\", \"drop\", \"latencyMs\" or \"clear\"".to_owned(),
            );
        }
        if has_retry_after && !matches!(action, Some(Action::Status { .. })) {
            return Err("\"retryAfter\" goes with \"status\"".to_owned());
        }
        self.rules.push(Rule {
            path: spec.path,
            method: spec.method,
            remaining: spec.count,
            latency: Duration::from_millis(spec.latency_ms.unwrap_or(0)),
            action,
        });
        Ok(())
    }

    /// Picks, for a request to `path`, the oldest live matching fault rule
    /// and the oldest live matching latency-only rule (each independently,
    /// so a standing latency does not hide a later fault), and spends one
    /// use of each.
    pub fn plan(&mut self, path: &str) -> Plan {
        self.plan_for(None, path)
    }

    /// [`Faults::plan`] for a request with `method`: rules with a method
    /// filter apply only to requests with that method.
    pub fn plan_for(&mut self, method: Option<&str>, path: &str) -> Plan {
        let mut plan = Plan::default();
        let fault = self
            .rules
            .iter()
            .position(|r| r.action.is_some() && r.matches(method, path));
        let slow = self
            .rules
            .iter()
            .position(|r| r.action.is_none() && r.matches(method, path));
        for i in [fault, slow].into_iter().flatten() {
            let rule = &mut self.rules[i];
            plan.delay += rule.latency;
            if rule.action.is_some() {
                plan.action.clone_from(&rule.action);
            }
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
        }
        self.rules.retain(|r| r.remaining != Some(0));
        plan
    }

    /// How many rules are live.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is live.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FaultSpec {
        serde_json::from_str(json).expect("spec")
    }

    #[test]
    fn counted_status_then_forward() {
        let mut f = Faults::default();
        f.apply(spec(r#"{"status":429,"retryAfter":2,"count":2}"#))
            .expect("apply");
        for _ in 0..2 {
            let plan = f.plan("/x");
            assert!(
                matches!(plan.action, Some(Action::Status { status: 429, retry_after: Some(ref r), ref body }) if r == "2" && body.contains("971"))
            );
        }
        assert_eq!(f.plan("/x"), Plan::default());
        assert!(f.is_empty());
    }

    #[test]
    fn latency_and_faults_apply_independently() {
        let mut f = Faults::default();
        f.apply(spec(r#"{"latencyMs":50}"#)).expect("latency");
        f.apply(spec(r#"{"drop":true,"count":1,"path":"/values/"}"#))
            .expect("drop");
        let plan = f.plan("/ns/keys");
        assert_eq!((plan.delay, plan.action), (Duration::from_millis(50), None));
        let plan = f.plan("/ns/values/k");
        assert_eq!(
            (plan.delay, plan.action),
            (Duration::from_millis(50), Some(Action::Drop))
        );
        assert_eq!(f.plan("/ns/values/k").action, None);
        assert_eq!(f.len(), 1);
        f.apply(spec(r#"{"clear":true}"#)).expect("clear");
        assert_eq!(f.plan("/x"), Plan::default());
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut f = Faults::default();
        for bad in [
            r#"{}"#,
            r#"{"status":42}"#,
            r#"{"status":500,"drop":true}"#,
            r#"{"latencyMs":5,"retryAfter":1}"#,
            r#"{"status":429,"retryAfter":[1]}"#,
        ] {
            assert!(f.apply(spec(bad)).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<FaultSpec>(r#"{"statuss":500}"#).is_err());
        assert!(f.is_empty());
    }
}
