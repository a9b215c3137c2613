//! The Spin-independent half of the `trigger-nats` plugin.
//!
//! The plugin binary (in `plugins/trigger-nats`, its own workspace because it
//! links Spin's crates) parses the manifest into [`config`] types, builds a
//! [`config::plan`], resolves variables, then hands a [`Handler`] that calls
//! the Spin component to [`listener::run`]. Everything here is tested against
//! a real `nats-server`.

pub mod config;
#[cfg(feature = "runtime")]
mod inflight;
#[cfg(all(feature = "runtime", unix))]
pub mod lifecycle;
#[cfg(feature = "runtime")]
pub mod listener;
pub mod reply;

pub use config::{Credentials, Subscription, TriggerConfig, TriggerMetadata};
#[cfg(feature = "runtime")]
pub use inflight::InFlight;

/// Header added to the second call of a component whose first call for a
/// message ran past its `handler_timeout_ms` and was cancelled; its value is
/// the timeout in milliseconds. The component should record the message
/// without the dependency that hung (the writer parks it in its outbox).
pub const HANDLER_TIMEOUT_HEADER: &str = "spin-nats-handler-timeout";
#[cfg(feature = "runtime")]
pub use listener::{Handler, HandlerFuture, Message, Stats};
