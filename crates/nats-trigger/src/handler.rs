//! What both modes share: the message and handler types, the call with its
//! deadline, the counts, and the log line.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::HANDLER_TIMEOUT_HEADER;
use crate::plan::Subscription;

/// One message, as the handler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Subject it was published on.
    pub subject: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Headers, in order; a repeated header appears once per value.
    pub headers: Vec<(String, String)>,
    /// Where the publisher waits for an answer (`nats request`).
    pub reply: Option<String>,
}

/// A message's headers as (name, value) pairs, a repeated name once per value.
pub(crate) fn header_pairs(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
    headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.to_string()))
        })
        .collect()
}

/// What a handler returns: `Err` carries the reason, sent back to requesters.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Handles one message for one component.
pub trait Handler: Send + Sync + 'static {
    /// Runs the component for `msg`.
    fn handle(&self, component: &str, msg: Message) -> HandlerFuture;
}

impl<F> Handler for F
where
    F: Fn(&str, Message) -> HandlerFuture + Send + Sync + 'static,
{
    fn handle(&self, component: &str, msg: Message) -> HandlerFuture {
        self(component, msg)
    }
}

/// One operator log line on stderr, prefixed `trigger-nats:`.
pub fn log(line: &str) {
    eprintln!("trigger-nats: {line}");
}

/// The listener's counts, shared by its subscriptions.
#[derive(Clone)]
pub(crate) struct Counters {
    pub(crate) handled: Arc<AtomicU64>,
    pub(crate) failed: Arc<AtomicU64>,
}

impl Counters {
    /// Counts one outcome.
    pub(crate) fn count(&self, result: &Result<(), String>) {
        let counter = if result.is_ok() {
            &self.handled
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// Calls the handler; past the subscription's timeout the call is
/// cancelled (its future dropped, which discards the component instance)
/// and the handler is called once more with [`HANDLER_TIMEOUT_HEADER`].
pub(crate) async fn call_with_deadline(
    handler: &dyn Handler,
    sub: &Subscription,
    message: Message,
) -> Result<(), String> {
    let limit = sub.handler_timeout;
    let component = &sub.component;
    let first = handler.handle(component, message.clone());
    match tokio::time::timeout(limit, first).await {
        Ok(result) => result,
        Err(_) => {
            let ms = limit.as_millis();
            log(&format!(
                "{component}: handler ran past {ms} ms on {}; cancelled, calling it again with {HANDLER_TIMEOUT_HEADER}",
                message.subject
            ));
            let mut again = message;
            again
                .headers
                .push((HANDLER_TIMEOUT_HEADER.to_owned(), ms.to_string()));
            tokio::time::timeout(limit, handler.handle(component, again))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "handler ran past {ms} ms twice; the message is not recorded"
                    ))
                })
        }
    }
}
