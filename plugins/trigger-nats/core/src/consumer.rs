//! JetStream mode at run time: the stream and durable pull consumer made
//! ready (created when missing and the manifest says how, checked against
//! the manifest when they exist), and the pull loop: messages come in
//! pulls of up to `batch`, handed to the handler as they arrive; each is
//! acknowledged only after the handler returned Ok for it, all of a pull's
//! together once the pull is over; an error has it (and the rest of its
//! pull, to keep order) delivered again, first, after a short pause.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::sync::watch;

use crate::StreamInfo;
use crate::admission::{self, Answerer, Decision, Delivery, Held, ServerView, Unaccounted};
use crate::arrivals::{Arrivals, UNANNOUNCED_END};
use crate::config::JetStreamApi;
use crate::handler::{Counters, Gate, Handler, Message, call_batch, header_pairs, log};
use crate::jetstream::{
    ConsumerSpec, Deliver, Plan, Storage, TAKEOVER_GRACE, consumer_differences, unconsumed_error,
    unconsumed_subjects,
};
use crate::lease::Lease;
use crate::partition::{OrderingKey, Partition, calls_of, other_partitionings};
use crate::plan::Subscription;
use crate::{
    DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SEQUENCE_HEADER, DEAD_LETTER_SUBJECT_HEADER,
    DELIVERED_HEADER, STREAM_EPOCH_HEADER, STREAM_SEQUENCE_HEADER,
};

/// Pause before pulling again after the handler failed on a message (which
/// is handed back at once, so the next pull starts with it).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Wait before pulling again after the pull itself failed.
const PULL_RETRY: Duration = Duration::from_secs(1);
/// Wait before pulling again while another instance's pull is open.
const STANDBY_POLL: Duration = Duration::from_millis(50);

/// How often a pull waiting for earlier deliveries asks the server.
const TAKEOVER_POLL: Duration = Duration::from_millis(20);
/// Pause before pulling again after handing a pull back (see
/// [`Pulling::step_back`]).
const STEP_BACK_PAUSE: Duration = Duration::from_secs(1);

/// While a pull's messages are still arriving (a burst being published),
/// the first call waits for more as long as each comes within
/// [`GATHER_GAP`] of the one before, for at most [`GATHER_MAX`], or until
/// the call is full: a call has a fixed cost (its store calls, the
/// component's instance), so taking a pull a few messages at a time as
/// they trickle in costs many calls. A lone message waits `GATHER_GAP`.
const GATHER_GAP: Duration = Duration::from_millis(2);
/// The longest the first call of a pull waits for more messages.
const GATHER_MAX: Duration = Duration::from_millis(25);

/// Most messages one pull asks for (see [`Pulling::pull_size`]).
const MAX_PULL: usize = crate::jetstream::MAX_BATCH;

/// How the server refuses a pull while another one is waiting
/// (`max_waiting` 1: one instance pulls at a time).
const OTHER_PULL_OPEN: &str = "Exceeded MaxWaiting";

/// How long the pull that clears the consumer's waiting slot before a
/// hand-back waits (see [`Pulling::clear_waiting`]).
const CLEARING_PULL: Duration = Duration::from_millis(50);

fn describe(plan: &Plan) -> String {
    format!(
        "durable consumer {:?} on stream {:?}",
        plan.consumer.durable, plan.stream
    )
}

/// The stream and consumer of `plan`, created when missing (the stream only
/// when the manifest says how), or an error naming what is missing or
/// differs.
pub async fn provision(
    client: &async_nats::Client,
    plan: &Plan,
) -> Result<PullConsumer, async_nats::Error> {
    Ok(provision_from(client, plan, None).await?.0)
}

/// [`provision`], with the stream's epoch; a consumer created here starts
/// at the stream sequence of `resume` (epoch, sequence) when the stream is
/// still that incarnation (one made again after it was deleted under a
/// running trigger: from just after what this instance acknowledged, not
/// the whole stream again); in a stream made again, from its start.
async fn provision_from(
    client: &async_nats::Client,
    plan: &Plan,
    resume: Option<(u64, u64)>,
) -> Result<(PullConsumer, u64), async_nats::Error> {
    let js = context(client, &plan.api);
    let mut stream = match js.get_stream(&plan.stream).await {
        Ok(s) => s,
        Err(e) if stream_missing(&e) => {
            let Some(spec) = &plan.create_stream else {
                return Err(format!(
                    "stream {:?} does not exist: create it (nats stream add {} --subjects …) or set stream_subjects to have the trigger create it",
                    plan.stream, plan.stream
                )
                .into());
            };
            let config = stream::Config {
                name: plan.stream.clone(),
                subjects: spec.subjects.clone(),
                storage: match spec.storage {
                    Storage::File => StorageType::File,
                    Storage::Memory => StorageType::Memory,
                },
                max_age: spec.max_age.unwrap_or_default(),
                max_messages: spec.max_msgs,
                max_bytes: spec.max_bytes,
                duplicate_window: spec.duplicate_window,
                num_replicas: spec.replicas as usize,
                ..Default::default()
            };
            let created = js
                .create_stream(config)
                .await
                .map_err(|e| format!("creating stream {:?}: {e}", plan.stream))?;
            log(&format!(
                "created stream {:?} (subjects {}, {:?} storage, {} replica{})",
                plan.stream,
                spec.subjects.join(" "),
                spec.storage,
                spec.replicas,
                if spec.replicas == 1 { "" } else { "s" }
            ));
            created
        }
        Err(e) if passing(&e.to_string()) => {
            return Err(format!("looking up stream {:?}: {e}", plan.stream).into());
        }
        Err(e) => {
            return Err(format!(
                "looking up stream {:?}: {e} (the server needs JetStream enabled: nats-server -js, or a jetstream {{}} block in its config)",
                plan.stream
            )
            .into());
        }
    };
    // A subject the stream stores but no entry takes would be acknowledged
    // to its publisher and then never handled, nor dead-lettered.
    if !plan.allow_unconsumed_subjects {
        let subjects = stream
            .info()
            .await
            .map_err(|e| format!("looking up stream {:?}: {e}", plan.stream))?
            .config
            .subjects
            .clone();
        let missing = unconsumed_subjects(&subjects, &plan.stream_filters);
        if !missing.is_empty() {
            return Err(unconsumed_error(&plan.stream, &missing, &plan.stream_filters).into());
        }
    }
    let epoch = epoch_of(stream.cached_info());
    let start = resume.filter(|(e, _)| *e == epoch).map(|(_, s)| s);
    let want = &plan.consumer;
    match stream.consumer_info(&want.durable).await {
        Ok(info) => {
            let c = &info.config;
            let have = ConsumerSpec {
                durable: want.durable.clone(),
                filter_subject: c.filter_subject.clone(),
                ack_wait: c.ack_wait,
                max_deliver: c.max_deliver,
                max_ack_pending: c.max_ack_pending,
                deliver: deliver_of(c.deliver_policy),
            };
            let mut differences = consumer_differences(want, &have);
            if c.deliver_subject.is_some() {
                differences.push("it is a push consumer; the trigger pulls".into());
            }
            if c.max_waiting != 1 {
                differences.push(format!(
                    "it lets {} pulls wait at once; the trigger needs 1 (one instance pulls at a time, which keeps each task's events in order across instances)",
                    c.max_waiting
                ));
            }
            if c.ack_policy != AckPolicy::Explicit {
                differences.push(format!(
                    "its ack policy is {:?}; the trigger acknowledges each message",
                    c.ack_policy
                ));
            }
            if !differences.is_empty() {
                return Err(format!(
                    "{} differs from the manifest: {}. Change the manifest to match, or remove the consumer (nats consumer rm {} {}) to have it created anew \
                     (a consumer made at start-up delivers the whole stream again: the component must recognise what it applied, e.g. by stream sequence)",
                    describe(plan),
                    differences.join("; "),
                    plan.stream,
                    want.durable
                )
                .into());
            }
        }
        Err(e) if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound => {
            let config = pull::Config {
                durable_name: Some(want.durable.clone()),
                filter_subject: want.filter_subject.clone(),
                ack_policy: AckPolicy::Explicit,
                // Made again under a running trigger: from just after what this
                // instance acknowledged, whatever the manifest says.
                deliver_policy: policy_of(start.map_or(
                    want.deliver.unwrap_or(Deliver::All),
                    Deliver::ByStartSequence,
                )),
                ack_wait: want.ack_wait,
                max_deliver: want.max_deliver,
                max_ack_pending: want.max_ack_pending,
                // One pull open at a time across instances (see `Pulling::serve`).
                max_waiting: 1,
                ..Default::default()
            };
            stream
                .create_consumer(config)
                .await
                .map_err(|e| format!("creating {}: {e}", describe(plan)))?;
            let from = match (start, want.deliver) {
                (Some(s), _) => format!(", from stream sequence {s}"),
                (None, Some(d)) => format!(", deliver_policy {}", d.describe()),
                (None, None) => String::new(),
            };
            log(&format!(
                "created {} (filter {}, ack_wait {} ms, max_deliver {}, max_ack_pending {}{from})",
                describe(plan),
                want.filter_subject,
                want.ack_wait.as_millis(),
                want.max_deliver,
                want.max_ack_pending
            ));
        }
        Err(e) => return Err(format!("looking up {}: {e}", describe(plan)).into()),
    }
    let consumer = stream
        .get_consumer::<pull::Config>(&want.durable)
        .await
        .map_err(|e| format!("opening {}: {e}", describe(plan)))?;
    Ok((consumer, epoch))
}

/// The stream's epoch: when it was made, in Unix nanoseconds.
fn epoch_of(info: &stream::Info) -> u64 {
    u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0)
}

/// The consumer of `plan` and its stream's epoch, as [`provision`] makes
/// them ready.
pub(crate) async fn provision_with_epoch(
    client: &async_nats::Client,
    plan: &Plan,
) -> Result<(PullConsumer, u64), async_nats::Error> {
    let provisioned = provision_from(client, plan, None).await?;
    warn_other_partitionings(client, plan).await;
    Ok(provisioned)
}

/// At start-up, once per entry: names the consumers of the stream that
/// split this entry's messages in another number of partitions (left by
/// an earlier `partitions`, or instances still running with it). Those
/// instances would handle every message a second time, and a key's order
/// between the two sets is not kept.
async fn warn_other_partitionings(client: &async_nats::Client, plan: &Plan) {
    let (base, count) = match &plan.partition {
        Some(p) if p.index != 0 => return,
        Some(p) => (
            plan.consumer
                .durable
                .strip_suffix(&Partition::durable("", p.index, p.count))
                .unwrap_or(&plan.consumer.durable),
            Some(p.count),
        ),
        None => (plan.consumer.durable.as_str(), None),
    };
    let Ok(stream) = context(client, &plan.api).get_stream(&plan.stream).await else {
        return;
    };
    let names: Vec<String> = stream
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    let others = other_partitionings(base, count, names.iter().map(String::as_str));
    if !others.is_empty() {
        log(&format!(
            "stream {:?} also has the consumers {} for the same entry in another number of partitions: \
             instances still running with them handle every message a second time, and a key's order \
             between the two sets is not kept; stop those instances and remove the consumers \
             (nats consumer rm {} <name>)",
            plan.stream,
            others.join(", "),
            plan.stream
        ));
    }
}

/// The JetStream API where `api` says it is.
pub(crate) fn context(client: &async_nats::Client, api: &JetStreamApi) -> jetstream::Context {
    match api {
        JetStreamApi::Default => jetstream::new(client.clone()),
        JetStreamApi::Domain(domain) => jetstream::with_domain(client.clone(), domain),
        JetStreamApi::Prefix(prefix) => jetstream::with_prefix(client.clone(), prefix),
    }
}

/// Whether a JetStream request failed for the moment only (`error`: its
/// text, as async-nats words it): it timed out (a cluster between two
/// JetStream leaders does not answer), the server said JetStream is
/// temporarily unavailable (error 10008), or that it has not enough peers to
/// place the stream's replicas (error 10005: a cluster whose nodes are still
/// joining, or a node restarting; on a server that will never have them,
/// start-up gives up after its patience, saying so). Anything else (a stream
/// that does not exist, a consumer that differs, JetStream not enabled) is an
/// answer.
pub(crate) fn passing(error: &str) -> bool {
    error.contains("timed out")
        || error.contains("temporarily unavailable")
        || error.contains("10008")
        || error.contains("10005")
}

/// Where an existing consumer starts, as the manifest would say it (`None`:
/// a policy the manifest cannot ask for, such as `last`).
fn deliver_of(policy: DeliverPolicy) -> Option<Deliver> {
    match policy {
        DeliverPolicy::All => Some(Deliver::All),
        DeliverPolicy::New => Some(Deliver::New),
        DeliverPolicy::ByStartSequence { start_sequence } => {
            Some(Deliver::ByStartSequence(start_sequence))
        }
        DeliverPolicy::ByStartTime { start_time } => Some(Deliver::ByStartTime(start_time)),
        _ => None,
    }
}

/// The server's form of `deliver` (the inverse of [`deliver_of`]).
fn policy_of(deliver: Deliver) -> DeliverPolicy {
    match deliver {
        Deliver::All => DeliverPolicy::All,
        Deliver::New => DeliverPolicy::New,
        Deliver::ByStartSequence(start_sequence) => {
            DeliverPolicy::ByStartSequence { start_sequence }
        }
        Deliver::ByStartTime(start_time) => DeliverPolicy::ByStartTime { start_time },
    }
}

/// The consumer's leader, as its info names it (in a cluster).
pub(crate) fn leader_of(info: &async_nats::jetstream::consumer::Info) -> Option<String> {
    info.cluster.as_ref().and_then(|c| c.leader.clone())
}

/// Whether a stream lookup failed because the stream does not exist.
fn stream_missing(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// What [`Pulling::admit`] lets a pull do.
enum Admit {
    /// Handle every message of it.
    All,
    /// Handle this many first, then ask again about the rest.
    Run(usize),
    /// Hand it back, for this reason.
    StepBack(Why),
}

/// Why a pull is handed back.
#[derive(Clone, Debug)]
enum Why {
    /// Earlier messages stayed in another instance's hands.
    Held(Held),
    /// The server did not answer.
    NoAnswer,
    /// The server does not account for the pull's deliveries.
    Unaccounted(Unaccounted),
    /// Another state answers than the one that delivered the pull.
    Interrupted { then: Answerer, now: Answerer },
}

/// One JetStream entry being served.
pub(crate) struct Pulling {
    pub(crate) client: async_nats::Client,
    pub(crate) consumer: PullConsumer,
    /// The stream's epoch (see [`crate::STREAM_EPOCH_HEADER`]).
    pub(crate) epoch: u64,
    /// The highest stream sequence this instance acknowledged.
    pub(crate) acked_up_to: std::sync::atomic::AtomicU64,
    /// Failed calls in a row, by stream sequence (see
    /// [`Pulling::dead_letter_if_spent`]).
    pub(crate) failures: std::collections::HashMap<u64, u32>,
    /// Why the consumer is not pulled from (it differs from the manifest,
    /// or could not be looked at), until [`Pulling::recheck`] clears it.
    pub(crate) refused: Option<String>,
    /// Most messages the next pull asks for: `batch`, unless the last pull
    /// was held back while more messages were unacknowledged than one pull
    /// of `batch` takes. Then no pull could ever hold all of them, and when
    /// the acknowledgement floor is frozen below them (nats-server 2.9.10
    /// moves it only when an acknowledgement's delivery number is the next
    /// one, so a message delivered again and acknowledged leaves it behind
    /// until nothing is pending), two instances would hand their pulls back
    /// to each other for good: the chaos suite's cluster run saw 100 and 23
    /// messages traded every 3 s for two minutes. Asking for all of them
    /// lets one pull hold everything unacknowledged, which rule 2 of
    /// [`admission::decide`] admits. At most [`MAX_PULL`].
    pub(crate) pull_size: usize,
    /// The consumer's leader, as the last consumer info named it (none
    /// outside a cluster, or before the first answer).
    pub(crate) leader: Option<String>,
    pub(crate) plan: Plan,
    pub(crate) sub: Subscription,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) counters: Counters,
}

impl Pulling {
    /// Pulls and handles batches until `stop`. Each pull asks for at most
    /// `batch` messages and lasts at most `max_wait`; messages are handled as
    /// they come, a few at a time. After `stop` no new pull is made and the
    /// current one is finished (so nothing is left delivered but unhandled).
    /// A failed pull is retried every second: the client reconnects on its
    /// own, and the durable consumer keeps the place.
    ///
    /// Each task's events stay in publish order across instances sharing the
    /// consumer because one pull is open at a time (the consumer allows one
    /// waiting pull; the others' pulls are refused and retried every 50 ms),
    /// a pull's messages are acknowledged only when it is over, and
    /// `max_ack_pending` (`batch` by default) keeps the next pull from getting
    /// messages until they are: an instance never handles a message while
    /// an earlier one is in another instance's hands (docs/decisions.md).
    pub(crate) async fn serve(mut self, mut stop: watch::Receiver<bool>) {
        if self.wait_for_earlier_deliveries(&mut stop).await {
            return;
        }
        let mut stopping = false;
        let mut handled = 0usize;
        while !stopping {
            if self.refused.is_some() {
                if self.recheck_later(&mut stop).await {
                    break;
                }
                continue;
            }
            let requested = tokio::time::Instant::now();
            let answered_by = self.answerer();
            let pull = self
                .consumer
                .batch()
                .max_messages(self.pull_size)
                .expires(self.plan.max_wait)
                .messages()
                .await;
            let mut messages = match pull {
                Ok(m) => Arrivals::new(m, self.plan.max_wait),
                Err(e) => {
                    log(&format!("{}: pull failed: {e}; retrying", self.sub.subject));
                    if self.recheck_later(&mut stop).await {
                        break;
                    }
                    continue;
                }
            };
            let lease = Lease::new(
                requested,
                self.plan.consumer.ack_wait,
                self.sub.handler_timeout,
                &self.sub.subject,
            );
            // Handled messages are acknowledged once the pull is over: until
            // then they count against max_ack_pending, so no other instance is
            // handed newer messages (of the same tasks, maybe) while this one
            // may still be working on earlier ones of this pull.
            let mut done = Vec::new();
            let mut checked = false;
            // Messages of this pull held back behind a run handled first.
            let mut rest: Vec<jetstream::Message> = Vec::new();
            let mut run = false;
            let mut first_call = true;
            loop {
                let mut batch = if rest.is_empty() {
                    let first = tokio::select! {
                        biased;
                        _ = stop.changed(), if !stopping => {
                            stopping = true;
                            continue;
                        }
                        m = messages.next() => m,
                    };
                    match first {
                        Some(Ok(m)) => vec![m],
                        // Another instance is pulling: stand by, try again shortly.
                        Some(Err(e)) if e.to_string().contains(OTHER_PULL_OPEN) => {
                            tokio::select! {
                                _ = stop.changed() => stopping = true,
                                _ = tokio::time::sleep(STANDBY_POLL) => {}
                            }
                            break;
                        }
                        Some(Err(e)) => {
                            log(&format!("{}: {e}", self.sub.subject));
                            stopping = self.recheck_later(&mut stop).await;
                            break;
                        }
                        // This pull is done (full or expired).
                        None => break,
                    }
                } else {
                    std::mem::take(&mut rest)
                };
                // The rest of what has arrived already and what is arriving, in
                // stream order (a pull brings redeliveries in the order they
                // became due).
                if first_call {
                    first_call = false;
                    gather(&mut messages, &mut batch, self.pull_size).await;
                } else {
                    take_arrived(&mut messages, &mut batch, self.pull_size);
                }
                in_stream_order(&mut batch);
                if !checked {
                    match self
                        .admit(&mut batch, &mut messages, &answered_by, &mut stop)
                        .await
                    {
                        Admit::All => {
                            checked = true;
                            self.pull_size = self.plan.batch;
                        }
                        Admit::Run(n) => {
                            rest = batch.split_off(n);
                            run = true;
                            self.pull_size = self.plan.batch;
                        }
                        Admit::StepBack(why) => {
                            // Held back while the messages unacknowledged
                            // outside this pull are more than one pull of
                            // `batch` takes: the next pull asks for all of
                            // them (see `Pulling::pull_size`).
                            if let Why::Held(held) = &why {
                                let all = held.elsewhere + batch.len();
                                if all > self.plan.batch {
                                    self.pull_size = all.min(MAX_PULL);
                                }
                            }
                            self.settle_all(&done, true, &lease).await;
                            done.clear();
                            self.step_back(batch, &why, &mut messages, &mut stop, &lease)
                                .await;
                            stopping |= *stop.borrow();
                            break;
                        }
                    }
                    // The wait above may have seen the stop.
                    stopping |= *stop.borrow();
                }
                // A call takes at most `batch` messages; a larger pull goes in
                // turns (admitted once, unless it was a run).
                if batch.len() > self.plan.batch {
                    let mut tail = batch.split_off(self.plan.batch);
                    tail.append(&mut rest);
                    rest = tail;
                }
                let Split {
                    ok,
                    back,
                    heads,
                    ours,
                } = self
                    .handle_keeping_alive(batch, &done, &mut messages, &mut rest, &lease)
                    .await;
                handled += ours;
                for m in &ok {
                    self.failures.remove(&stream_sequence(m));
                }
                done.extend(ok);
                if !back.is_empty() {
                    let mut back = back;
                    for (head, reason) in &heads {
                        if self.dead_letter_if_spent(head, reason, &lease).await {
                            let seq = stream_sequence(head);
                            back.retain(|m| stream_sequence(m) != seq);
                        }
                    }
                    // The failed message, what followed it, and what this pull
                    // still brings go back together once the pull is over (handed
                    // back sooner, they would come straight back into it), and the
                    // next pull waits, so it starts with the failed message.
                    back.append(&mut rest);
                    back.extend(messages.remaining().await);
                    in_stream_order(&mut back);
                    self.settle_all(&done, true, &lease).await;
                    self.settle_all(&back, false, &lease).await;
                    done.clear();
                    tokio::select! {
                        _ = stop.changed() => stopping = true,
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                    break;
                }
                if run {
                    // A run handled ahead of the rest of the pull: acknowledged
                    // now, so the floor reaches what comes after it.
                    run = false;
                    self.settle_all(&done, true, &lease).await;
                    done.clear();
                }
            }
            if let Some((last, next)) = messages.gap() {
                stopping |= self
                    .hand_back_after_gap(&done, &mut messages, (last, next), &lease, &mut stop)
                    .await;
                done.clear();
            }
            self.settle_all(&done, true, &lease).await;
        }
        log(&format!(
            "{}: stopped pulling ({handled} messages handled)",
            self.sub.subject
        ));
    }

    /// What of this pull (`batch`, in stream order; messages that arrive
    /// meanwhile join it) may be handled now, by the rules of
    /// [`admission::decide`] (`answered_by`: who answered for the consumer
    /// when the pull was made), asking the server every [`TAKEOVER_POLL`]
    /// while another instance holds an earlier message: finishing its pull,
    /// it acknowledges within milliseconds. After [`TAKEOVER_GRACE`] this
    /// pull steps back ([`Admit::StepBack`]).
    ///
    /// Never fails open: when the server does not answer, or another state
    /// answers than the one that delivered the pull, or it does not account
    /// for the pull, or on `stop`, the pull steps back. At the first
    /// unanswered question, not after the grace: a question sent while the
    /// connection is down waits for the next one, and the server that then
    /// answers may be one that started again since.
    async fn admit(
        &mut self,
        batch: &mut Vec<jetstream::Message>,
        messages: &mut Arrivals,
        answered_by: &Answerer,
        stop: &mut watch::Receiver<bool>,
    ) -> Admit {
        let deadline = tokio::time::Instant::now() + TAKEOVER_GRACE;
        loop {
            take_arrived(messages, batch, self.pull_size);
            in_stream_order(batch);
            let pull: Vec<Delivery> = batch.iter().map(delivery).collect();
            let view = match self.consumer.info().await {
                Ok(info) => {
                    let view = ServerView::of(info);
                    self.leader = leader_of(info);
                    view
                }
                Err(e) => {
                    log(&format!("{}: consumer info: {e}", self.sub.subject));
                    return Admit::StepBack(Why::NoAnswer);
                }
            };
            let held = match admission::decide(&view, &pull, answered_by, &self.answerer()) {
                Decision::All => return Admit::All,
                Decision::Run(n) => return Admit::Run(n),
                Decision::Unaccounted(u) => return Admit::StepBack(Why::Unaccounted(u)),
                Decision::Interrupted { then, now } => {
                    return Admit::StepBack(Why::Interrupted { then, now });
                }
                Decision::Wait(held) => Why::Held(held),
            };
            if tokio::time::Instant::now() >= deadline {
                return Admit::StepBack(held);
            }
            tokio::select! {
                _ = stop.changed() => return Admit::StepBack(held),
                _ = tokio::time::sleep(TAKEOVER_POLL) => {}
            }
        }
    }

    /// Who answers for the consumer now: the server this client is
    /// connected to (its id changes on reconnection before anything the new
    /// connection brings is read) and the last leader consumer info named.
    fn answerer(&self) -> Answerer {
        Answerer {
            server: self.client.server_info().server_id,
            leader: self.leader.clone(),
        }
    }

    /// This pull came while earlier messages were still held elsewhere: by
    /// an instance that is slow (a handler waiting on a store that is down),
    /// stopped or died. Hands back at once, in stream order, what the pull
    /// brought, and pauses [`STEP_BACK_PAUSE`] before pulling again.
    ///
    /// At once, not after a delay: a message handed back with a delay stays
    /// unacknowledged and out of everyone's reach for that long, so it holds
    /// back every later pull the way the messages it waited for held back
    /// this one, and instances stepping back in turn drained about one pull
    /// per delay. Handed back at once, the messages go to the head of the
    /// consumer's redelivery queue; the next pull (here or elsewhere) takes
    /// them again, and once the earlier messages are acknowledged, or due
    /// again and in the same pull, that pull starts at the floor. The cost is
    /// a delivery per message every [`TAKEOVER_GRACE`] while the earlier
    /// messages are held (counted against `max_deliver` when one is set).
    async fn step_back(
        &self,
        batch: Vec<jetstream::Message>,
        why: &Why,
        messages: &mut Arrivals,
        stop: &mut watch::Receiver<bool>,
        lease: &Lease,
    ) {
        let mut back = batch;
        back.extend(messages.remaining().await);
        in_stream_order(&mut back);
        self.settle_all(&back, false, lease).await;
        let first = back.first().map_or(0, stream_sequence);
        let why = match why {
            Why::Held(held) => format!(
                "earlier messages are still held elsewhere (acknowledged up to stream sequence {}, {} unacknowledged outside this pull, \
                 which starts at {first})",
                held.floor, held.elsewhere
            ),
            Why::NoAnswer => format!(
                "the server did not say whether earlier messages are held elsewhere (this pull starts at {first})"
            ),
            Why::Interrupted { then, now } => format!(
                "another state answers for the consumer than the one that delivered this pull (server {} and leader {} then, \
                 server {} and leader {} now: the server started again, or the leader moved, maybe on a state without this \
                 pull's deliveries; the pull starts at {first})",
                then.server,
                then.leader.as_deref().unwrap_or("-"),
                now.server,
                now.leader.as_deref().unwrap_or("-")
            ),
            Why::Unaccounted(u) => format!(
                "the server does not account for this pull's deliveries (it says it delivered up to delivery {}, with {} unacknowledged; the pull holds {} up to stream sequence {} and delivery {}): \
                 it started again on a state written before them, or another instance acknowledged some",
                u.delivered_consumer, u.ack_pending, u.pulled, u.last_stream, u.last_consumer
            ),
        };
        log(&format!(
            "{}: {why}; handed back the {} it brought, pulling again in {} ms",
            self.sub.subject,
            back.len(),
            STEP_BACK_PAUSE.as_millis()
        ));
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(STEP_BACK_PAUSE) => {}
        }
    }

    /// A delivery of this pull did not arrive (see [`crate::arrivals`]):
    /// acknowledges what was handled before the gap (`done`), hands back what
    /// came after it, in stream order, so none is handled before the lost
    /// one, which the server delivers again after `ack_wait` (the pulls
    /// until then step back behind it), and pauses [`STEP_BACK_PAUSE`].
    /// Returns whether `stop` came during the pause.
    async fn hand_back_after_gap(
        &self,
        done: &[jetstream::Message],
        messages: &mut Arrivals,
        (last, next): (u64, u64),
        lease: &Lease,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        self.settle_all(done, true, lease).await;
        let mut back = messages.remaining().await;
        if back.is_empty() {
            return false;
        }
        in_stream_order(&mut back);
        self.settle_all(&back, false, lease).await;
        // Past the lease, settle_all left them to the server instead.
        let how = if lease.expired() {
            "left"
        } else {
            "handed back"
        };
        log(&format!(
            "{}: delivery {next} of this pull came after delivery {last}, not the one after it (the connection was cut, \
             or the consumer's leader changed): {how} the {} messages from there on, so none is handled before \
             the missing one, which comes again after ack_wait; pulling again in {} ms",
            self.sub.subject,
            back.len(),
            STEP_BACK_PAUSE.as_millis()
        ));
        tokio::select! {
            _ = stop.changed() => true,
            _ = tokio::time::sleep(STEP_BACK_PAUSE) => false,
        }
    }

    /// Deliveries left unacknowledged by an instance that died come back
    /// only after `ack_wait`; pulled before then, newer messages would be
    /// handled first. So when the consumer has unacknowledged deliveries at
    /// start-up, the first pull waits `ack_wait`: by then they are due again,
    /// and JetStream hands out due redeliveries before new messages. Returns
    /// true when `stop` came first.
    async fn wait_for_earlier_deliveries(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let pending = match self.consumer.info().await {
            Ok(info) => {
                self.leader = leader_of(info);
                info.num_ack_pending
            }
            Err(e) => {
                log(&format!("{}: consumer info: {e}", self.sub.subject));
                return false;
            }
        };
        if pending == 0 {
            return false;
        }
        let wait = self.plan.consumer.ack_wait;
        log(&format!(
            "{}: {pending} earlier deliveries are unacknowledged (an instance stopped or died with them); \
             first pull in {} s, when they are due again, so they come before newer messages",
            self.sub.subject,
            wait.as_secs()
        ));
        tokio::select! {
            _ = stop.changed() => true,
            _ = tokio::time::sleep(wait) => false,
        }
    }

    /// Hands the batch to the handler and splits it: what to acknowledge,
    /// and what goes back for redelivery, in order. With `concurrency`, the
    /// messages are split by key over up to that many calls at once (see
    /// [`crate::partition::calls_of`]); else one call takes them all (one
    /// guest call for a component that takes batches, else one per
    /// message, in order). What goes back is each failed call's first
    /// failed message and that call's later ones; with one call, everything
    /// after the failure.
    async fn handle(&self, batch: Vec<jetstream::Message>, gate: &LeaseGate<'_>) -> Split {
        let keys: Option<Vec<Vec<u8>>> = self
            .plan
            .ordering_key
            .as_ref()
            .map(|key| batch.iter().map(|m| key_of(key, m)).collect());
        // With partitions, the messages of other partitions are not this
        // consumer's to handle: they count as done (acknowledged with the
        // pull), and only this partition's reach the component.
        let mine: Vec<usize> = match (&self.plan.partition, &keys) {
            (Some(part), Some(keys)) => {
                (0..batch.len()).filter(|&i| part.takes(&keys[i])).collect()
            }
            _ => (0..batch.len()).collect(),
        };
        let calls: Vec<usize> = match &keys {
            Some(keys) if self.plan.concurrency > 1 => {
                let of_mine: Vec<&Vec<u8>> = mine.iter().map(|&i| &keys[i]).collect();
                calls_of(&of_mine, self.plan.concurrency)
            }
            _ => vec![0; mine.len()],
        };
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); calls.iter().max().map_or(0, |m| m + 1)];
        for (&i, &call) in mine.iter().zip(&calls) {
            groups[call].push(i);
        }
        let results = futures::future::join_all(groups.iter().map(|group| {
            let messages = group
                .iter()
                .map(|&i| to_message(&batch[i], self.epoch))
                .collect();
            call_batch(self.handler.as_ref(), &self.sub, messages, Some(gate))
        }))
        .await;
        // Each message's call and outcome (none: another partition's).
        let mut call_of: Vec<Option<usize>> = vec![None; batch.len()];
        let mut outcomes: Vec<Option<Result<(), String>>> = vec![None; batch.len()];
        for (call, (group, results)) in groups.iter().zip(results).enumerate() {
            let mut results = results.into_iter();
            for &i in group {
                call_of[i] = Some(call);
                outcomes[i] = Some(
                    results
                        .next()
                        .unwrap_or_else(|| Err("not handled: no outcome".to_owned())),
                );
            }
        }
        // Where each call failed first.
        let mut failed_at: Vec<Option<usize>> = vec![None; groups.len()];
        for (i, outcome) in outcomes.iter().enumerate() {
            if let (Some(call), Some(Err(_))) = (call_of[i], outcome) {
                failed_at[call].get_or_insert(i);
            }
        }
        let first_failure = failed_at.iter().flatten().min().copied();
        let one_call = self.plan.concurrency == 1;
        let goes_back = |i: usize| match call_of[i] {
            Some(call) => failed_at[call].is_some_and(|f| f <= i),
            // Another partition's: with one call, it waits with the rest.
            None => one_call && first_failure.is_some_and(|f| f <= i),
        };
        let mut heads = Vec::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            let Some(outcome) = outcome else { continue };
            let head = call_of[i].is_some_and(|call| failed_at[call] == Some(i));
            if head || !goes_back(i) {
                self.counters.count(outcome);
            }
            if let (true, Err(e)) = (head, outcome) {
                let after = (i + 1..batch.len())
                    .filter(|&j| goes_back(j) && (one_call || call_of[j] == call_of[i]))
                    .count();
                let within = if one_call { "its batch" } else { "its call" };
                log(&format!(
                    "component {} failed on {}: {e}; it and the {after} after it in {within} are delivered again in about {} s, in order",
                    self.sub.component,
                    batch[i].subject,
                    RETRY_PAUSE.as_secs()
                ));
                heads.push((batch[i].clone(), e.clone()));
            }
        }
        let back_of: Vec<bool> = (0..batch.len()).map(goes_back).collect();
        let (back, ok): (Vec<_>, Vec<_>) =
            batch.into_iter().zip(back_of).partition(|(_, back)| *back);
        Split {
            ok: ok.into_iter().map(|(m, _)| m).collect(),
            back: back.into_iter().map(|(m, _)| m).collect(),
            heads,
            ours: mine.len(),
        }
    }

    /// Counts a failed call of `msg`; after the entry's `max_attempts` in a
    /// row, publishes it to its `dead_letter_subject` (awaiting the
    /// stream's acknowledgement; `Nats-Msg-Id` makes a second attempt store
    /// it once) and terminates it, so the messages after it go on. Returns
    /// whether it was dead-lettered.
    async fn dead_letter_if_spent(
        &mut self,
        msg: &jetstream::Message,
        reason: &str,
        lease: &Lease,
    ) -> bool {
        let Some(spec) = self.plan.dead_letter.clone() else {
            return false;
        };
        let seq = stream_sequence(msg);
        let failed = self.failures.entry(seq).or_default();
        *failed += 1;
        if *failed < spec.max_attempts || lease.expired() {
            return false;
        }
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in header_pairs(msg.headers.as_ref()) {
            headers.append(name.as_str(), value.as_str());
        }
        let msg_id = format!("{}:{}:{seq}", self.plan.stream, self.plan.consumer.durable);
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        headers.insert(DEAD_LETTER_SUBJECT_HEADER, msg.subject.as_str());
        headers.insert(DEAD_LETTER_SEQUENCE_HEADER, seq.to_string().as_str());
        // One line, bounded: a header value cannot hold a line break.
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(1024)
            .collect();
        headers.insert(DEAD_LETTER_REASON_HEADER, reason.as_str());
        let js = context(&self.client, &self.plan.api);
        let stored = match js
            .publish_with_headers(spec.subject.clone(), headers, msg.payload.clone())
            .await
        {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            log(&format!(
                "{}: could not dead-letter stream sequence {seq} to {:?} ({e}; does a stream store that subject?); it is tried again",
                self.sub.subject, spec.subject
            ));
            return false;
        }
        if let Err(e) = msg.ack_with(AckKind::Term).await {
            log(&format!(
                "{}: dead-lettered stream sequence {seq}, but could not terminate it ({e}): it may come again",
                self.sub.subject
            ));
        }
        self.failures.remove(&seq);
        log(&format!(
            "{}: component {} failed {} times on stream sequence {seq} ({}): dead-lettered to {}, the messages after it go on",
            self.sub.subject, self.sub.component, spec.max_attempts, msg.subject, spec.subject
        ));
        true
    }

    /// [`Pulling::handle`], telling the server every third of `ack_wait`
    /// that the batch, the pull's messages handled so far (`done`, not
    /// acknowledged until the pull is over) and those that arrived meanwhile
    /// (moved from `messages` to `arrived`, to be handled next) are still
    /// being worked on, so a pull that takes longer than `ack_wait` is not
    /// delivered again while this instance holds it. Each time the server
    /// confirms, the pull's lease grows; each guest call is first given the
    /// lease's end (`lease.rs`).
    async fn handle_keeping_alive(
        &self,
        batch: Vec<jetstream::Message>,
        done: &[jetstream::Message],
        messages: &mut Arrivals,
        arrived: &mut Vec<jetstream::Message>,
        lease: &Lease,
    ) -> Split {
        let held: Vec<jetstream::Message> = batch.iter().chain(done).cloned().collect();
        let every = self.plan.consumer.ack_wait / 3;
        let gate = LeaseGate { lease, held: &held };
        let handling = self.handle(batch, &gate);
        tokio::pin!(handling);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                result = &mut handling => return result,
                _ = tick.tick() => {
                    take_arrived(messages, arrived, self.plan.batch);
                    let all: Vec<jetstream::Message> =
                        held.iter().chain(arrived.iter()).cloned().collect();
                    lease.renew(&all).await;
                }
            }
        }
    }

    /// After a failed pull: the consumer as the manifest wants it, made
    /// again when it was deleted under the running trigger (from just after
    /// what this instance acknowledged), checked again when it exists (it
    /// may have been made again by someone else, with other settings). A
    /// consumer that differs is not pulled from: the difference is logged
    /// and the check repeated on the next failure.
    /// After [`PULL_RETRY`], [`Pulling::recheck`]; both given up on `stop`
    /// (with the server gone its requests wait seconds each, and a stop
    /// must not). Returns whether the stop came.
    async fn recheck_later(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        if *stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = stop.changed() => return true,
            _ = tokio::time::sleep(PULL_RETRY) => {}
        }
        tokio::select! {
            _ = stop.changed() => true,
            _ = self.recheck() => false,
        }
    }

    async fn recheck(&mut self) {
        let start = self.acked_up_to.load(std::sync::atomic::Ordering::SeqCst) + 1;
        match provision_from(&self.client, &self.plan, Some((self.epoch, start))).await {
            Ok((consumer, epoch)) => {
                if epoch != self.epoch {
                    log(&format!(
                        "{}: stream {:?} was made again (epoch {} → {epoch}): its sequences start again",
                        self.sub.subject, self.plan.stream, self.epoch
                    ));
                    self.epoch = epoch;
                    self.acked_up_to
                        .store(0, std::sync::atomic::Ordering::SeqCst);
                }
                if self.refused.take().is_some() {
                    log(&format!(
                        "{}: the consumer is usable again",
                        self.sub.subject
                    ));
                }
                self.leader = leader_of(consumer.cached_info());
                self.consumer = consumer;
            }
            Err(e) => {
                let why = e.to_string();
                // Once per reason: it is checked again every second.
                if self.refused.as_deref() != Some(why.as_str()) {
                    log(&format!("{}: not pulling: {why}", self.sub.subject));
                }
                self.refused = Some(why);
            }
        }
    }

    /// Settles each of `msgs` (see [`Pulling::settle`]), unless the pull's
    /// lease is over: then the server may have delivered them to another
    /// instance, and an acknowledgement from here would free a third one
    /// to overtake it (a hand-back would deliver them twice at once).
    async fn settle_all(&self, msgs: &[jetstream::Message], ok: bool, lease: &Lease) {
        if msgs.is_empty() {
            return;
        }
        // A hand-back first clears the waiting slot; what that brings is
        // this instance's (just delivered) and goes back with the rest.
        let brought = if ok {
            Vec::new()
        } else {
            self.clear_waiting().await
        };
        let mut settled = Vec::with_capacity(msgs.len() + brought.len());
        if lease.expired() {
            log(&format!(
                "{}: held {} messages past ack_wait (this instance was paused, or cut off from the server): \
                 leaving them to the server, which delivers them again; not {}",
                self.sub.subject,
                msgs.len(),
                if ok {
                    "acknowledging them"
                } else {
                    "handing them back"
                }
            ));
        } else {
            settled.extend_from_slice(msgs);
        }
        settled.extend(brought);
        in_stream_order(&mut settled);
        for msg in &settled {
            self.settle(msg, ok).await;
        }
    }

    /// Before a hand-back: makes sure the consumer's waiting slot holds no
    /// pull that has just expired, or whose client has gone, by taking the
    /// slot with a pull of [`CLEARING_PULL`] and reading it to its end
    /// (when the slot is another instance's, asking again every
    /// [`STANDBY_POLL`] for at most `max_wait` and a half, the longest that
    /// pull may last; a pull the server took is read to its end even past
    /// that). Returns what it brought (a message handed back elsewhere
    /// meanwhile), to be handed back too.
    ///
    /// nats-server 2.9.10 loses a handed-back message until `ack_wait` when
    /// it takes it off its redelivery queue while the waiting pull is one of
    /// those: it finds no one to deliver it to and drops it without putting
    /// it back (`getNextMsg`: "We will redo this one", `o.sseq--`; fixed
    /// upstream in 8272e749, v2.11.0). Every later pull then steps back
    /// behind it. With the slot empty when the hand-back arrives, or taken
    /// by a pull made milliseconds before, the handed-back messages wait in
    /// the queue for the next pull.
    async fn clear_waiting(&self) -> Vec<jetstream::Message> {
        let mut brought = Vec::new();
        let deadline = tokio::time::Instant::now() + self.plan.max_wait * 3 / 2;
        while tokio::time::Instant::now() < deadline {
            let pull = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(CLEARING_PULL)
                .messages()
                .await;
            let Ok(mut pull) = pull else { return brought };
            let mut slot_taken = false;
            loop {
                // Read to its end, not cut at the deadline: a pull the server
                // took and this instance stopped reading would be that very
                // pull whose client has gone. (It may end without a word, see
                // `crate::arrivals`.)
                let next = tokio::time::timeout(CLEARING_PULL + UNANNOUNCED_END, pull.next()).await;
                match next {
                    Ok(Some(Ok(m))) => brought.push(m),
                    Ok(Some(Err(e))) if e.to_string().contains(OTHER_PULL_OPEN) => {
                        slot_taken = true;
                        break;
                    }
                    // Ended (its 408), failed, or no answer.
                    Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
                }
            }
            if !slot_taken {
                return brought;
            }
            tokio::time::sleep(STANDBY_POLL).await;
        }
        brought
    }

    /// Acknowledges the message, or hands it back for redelivery at once
    /// (through [`Pulling::settle_all`], which first clears the waiting
    /// slot).
    async fn settle(&self, msg: &jetstream::Message, ok: bool) {
        let kind = if ok { AckKind::Ack } else { AckKind::Nak(None) };
        if ok {
            self.acked_up_to
                .fetch_max(stream_sequence(msg), std::sync::atomic::Ordering::SeqCst);
        }
        if let Err(e) = msg.ack_with(kind).await {
            log(&format!(
                "{}: could not settle a message ({e}); it is delivered again after ack_wait",
                self.sub.subject
            ));
        }
    }
}

/// A batch after the handler: the messages up to the first that failed,
/// that one with the rest, and why it failed.
pub(crate) struct Split {
    ok: Vec<jetstream::Message>,
    back: Vec<jetstream::Message>,
    /// Each failed call's first failed message (in `back`), with why.
    heads: Vec<(jetstream::Message, String)>,
    /// How many of the batch were this consumer's (all, without partitions).
    ours: usize,
}

/// The lease gate of one guest call: renews the pull's lease over the
/// messages this instance holds when a call would not fit in it.
struct LeaseGate<'a> {
    lease: &'a Lease,
    held: &'a [jetstream::Message],
}

impl Gate for LeaseGate<'_> {
    fn open(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<u64, String>> + Send + '_>> {
        Box::pin(self.lease.for_call(self.held))
    }
}

/// [`take_arrived`], then more as they come (see [`GATHER_GAP`]).
async fn gather(messages: &mut Arrivals, into: &mut Vec<jetstream::Message>, limit: usize) {
    take_arrived(messages, into, limit);
    let until = tokio::time::Instant::now() + GATHER_MAX;
    while into.len() < limit {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match messages.next_within(GATHER_GAP.min(left)).await {
            Some(m) => {
                into.push(m);
                take_arrived(messages, into, limit);
            }
            None => break,
        }
    }
}

/// Moves the messages of a pull that have arrived already into `into`, up
/// to `limit` in all, without waiting.
fn take_arrived(messages: &mut Arrivals, into: &mut Vec<jetstream::Message>, limit: usize) {
    while into.len() < limit {
        match messages.next_now() {
            Some(m) => into.push(m),
            None => break,
        }
    }
}

/// The key of `msg` (empty when it has none; see [`OrderingKey::of`]).
fn key_of(key: &OrderingKey, msg: &jetstream::Message) -> Vec<u8> {
    // The header map's order differs from message to message: pick the
    // name the same way on every instance (see OrderingKey::Header).
    let header = |name: &str| {
        msg.headers
            .as_ref()?
            .iter()
            .filter(|(n, _)| AsRef::<str>::as_ref(*n).eq_ignore_ascii_case(name))
            .min_by_key(|(n, _)| {
                let n: &str = n.as_ref();
                (n != name, n.to_owned())
            })
            .and_then(|(_, values)| values.first())
            .map(|v| v.as_str())
    };
    key.of(&msg.subject, header, &msg.payload)
}

/// A message's delivery, for [`admission::decide`].
fn delivery(msg: &jetstream::Message) -> Delivery {
    msg.info().map_or(
        Delivery {
            stream: 0,
            consumer: 0,
            count: 0,
        },
        |i| Delivery {
            stream: i.stream_sequence,
            consumer: i.consumer_sequence,
            count: i.delivered,
        },
    )
}

/// A message's stream sequence (0 when it has no JetStream metadata).
fn stream_sequence(msg: &jetstream::Message) -> u64 {
    msg.info().map_or(0, |i| i.stream_sequence)
}

/// Sorts messages of one consumer by stream sequence, the order they are
/// handled and handed back in, keeping one delivery of each: the server can
/// deliver a message again into a pull that holds it already (handed back
/// by another instance while its `ack_wait` ran out), and a pull counted
/// twice would look, to [`Pulling::admit`], like one holding everything
/// unacknowledged. The latest delivery is kept (its count is the truest);
/// an acknowledgement settles the stream sequence, whichever delivery sends it.
fn in_stream_order(msgs: &mut Vec<jetstream::Message>) {
    distinct_in_order(msgs, |m| {
        let delivered = m.info().map_or(0, |i| i.delivered);
        (stream_sequence(m), delivered)
    });
}

/// [`in_stream_order`] over any item with a (stream sequence, delivery
/// count) key.
fn distinct_in_order<T>(items: &mut Vec<T>, key: impl Fn(&T) -> (u64, i64)) {
    items.sort_by_key(|m| {
        let (seq, delivered) = key(m);
        (seq, std::cmp::Reverse(delivered))
    });
    items.dedup_by_key(|m| key(m).0);
}

/// The message as the handler sees it: subject, payload, headers, plus the
/// stream sequence and delivery count as headers.
fn to_message(msg: &jetstream::Message, epoch: u64) -> Message {
    let mut headers = header_pairs(msg.headers.as_ref());
    let stream = msg.info().ok().map(|info| StreamInfo {
        sequence: info.stream_sequence,
        delivered: u64::try_from(info.delivered).unwrap_or(0),
        published_ms: u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
    });
    if let Some(info) = &stream {
        headers.push((STREAM_SEQUENCE_HEADER.to_owned(), info.sequence.to_string()));
        headers.push((STREAM_EPOCH_HEADER.to_owned(), epoch.to_string()));
        headers.push((DELIVERED_HEADER.to_owned(), info.delivered.to_string()));
    }
    Message {
        subject: msg.subject.to_string(),
        payload: msg.payload.to_vec(),
        headers,
        reply: None,
        stream,
    }
}

#[cfg(test)]
mod tests {
    use super::{distinct_in_order, passing};

    #[test]
    fn a_cluster_still_forming_is_asked_again_and_a_real_answer_is_not() {
        for transient in [
            "looking up stream \"TASKS\": request error: timed out",
            "creating stream \"TASKS\": jetstream error: JetStream system temporarily unavailable (code 503, error code 10008)",
            "creating stream \"TASKS\": jetstream error: no suitable peers for placement (code 400, error code 10005)",
        ] {
            assert!(passing(transient), "{transient}");
        }
        for answer in [
            "looking up stream \"TASKS\": jetstream error: stream not found (code 404, error code 10059)",
            "creating stream \"TASKS\": jetstream error: subjects overlap with an existing stream (code 400, error code 10065)",
        ] {
            assert!(!passing(answer), "{answer}");
        }
    }

    #[test]
    fn a_pull_is_handled_in_stream_order_once_per_message_keeping_its_latest_delivery() {
        // (stream sequence, delivery count): 1700 came twice into the pull.
        let mut pull = vec![(1702, 1), (1700, 2), (1701, 1), (1700, 3), (1699, 2)];
        distinct_in_order(&mut pull, |&(seq, delivered)| (seq, delivered));
        assert_eq!(pull, [(1699, 2), (1700, 3), (1701, 1), (1702, 1)]);
    }
}
