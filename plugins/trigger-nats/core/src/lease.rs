//! How long this instance surely holds the messages of a pull.
//!
//! The server delivers a message again `ack_wait` after it delivered it, or
//! after the last progress acknowledgement (`+WPI`) it received for it. An
//! instance that was paused (a GC pause, SIGSTOP, a VM stall) or cut off
//! from the server past that moment has lost its messages to another
//! instance, and must not act on them any more: not commit their effects
//! (the component is told the moment as [`crate::LEASE_HEADER`]), not acknowledge
//! them (that would free another instance to overtake the one now holding
//! them), not hand them back.
//!
//! The lease is counted from moments before the server's timer started:
//! the pull's request, or the sending of a progress acknowledgement whose
//! receipt the server confirmed (an ack sent with a reply subject is
//! answered once processed; acks on one connection are processed in order,
//! so the answer to the last covers those sent before it). Unconfirmed
//! progress acknowledgements may extend the server's timer, but never the
//! lease.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, AckKind};
use tokio::time::Instant;

use crate::handler::log;

/// Longest wait for the server to confirm a progress acknowledgement.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// A pull's lease: until when its messages are surely this instance's.
pub(crate) struct Lease {
    until: Mutex<Instant>,
    ack_wait: Duration,
    /// Kept free before the lease ends: a guest's commit started just
    /// before the moment it was given still ends before the server
    /// delivers again.
    margin: Duration,
    /// The guest call's limit: a call starts only with this much lease left.
    call: Duration,
    subject: String,
}

impl Lease {
    /// The lease of a pull requested at `requested`.
    pub(crate) fn new(
        requested: Instant,
        ack_wait: Duration,
        handler_timeout: Duration,
        subject: &str,
    ) -> Self {
        let margin = (ack_wait.saturating_sub(handler_timeout) / 2).min(Duration::from_secs(1));
        Lease {
            until: Mutex::new(requested + ack_wait),
            ack_wait,
            margin,
            call: handler_timeout,
            subject: subject.to_owned(),
        }
    }

    fn until(&self) -> Instant {
        self.until.lock().map_or_else(|p| *p.into_inner(), |u| *u)
    }

    /// Whether the server may have delivered the messages again already.
    pub(crate) fn expired(&self) -> bool {
        Instant::now() >= self.until()
    }

    /// Sends a progress acknowledgement for each of `held`, the last one
    /// confirmed; once confirmed, the lease runs `ack_wait` from the
    /// sending. Returns whether it was confirmed.
    pub(crate) async fn renew(&self, held: &[jetstream::Message]) -> bool {
        let Some((last, rest)) = held.split_last() else {
            return true;
        };
        let sent = Instant::now();
        for msg in rest {
            // Fire and forget: the confirmation of the last one covers them.
            let _ = msg.ack_with(AckKind::Progress).await;
        }
        let confirmed =
            tokio::time::timeout(CONFIRM_TIMEOUT, last.double_ack_with(AckKind::Progress)).await;
        match confirmed {
            Ok(Ok(())) => {
                if let Ok(mut until) = self.until.lock() {
                    *until = (*until).max(sent + self.ack_wait);
                }
                true
            }
            Ok(Err(e)) => {
                log(&format!(
                    "{}: progress acknowledgement not confirmed ({e})",
                    self.subject
                ));
                false
            }
            Err(_) => {
                log(&format!(
                    "{}: progress acknowledgement not confirmed within {} ms",
                    self.subject,
                    CONFIRM_TIMEOUT.as_millis()
                ));
                false
            }
        }
    }

    /// Before a guest call on `held`: renews the lease when less than a
    /// call's limit (and the margin) is left, then returns the Unix time in
    /// milliseconds the guest may commit until; `Err` when the lease cannot
    /// cover a call (the server did not confirm, or the instance was paused
    /// past it): the messages are not handed to the guest.
    pub(crate) async fn for_call(&self, held: &[jetstream::Message]) -> Result<u64, String> {
        let needed = self.call + self.margin;
        if self.until().saturating_duration_since(Instant::now()) < needed {
            self.renew(held).await;
        }
        let left = self.until().saturating_duration_since(Instant::now());
        if left < needed {
            return Err(format!(
                "not handled: this instance holds the messages for {} ms more, less than a call may take \
                 ({} ms); they are delivered again",
                left.as_millis(),
                needed.as_millis()
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let commit_until = now + left - self.margin;
        Ok(u64::try_from(commit_until.as_millis()).unwrap_or(u64::MAX))
    }
}
