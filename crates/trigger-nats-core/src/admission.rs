//! Whether a pull may be handled now, from what the consumer says about
//! itself (consumer info) and what the pull holds: the rules of [`decide`],
//! apart from the pull loop so that each is tested against the server
//! states that would break it.
//!
//! The rules rest on the server's account of its deliveries. nats-server
//! 2.9 writes a consumer's state at most every 100 ms: killed, it starts
//! again on a state that can lack the last deliveries. A pull delivered in
//! that window is then not in the server's count of unacknowledged
//! messages; subtracting the pull from that count would take another
//! instance's messages for this pull's, and let it run ahead of them.
//! [`decide`] checks that the server accounts for every delivery of the
//! pull before using the count, and hands the pull back when it does not.

/// The consumer as the server described it when the pull was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServerView {
    /// The acknowledgement floor: every stream sequence up to it is
    /// acknowledged (or no longer the consumer's to deliver).
    pub(crate) floor: u64,
    /// The last stream sequence the consumer delivered as a new message.
    pub(crate) delivered_stream: u64,
    /// The last delivery number (consumer sequence) it handed out.
    pub(crate) delivered_consumer: u64,
    /// Deliveries not acknowledged yet, in every instance's hands.
    pub(crate) ack_pending: usize,
}

impl ServerView {
    pub(crate) fn of(info: &async_nats::jetstream::consumer::Info) -> ServerView {
        ServerView {
            floor: info.ack_floor.stream_sequence,
            delivered_stream: info.delivered.stream_sequence,
            delivered_consumer: info.delivered.consumer_sequence,
            ack_pending: info.num_ack_pending,
        }
    }
}

/// One message of the pull, as delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Its stream sequence.
    pub(crate) stream: u64,
    /// The delivery's number (consumer sequence).
    pub(crate) consumer: u64,
    /// How many times it was delivered, this time included.
    pub(crate) count: i64,
}

/// Where earlier messages stand when a pull cannot be handled yet: the
/// acknowledgement floor and how many unacknowledged messages were not in
/// the pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) floor: u64,
    pub(crate) elsewhere: usize,
}

/// The server does not account for the pull: what it said, and what the
/// pull holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unaccounted {
    pub(crate) delivered_stream: u64,
    pub(crate) delivered_consumer: u64,
    pub(crate) ack_pending: usize,
    pub(crate) last_stream: u64,
    pub(crate) last_consumer: u64,
    pub(crate) pulled: usize,
}

/// What a pull may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Handle all of it.
    All,
    /// Handle this many first (a run of consecutive stream sequences from
    /// the floor), then ask again about the rest.
    Run(usize),
    /// Another instance holds an earlier message: ask again shortly.
    Wait(Held),
    /// The server does not count this pull's deliveries: it started again
    /// on a state written before them, and will deliver them again as if
    /// new (or another instance acknowledged some). Hand it back.
    Unaccounted(Unaccounted),
}

/// The rules, for a pull (`pull`: its deliveries in stream order, one per
/// stream sequence) and what the server said (`server`, asked after the
/// pull's messages arrived):
/// 1. the server must account for every delivery of the pull: it delivered
///    up to the pull's last stream sequence and delivery number, and counts
///    at least the pull's messages as unacknowledged; otherwise
///    [`Decision::Unaccounted`];
/// 2. nothing unacknowledged outside the pull: all of it. Every earlier
///    message was acknowledged, terminated, or is no longer the consumer's
///    to deliver (its filter skips it, it was removed from the stream,
///    `max_deliver` gave up on it): the floor alone cannot say so, as in
///    nats-server 2.9 it stays below such messages for good;
/// 3. the pull starts just above the floor with new messages only: all of
///    it (what another instance got before them is older, so acknowledged);
///    with redeliveries, the run of consecutive sequences from the floor
///    (the pull would go on past what the other instance holds);
/// 4. otherwise wait: another instance holds an earlier message.
pub(crate) fn decide(server: &ServerView, pull: &[Delivery]) -> Decision {
    let Some(first) = pull.first() else {
        return Decision::All;
    };
    let last_stream = pull.iter().map(|d| d.stream).max().unwrap_or(0);
    let last_consumer = pull.iter().map(|d| d.consumer).max().unwrap_or(0);
    if server.delivered_stream < last_stream
        || server.delivered_consumer < last_consumer
        || server.ack_pending < pull.len()
    {
        return Decision::Unaccounted(Unaccounted {
            delivered_stream: server.delivered_stream,
            delivered_consumer: server.delivered_consumer,
            ack_pending: server.ack_pending,
            last_stream,
            last_consumer,
            pulled: pull.len(),
        });
    }
    let held = Held {
        floor: server.floor,
        elsewhere: server.ack_pending - pull.len(),
    };
    if held.elsewhere == 0 {
        return Decision::All;
    }
    if held.floor + 1 >= first.stream {
        if pull.iter().all(|d| d.count <= 1) {
            return Decision::All;
        }
        let run = 1 + pull
            .windows(2)
            .take_while(|w| w[1].stream == w[0].stream + 1)
            .count();
        return Decision::Run(run);
    }
    Decision::Wait(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// New deliveries of consecutive stream sequences from `from`, with
    /// delivery numbers from `dseq`.
    fn new(from: u64, n: u64, dseq: u64) -> Vec<Delivery> {
        (0..n)
            .map(|i| Delivery {
                stream: from + i,
                consumer: dseq + i,
                count: 1,
            })
            .collect()
    }

    fn server(
        floor: u64,
        delivered_stream: u64,
        delivered_consumer: u64,
        pending: usize,
    ) -> ServerView {
        ServerView {
            floor,
            delivered_stream,
            delivered_consumer,
            ack_pending: pending,
        }
    }

    #[test]
    fn a_pull_with_nothing_unacknowledged_elsewhere_is_handled_whole() {
        // 1..=10 acknowledged; the pull holds 11..=20, all that is pending.
        let pull = new(11, 10, 11);
        assert_eq!(decide(&server(10, 20, 20, 10), &pull), Decision::All);
        // A floor frozen below a message the filter skips (stream sequence 5)
        // does not hold the pull back when nothing else is pending.
        assert_eq!(
            decide(&server(4, 20, 19, 10), &new(11, 10, 10)),
            Decision::All
        );
    }

    #[test]
    fn a_pull_waits_while_another_instance_holds_an_earlier_message() {
        // Another instance holds 11..=20 (deliveries 11..=20); this pull has 21..=30.
        let pull = new(21, 10, 21);
        assert_eq!(
            decide(&server(10, 30, 30, 20), &pull),
            Decision::Wait(Held {
                floor: 10,
                elsewhere: 10
            })
        );
    }

    #[test]
    fn a_pull_from_the_floor_with_redeliveries_runs_only_up_to_its_first_gap() {
        // 11..=13 came back (handed back by an instance), with new 20..=21;
        // another instance holds 14..=19.
        let mut pull: Vec<Delivery> = (11..=13)
            .map(|s| Delivery {
                stream: s,
                consumer: 30 + s,
                count: 2,
            })
            .collect();
        pull.extend(new(20, 2, 50));
        assert_eq!(decide(&server(10, 21, 51, 11), &pull), Decision::Run(3));
        // New messages only, from the floor: all of it.
        assert_eq!(
            decide(&server(10, 21, 51, 11), &new(11, 5, 47)),
            Decision::All
        );
    }

    #[test]
    fn a_pull_the_server_lost_in_a_restart_is_handed_back_not_taken_for_the_pending_count() {
        // Another instance holds 166..=197 (deliveries 100..=131, written to
        // the consumer's state); this pull got 198..=229 (deliveries 132..=163)
        // just before the server was killed, and the state it started again
        // on lacks them: it counts 32 unacknowledged, the other instance's.
        // Subtracting this pull's 32 from that would say nothing is held
        // elsewhere, and 198.. would be handled before 166...
        let pull = new(198, 32, 132);
        let after_restart = server(165, 197, 131, 32);
        assert_eq!(
            decide(&after_restart, &pull),
            Decision::Unaccounted(Unaccounted {
                delivered_stream: 197,
                delivered_consumer: 131,
                ack_pending: 32,
                last_stream: 198 + 31,
                last_consumer: 163,
                pulled: 32,
            })
        );
        // The same, had the server kept its state: the pull waits.
        assert_eq!(
            decide(&server(165, 229, 163, 64), &pull),
            Decision::Wait(Held {
                floor: 165,
                elsewhere: 32
            })
        );
    }

    #[test]
    fn a_lost_redelivery_or_a_short_count_is_unaccounted_too() {
        // Redeliveries of 11..=13 as deliveries 41..=43; the server's state
        // ends at delivery 40 (it lost them), its count being right by chance.
        let pull: Vec<Delivery> = (11..=13)
            .map(|s| Delivery {
                stream: s,
                consumer: 30 + s,
                count: 2,
            })
            .collect();
        assert!(matches!(
            decide(&server(10, 13, 40, 3), &pull),
            Decision::Unaccounted(_)
        ));
        // Fewer unacknowledged than the pull holds: some of it is not
        // counted, so the count says nothing about other instances.
        assert!(matches!(
            decide(&server(10, 20, 20, 3), &new(16, 5, 16)),
            Decision::Unaccounted(_)
        ));
    }

    #[test]
    fn an_empty_pull_is_nothing_to_hold_back() {
        assert_eq!(decide(&server(0, 0, 0, 0), &[]), Decision::All);
    }
}
