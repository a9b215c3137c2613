//! What both modes share: the message and handler types, the call with its
//! deadline, the counts, and the log line.

use crate::StreamInfo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::plan::Subscription;
use crate::{HANDLER_TIMEOUT_HEADER, LEASE_HEADER, RESERVED_HEADER_PREFIX};

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
    /// Its place in the stream, when it came from a JetStream stream.
    pub stream: Option<StreamInfo>,
}

/// A message's headers as (name, value) pairs, a repeated name once per
/// value, without any the publisher set under the plugin's own prefix
/// ([`RESERVED_HEADER_PREFIX`]): those are delivery metadata only the
/// plugin may set (a forged `spin-nats-stream-sequence` would have a guest
/// skip every later event of an entity).
pub(crate) fn header_pairs(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
    headers
        .iter()
        .flat_map(|h| h.iter())
        .filter(|(name, _)| !is_reserved(name.as_ref()))
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.to_string()))
        })
        .collect()
}

/// Whether a header name is the plugin's to set.
fn is_reserved(name: &str) -> bool {
    name.get(..RESERVED_HEADER_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_HEADER_PREFIX))
}

/// What a handler returns: `Err` carries the reason, sent back to requesters.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One outcome per message of a batch, in order.
pub type BatchFuture = Pin<Box<dyn Future<Output = Vec<Result<(), String>>> + Send>>;

/// Handles messages for components.
pub trait Handler: Send + Sync + 'static {
    /// Runs the component for `msg`.
    fn handle(&self, component: &str, msg: Message) -> HandlerFuture;

    /// Whether `component` takes a whole batch per call
    /// ([`Handler::handle_batch`]); otherwise JetStream pulls are handed to
    /// [`Handler::handle`] one message at a time.
    fn takes_batches(&self, _component: &str) -> bool {
        false
    }

    /// Runs the component once for `msgs` and returns one outcome per
    /// message, in order. Only called when [`Handler::takes_batches`].
    fn handle_batch(&self, component: &str, msgs: Vec<Message>) -> BatchFuture {
        let n = msgs.len();
        let reason = format!("{component} does not take batches");
        Box::pin(async move { vec![Err(reason); n] })
    }

    /// Runs the component once with no message (an entry's `tick_ms`):
    /// `Err` when the call itself failed. Only called when
    /// [`Handler::takes_batches`].
    fn tick(&self, component: &str) -> HandlerFuture {
        let call = self.handle_batch(component, Vec::new());
        Box::pin(async move {
            match call.await.len() {
                0 => Ok(()),
                n => Err(format!("{n} outcomes for an empty batch")),
            }
        })
    }
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

/// Asked before each guest call of a JetStream delivery (`lease.rs`): the
/// Unix time in milliseconds the guest may commit until, or why the
/// messages must not be handed to it.
pub(crate) trait Gate: Sync {
    /// Opens the gate for one call.
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send + '_>>;
}

/// `msg` with the lease header for a call (replacing an earlier one).
fn leased(mut msg: Message, until_ms: u64) -> Message {
    msg.headers.retain(|(n, _)| n != LEASE_HEADER);
    msg.headers
        .push((LEASE_HEADER.to_owned(), until_ms.to_string()));
    msg
}

/// Asks `gate` (if any) for a call on `msgs`: them with the lease header,
/// or why not to call.
async fn through(gate: Option<&dyn Gate>, msgs: Vec<Message>) -> Result<Vec<Message>, String> {
    match gate {
        None => Ok(msgs),
        Some(g) => {
            let until = g.open().await?;
            Ok(msgs.into_iter().map(|m| leased(m, until)).collect())
        }
    }
}

/// Hands `batch` to the handler in order, one call per message for a
/// component that takes one at a time, else one call for all of them; each
/// call is bounded as in [`call_with_deadline`]. Returns one outcome per
/// message; a single-message component is not called past its first error
/// (the rest is marked not handled, to keep their order).
pub(crate) async fn call_batch(
    handler: &dyn Handler,
    sub: &Subscription,
    batch: Vec<Message>,
    gate: Option<&dyn Gate>,
) -> Vec<Result<(), String>> {
    if !handler.takes_batches(&sub.component) {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut failed = false;
        for msg in batch {
            let outcome = if failed {
                Err("not handled: an earlier message failed".to_owned())
            } else {
                call_with_deadline(handler, sub, msg, gate).await
            };
            failed |= outcome.is_err();
            outcomes.push(outcome);
        }
        return outcomes;
    }
    let n = batch.len();
    let limit = sub.handler_timeout;
    let component = &sub.component;
    let checked = |outcomes: Vec<Result<(), String>>| {
        if outcomes.len() == n {
            outcomes
        } else {
            let reason = format!(
                "{component} returned {} outcomes for a batch of {n}",
                outcomes.len()
            );
            log(&reason);
            vec![Err(reason); n]
        }
    };
    let first = match through(gate, batch.clone()).await {
        Ok(first) => first,
        Err(reason) => return vec![Err(reason); n],
    };
    match tokio::time::timeout(limit, handler.handle_batch(component, first)).await {
        Ok(outcomes) => checked(outcomes),
        Err(_) => {
            let ms = limit.as_millis();
            log(&format!(
                "{component}: handler ran past {ms} ms on a batch of {n}; cancelled, calling it again with {HANDLER_TIMEOUT_HEADER}"
            ));
            let again = batch
                .into_iter()
                .map(|mut m| {
                    m.headers
                        .push((HANDLER_TIMEOUT_HEADER.to_owned(), ms.to_string()));
                    m
                })
                .collect();
            let again = match through(gate, again).await {
                Ok(again) => again,
                Err(reason) => return vec![Err(reason); n],
            };
            match tokio::time::timeout(limit, handler.handle_batch(component, again)).await {
                Ok(outcomes) => checked(outcomes),
                Err(_) => vec![
                    Err(format!(
                        "handler ran past {ms} ms twice; the message is not recorded"
                    ));
                    n
                ],
            }
        }
    }
}

/// Calls the handler; past the subscription's timeout the call is
/// cancelled (its future dropped, which discards the component instance)
/// and the handler is called once more with [`HANDLER_TIMEOUT_HEADER`].
pub(crate) async fn call_with_deadline(
    handler: &dyn Handler,
    sub: &Subscription,
    message: Message,
    gate: Option<&dyn Gate>,
) -> Result<(), String> {
    let limit = sub.handler_timeout;
    let component = &sub.component;
    let message = through(gate, vec![message]).await?.remove(0);
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
            let again = through(gate, vec![again]).await?.remove(0);
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
