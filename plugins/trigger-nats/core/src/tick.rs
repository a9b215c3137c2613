//! Calls a component with no message on a schedule (an entry's `tick_ms`),
//! for work that must go on when no message comes: a writer replays what a
//! store outage parked as soon as the store answers again, instead of
//! waiting for the next event of those tasks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::handler::{Handler, log};
use crate::plan::Subscription;

/// One component's schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ticker {
    /// The component called.
    pub(crate) component: String,
    /// Time from the end of one call to the start of the next.
    pub(crate) every: Duration,
    /// Longest one call may run before it is cancelled.
    pub(crate) limit: Duration,
}

/// One ticker per component that an entry with `tick_ms` names: the
/// partitions of an entry, and several entries of one component, share it,
/// with the shortest period and the shortest handler timeout among them.
pub(crate) fn tickers(subs: &[Subscription]) -> Vec<Ticker> {
    let mut out: Vec<Ticker> = Vec::new();
    for sub in subs {
        let Some(every) = sub.tick else { continue };
        match out.iter_mut().find(|t| t.component == sub.component) {
            Some(t) => {
                t.every = t.every.min(every);
                t.limit = t.limit.min(sub.handler_timeout);
            }
            None => out.push(Ticker {
                component: sub.component.clone(),
                every,
                limit: sub.handler_timeout,
            }),
        }
    }
    out
}

/// Why a ticker cannot run: its component is not called with batches.
pub(crate) fn refused(handler: &dyn Handler, tickers: &[Ticker]) -> Option<String> {
    tickers
        .iter()
        .find(|t| !handler.takes_batches(&t.component))
        .map(|t| {
            format!(
                "component {:?} has tick_ms but does not export handle-batch: only a \
                 handle-batch component can be called with no message (an empty batch)",
                t.component
            )
        })
}

/// Calls the component every `ticker.every` until `stop`: one call at a
/// time (the wait starts when a call ends, so a slow call delays the next
/// instead of piling calls up), each cancelled past `ticker.limit`. A
/// failing call is logged when the calls start failing and when they work
/// again, not once per tick.
pub(crate) async fn serve(
    handler: Arc<dyn Handler>,
    ticker: Ticker,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = tokio::time::sleep(ticker.every) => {}
        }
        let call = handler.tick(&ticker.component);
        let outcome = match tokio::time::timeout(ticker.limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "ran past {} ms; cancelled",
                ticker.limit.as_millis()
            )),
        };
        match outcome {
            Err(e) if !failing => {
                failing = true;
                log(&format!(
                    "{}: a tick call (no message) failed: {e}; calling it again every {} ms",
                    ticker.component,
                    ticker.every.as_millis()
                ));
            }
            Ok(()) if failing => {
                failing = false;
                log(&format!("{}: tick calls work again", ticker.component));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TriggerConfig;

    fn entry(fields: serde_json::Value) -> TriggerConfig {
        let mut e = serde_json::json!({"component": "writer", "subject": "tasks.>"});
        if let (Some(e), Some(f)) = (e.as_object_mut(), fields.as_object()) {
            e.extend(f.clone());
        }
        serde_json::from_value(e).expect("an entry")
    }

    #[test]
    fn one_ticker_per_component_with_the_shortest_period_and_timeout() {
        let subs = crate::plan::plan(&[
            entry(
                serde_json::json!({"tick_ms": 1000, "handler_timeout_ms": 5000,
                "stream": "TASKS", "consumer": "w", "partitions": 4,
                "ordering_key": "payload:id"}),
            ),
            entry(serde_json::json!({"subject": "other.>", "tick_ms": 300,
                "handler_timeout_ms": 9000})),
            entry(serde_json::json!({"component": "quiet", "subject": "q.>"})),
        ])
        .expect("a valid plan");
        assert_eq!(subs.len(), 6, "four partitions, two more entries");
        assert_eq!(
            tickers(&subs),
            vec![Ticker {
                component: "writer".into(),
                every: Duration::from_millis(300),
                limit: Duration::from_millis(5000),
            }]
        );
    }

    #[test]
    fn tick_ms_out_of_range_is_refused_with_the_range() {
        for ms in [0, 99, 3_600_001] {
            let e = crate::plan::plan(&[entry(serde_json::json!({"tick_ms": ms}))])
                .expect_err("out of range");
            assert!(
                e.to_string()
                    .contains("tick_ms must be between 100 and 3600000"),
                "{e}"
            );
        }
    }
}
