//! A pull's messages as they arrive, up to the first delivery that did not.
//!
//! The server numbers every delivery of a consumer (the consumer sequence in
//! a message's metadata), and while a pull is open it is the consumer's only
//! waiting pull (`max_waiting` 1), so the deliveries of one pull follow each
//! other. When the connection breaks mid-pull (a reset, a proxy that drops
//! it) the deliveries written to the old connection are lost, and the client,
//! once reconnected, goes on receiving the rest of the same pull: a message
//! after the gap would then be handled while the lost one waits out
//! `ack_wait` in the server's hands. A task's later event would apply before
//! its earlier one, which is then skipped as applied already: lost. (A
//! consumer leader that takes over mid-pull on an older state numbers its
//! deliveries from there: a gap as well.)
//!
//! [`Arrivals`] lets messages through while each one's delivery number
//! follows the one before it; from the first that does not, it lets nothing
//! through, and what comes is handed back ([`Arrivals::remaining`]).
//! The admission check of the pull's first messages ([`crate::admission`])
//! covers a delivery lost before them; this covers the rest of the pull.
//!
//! A pull also ends when it has lasted its `expires` and [`UNANNOUNCED_END`]
//! more, whether or not the server said so. nats-server 2.9.10 says so (a
//! 408) when its expiry timer finds the pull, but when a message comes for
//! the pull first, after it expired, `nextWaiting` drops the pull without a
//! word; the client library then waits 5 s past `expires`, and the pull's
//! messages stay unacknowledged all that time, holding every instance back
//! (native `a_pull_the_server_ends_without_a_word_does_not_hold_delivery_back`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

/// How long past its `expires` a pull is waited for before it counts as
/// ended without the server's word. The server takes the expiry from when
/// the request reached it (through a route, in a cluster), so a pull ended
/// here sooner could still be delivered to after this instance stopped
/// listening.
pub(crate) const UNANNOUNCED_END: Duration = Duration::from_millis(250);

/// Whether delivery `next` may follow delivery `last` in one pull.
fn follows(last: Option<u64>, next: u64) -> bool {
    last.is_none_or(|last| last.checked_add(1) == Some(next))
}

/// A pull's message stream, cut at the first delivery that does not follow
/// the one before it.
pub(crate) struct Arrivals {
    pull: pull::Batch,
    /// The delivery number of the last message let through.
    last: Option<u64>,
    /// The delivery numbers on each side of the gap, once there was one.
    gap: Option<(u64, u64)>,
    /// The first message after the gap, not let through.
    held: Option<jetstream::Message>,
    /// What ended a wait of [`Arrivals::next_within`] that was not a
    /// message (the pull's end, an error): the next [`Arrivals::next`]
    /// returns it.
    ended: Option<Option<Result<jetstream::Message, async_nats::Error>>>,
    /// When the pull counts as ended, said or not.
    ends_by: Instant,
}

/// A delivery number, when the message carries JetStream metadata.
fn delivery(msg: &jetstream::Message) -> Option<u64> {
    msg.info().ok().map(|i| i.consumer_sequence)
}

impl Arrivals {
    /// `pull` as just requested, lasting at most `expires`.
    pub(crate) fn new(pull: pull::Batch, expires: Duration) -> Self {
        Arrivals {
            pull,
            last: None,
            gap: None,
            held: None,
            ended: None,
            ends_by: Instant::now() + expires + UNANNOUNCED_END,
        }
    }

    /// The pull's next item, or `None` once it ends (said or not). What
    /// has arrived already comes first, even past `ends_by`.
    async fn next_item(&mut self) -> Option<Result<jetstream::Message, async_nats::Error>> {
        tokio::time::timeout_at(self.ends_by, self.pull.next())
            .await
            .unwrap_or(None)
    }

    /// The delivery numbers on each side of the gap: the last let through,
    /// and the first that did not follow it.
    pub(crate) fn gap(&self) -> Option<(u64, u64)> {
        self.gap
    }

    /// Lets `item` through, or keeps it (and ends the stream) at a gap.
    fn pass(
        &mut self,
        item: Option<Result<jetstream::Message, async_nats::Error>>,
    ) -> Option<Result<jetstream::Message, async_nats::Error>> {
        let Some(Ok(msg)) = item else { return item };
        match delivery(&msg) {
            Some(n) if !follows(self.last, n) => {
                self.gap = Some((self.last.unwrap_or(0), n));
                self.held = Some(msg);
                None
            }
            Some(n) => {
                self.last = Some(n);
                Some(Ok(msg))
            }
            None => Some(Ok(msg)),
        }
    }

    /// The next message (or the pull's status), waiting for it; `None` when
    /// the pull is over, or cut at a gap.
    pub(crate) async fn next(&mut self) -> Option<Result<jetstream::Message, async_nats::Error>> {
        if self.gap.is_some() {
            return None;
        }
        if let Some(item) = self.ended.take() {
            return item;
        }
        let item = self.next_item().await;
        self.pass(item)
    }

    /// The next message if it arrives within `wait`. The pull's end or an
    /// error is kept for [`Arrivals::next`].
    pub(crate) async fn next_within(
        &mut self,
        wait: std::time::Duration,
    ) -> Option<jetstream::Message> {
        if self.gap.is_some() || self.ended.is_some() {
            return None;
        }
        // Cancelling a stream's `next` loses nothing: the timeout is safe.
        let until = (Instant::now() + wait).min(self.ends_by);
        match tokio::time::timeout_at(until, self.pull.next()).await {
            Err(_) if until == self.ends_by => {
                self.ended = Some(None);
                None
            }
            Err(_) => None,
            Ok(item @ Some(Ok(_))) => match self.pass(item) {
                Some(Ok(m)) => Some(m),
                _ => None,
            },
            Ok(other) => {
                self.ended = Some(other);
                None
            }
        }
    }

    /// The next message if it has arrived already.
    pub(crate) fn next_now(&mut self) -> Option<jetstream::Message> {
        if self.gap.is_some() || self.ended.is_some() {
            return None;
        }
        match self.pull.next().now_or_never() {
            Some(item @ Some(Ok(_))) => match self.pass(item) {
                Some(Ok(m)) => Some(m),
                _ => None,
            },
            _ => None,
        }
    }

    /// What the pull still brings, read to its end (or to its first
    /// error), with the message kept at the gap first: to be handed back.
    pub(crate) async fn remaining(&mut self) -> Vec<jetstream::Message> {
        let mut rest: Vec<jetstream::Message> = self.held.take().into_iter().collect();
        if self.ended.take().is_some() {
            // The pull ended, or failed: nothing more comes.
            return rest;
        }
        while let Some(Ok(m)) = self.next_item().await {
            rest.push(m);
        }
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::follows;

    #[test]
    fn a_pull_s_deliveries_must_follow_each_other_from_its_first() {
        assert!(follows(None, 7));
        assert!(follows(Some(7), 8));
        // A delivery lost in between, one numbered again by a leader on an
        // older state, one repeated: each is a gap.
        assert!(!follows(Some(7), 9));
        assert!(!follows(Some(7), 5));
        assert!(!follows(Some(7), 7));
        assert!(!follows(Some(u64::MAX), 0));
    }
}
