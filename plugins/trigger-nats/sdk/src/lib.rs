//! Guest SDK of the `trigger-nats` Spin plugin: write a NATS-triggered
//! component as one function.
//!
//! ```no_run
//! use trigger_nats_sdk::{Error, Message, nats_component};
//!
//! #[nats_component]
//! fn handle(message: Message) -> Result<(), Error> {
//!     println!("{}: {}", message.subject, message.payload_str()?);
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! A function taking `Vec<Message>` and returning one result per message
//! exports `handle-batch` instead: the plugin then hands it a whole
//! JetStream pull per call, and, when its entry sets `tick_ms`, an empty
//! `Vec` on that schedule (answer it with an empty `Vec`). The error type
//! may be [`Error`] or anything that implements `Display` (an
//! `anyhow::Error` keeps its chain).
//!
//! The WIT is the plugin's (`plugins/trigger-nats/wit`, `spin-nats:trigger`);
//! these bindings read that one copy.

use std::fmt::Display;

/// A message's place in a JetStream stream (the plugin's own type).
pub use trigger_nats_core::StreamInfo;
pub use trigger_nats_core::{
    DELIVERED_HEADER, HANDLER_TIMEOUT_HEADER, LEASE_HEADER, STREAM_EPOCH_HEADER,
    STREAM_SEQUENCE_HEADER,
};
pub use trigger_nats_macro::nats_component;

/// One NATS message as the plugin delivers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published on (never a wildcard).
    pub subject: String,
    /// The payload, as published.
    pub payload: Vec<u8>,
    /// Headers as (name, value) pairs, in order; repeated names repeat.
    pub headers: Vec<(String, String)>,
    /// Where a requester awaits the answer (the plugin sends it).
    pub reply_to: Option<String>,
    /// Where it stands in a JetStream stream; none in core NATS mode (or
    /// for a component exporting `handle-message`, which gets the same
    /// facts as headers: see [`Message::stream_sequence`]).
    pub stream: Option<StreamInfo>,
}

impl Message {
    /// The first value of header `name`, compared case-insensitively (NATS
    /// header names keep the publisher's case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order, compared case-insensitively.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The payload as UTF-8 text.
    pub fn payload_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.payload)
    }

    /// Set when the plugin cancelled an earlier call for this message after
    /// this many milliseconds (the entry's `handler_timeout_ms`) and calls
    /// again: the handler should record the message without the work that
    /// hung (e.g. park it for a retry).
    pub fn handler_timed_out_ms(&self) -> Option<u64> {
        self.header(HANDLER_TIMEOUT_HEADER)?.trim().parse().ok()
    }

    /// Its JetStream sequence number, from [`Message::stream`] or the
    /// header the plugin adds: use it to recognise a redelivery.
    pub fn stream_sequence(&self) -> Option<u64> {
        self.stream
            .map(|s| s.sequence)
            .or_else(|| self.header(STREAM_SEQUENCE_HEADER)?.trim().parse().ok())
    }

    /// In JetStream mode, the epoch of the stream (when it was made, in
    /// Unix nanoseconds): a stream made again starts its sequences again,
    /// so compare (epoch, sequence), not the sequence alone.
    pub fn stream_epoch(&self) -> Option<u64> {
        self.header(STREAM_EPOCH_HEADER)?.trim().parse().ok()
    }

    /// In JetStream mode, the Unix time in milliseconds until which this
    /// instance surely holds the message (the plugin's lease): after it the
    /// server may have delivered it to another instance, so a handler must
    /// not commit the message's effects any more. `None` in core mode.
    pub fn lease_until_ms(&self) -> Option<u64> {
        self.header(LEASE_HEADER)?.trim().parse().ok()
    }

    /// How many times it has been delivered, from [`Message::stream`] or
    /// the header the plugin adds.
    pub fn delivered(&self) -> Option<u64> {
        self.stream
            .map(|s| s.delivered)
            .or_else(|| self.header(DELIVERED_HEADER)?.trim().parse().ok())
    }
}

/// Why a message could not be handled: the plugin logs it, answers a
/// requester `{"ok":false,"error":…}`, and in JetStream mode has the
/// message delivered again.
///
/// Anything that implements `Display` converts into it (so `?` works on
/// most errors); an error with a chain (`anyhow`) keeps the whole chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this description.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// The description the plugin gets.
    pub fn message(&self) -> &str {
        &self.message
    }
}

// Not `Display` itself, so that every `Display` type can convert into it.
impl<E: Display> From<E> for Error {
    fn from(e: E) -> Self {
        Error::new(format!("{e:#}"))
    }
}

/// What the macro's expansion uses: not part of the API. The bindings
/// themselves are generated in the component's own crate by the expansion
/// (from the plugin's WIT, which the macro reads at its build): a crate that
/// only uses [`Message`] (a library shared with other components) links no
/// NATS world.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use super::{Error, Message, StreamInfo};

    /// A message from the generated bindings' fields.
    pub fn message(
        subject: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
        reply_to: Option<String>,
        stream: Option<(u64, u64, u64)>,
    ) -> Message {
        Message {
            subject,
            payload,
            headers,
            reply_to,
            stream: stream.map(|(sequence, delivered, published_ms)| StreamInfo {
                sequence,
                delivered,
                published_ms,
            }),
        }
    }

    /// The description a handler's error gives the plugin.
    pub fn describe<E: Into<Error>>(e: E) -> String {
        e.into().message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &[(&str, &str)]) -> Message {
        Message {
            subject: "tasks.created".into(),
            payload: b"{}".to_vec(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            ..Message::default()
        }
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let m = message(&[("X-Correlation-Id", "c-1"), ("x-tag", "a"), ("X-TAG", "b")]);
        assert_eq!(m.header("x-correlation-id"), Some("c-1"));
        assert_eq!(m.header("X-CORRELATION-ID"), Some("c-1"));
        assert_eq!(m.header_values("x-tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.header("missing"), None);
        assert_eq!(m.payload_str(), Ok("{}"));
    }

    #[test]
    fn the_plugins_conventions_read_from_headers_or_stream_info() {
        let m = message(&[
            ("Spin-Nats-Handler-Timeout", "5000"),
            (STREAM_SEQUENCE_HEADER, "42"),
            (DELIVERED_HEADER, "3"),
        ]);
        assert_eq!(m.handler_timed_out_ms(), Some(5000));
        assert_eq!((m.stream_sequence(), m.delivered()), (Some(42), Some(3)));
        let from_stream = Message {
            stream: Some(StreamInfo {
                sequence: 7,
                delivered: 1,
                published_ms: 0,
            }),
            ..message(&[(STREAM_SEQUENCE_HEADER, "42")])
        };
        assert_eq!(from_stream.stream_sequence(), Some(7), "the record wins");
        assert_eq!(message(&[]).stream_sequence(), None);
        assert_eq!(
            message(&[(HANDLER_TIMEOUT_HEADER, "x")]).handler_timed_out_ms(),
            None
        );
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("disk full")
        }
    }
    impl Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            if f.alternate() {
                write!(f, "saving task t-1: {:#}", self.0)
            } else {
                f.write_str("saving task t-1")
            }
        }
    }

    #[test]
    fn errors_map_to_the_wit_error_with_their_chain() {
        assert_eq!(Error::from("bad payload").message(), "bad payload");
        assert_eq!(
            Error::from(Outer(Inner)).message(),
            "saving task t-1: disk full"
        );
        let parse: Result<u32, _> = "x".parse::<u32>();
        let e: Error = parse
            .map_err(Error::from)
            .err()
            .unwrap_or_else(|| Error::new("?"));
        assert_eq!(e.message(), "invalid digit found in string");
        assert_eq!(__private::describe(Error::new("nope")), "nope");
        assert_eq!(__private::describe("second failed"), "second failed");
    }
}
