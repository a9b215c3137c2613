//! The Spin-independent half of the `trigger-nats` plugin.
//!
//! The plugin binary (in `plugins/trigger-nats`, its own workspace because it
//! links Spin's crates) parses the manifest into [`config`] types, builds a
//! [`config::plan`], resolves variables, then hands a [`Handler`] that calls
//! the Spin component to [`listener::run`]: core NATS subscriptions, or
//! JetStream durable pull consumers ([`jetstream`], `consumer`). Everything
//! here is tested against a real `nats-server`.

#[cfg(feature = "runtime")]
mod admission;
#[cfg(feature = "runtime")]
mod arrivals;
pub mod config;
#[cfg(feature = "runtime")]
pub mod consumer;
#[cfg(feature = "runtime")]
mod handler;
#[cfg(feature = "runtime")]
mod inflight;
pub mod jetstream;
#[cfg(feature = "runtime")]
pub mod lease;
#[cfg(all(feature = "runtime", unix))]
pub mod lifecycle;
#[cfg(feature = "runtime")]
pub mod listener;
pub mod partition;
pub mod plan;
pub mod reply;
#[cfg(feature = "runtime")]
mod tick;

pub use config::{Credentials, TriggerConfig, TriggerMetadata};
#[cfg(feature = "runtime")]
pub use inflight::InFlight;
pub use plan::Subscription;

/// Prefix of the headers the plugin sets ([`HANDLER_TIMEOUT_HEADER`],
/// [`STREAM_SEQUENCE_HEADER`], [`STREAM_EPOCH_HEADER`], [`DELIVERED_HEADER`],
/// [`LEASE_HEADER`]); a publisher's headers
/// under it are dropped before a component sees the message, in both modes.
pub const RESERVED_HEADER_PREFIX: &str = "spin-nats-";

/// Header added to the second call of a component whose first call for a
/// message ran past its `handler_timeout_ms` and was cancelled; its value is
/// the timeout in milliseconds. The component should record the message
/// without the dependency that hung (the writer parks it in its outbox).
pub const HANDLER_TIMEOUT_HEADER: &str = "spin-nats-handler-timeout";

/// Header added to a message taken from a JetStream stream: its sequence
/// number in the stream (a redelivered message carries the same one).
pub const STREAM_SEQUENCE_HEADER: &str = "spin-nats-stream-sequence";

/// Header added to each message of a JetStream guest call: the Unix time in
/// milliseconds until which the message is surely this instance's. After
/// it the server may have delivered it to another instance, so a component
/// must not commit the message's effects any more (an instance paused or
/// cut off from the server past `ack_wait` learns so here; see the
/// plugin's `lease` module).
pub const LEASE_HEADER: &str = "spin-nats-lease-until-ms";

/// Header of a dead letter the plugin publishes (`dead_letter_subject`):
/// the subject the message was published on.
pub const DEAD_LETTER_SUBJECT_HEADER: &str = "spin-nats-dead-letter-subject";

/// Header of a dead letter the plugin publishes: its sequence in the stream
/// it came from.
pub const DEAD_LETTER_SEQUENCE_HEADER: &str = "spin-nats-dead-letter-sequence";

/// Header of a dead letter the plugin publishes: the component's last
/// error (one line, at most 1,024 characters).
pub const DEAD_LETTER_REASON_HEADER: &str = "spin-nats-dead-letter-reason";

/// Header added to a message taken from a JetStream stream: the stream's
/// epoch, the time it was made in Unix nanoseconds. A stream deleted and
/// made again starts its sequences again; the epoch tells the incarnations
/// apart, so a component comparing sequences compares (epoch, sequence).
pub const STREAM_EPOCH_HEADER: &str = "spin-nats-stream-epoch";

/// Header added to a message taken from a JetStream stream: how many times
/// it has been delivered (1 the first time).
pub const DELIVERED_HEADER: &str = "spin-nats-delivered";
#[cfg(feature = "runtime")]
pub use listener::{BatchFuture, Handler, HandlerFuture, Message, Stats};

/// Where a message taken from a JetStream stream stands: what the plugin
/// passes its guests (and, without the `runtime` feature, what the guest
/// SDK hands a component).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Sequence number in the stream; a redelivery carries the same one.
    pub sequence: u64,
    /// Deliveries so far, 1 the first time.
    pub delivered: u64,
    /// When the stream stored it, in Unix milliseconds.
    pub published_ms: u64,
}
