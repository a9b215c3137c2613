//! `--redis URL`: the native yardstick of the distributed path. A durable
//! JetStream pull consumer (one, so every task's events stay in order) on
//! its own stream, batches of up to `--batch`; for each: the events parsed
//! with the domain's rules, one `MGET` of the tasks they touch, the events
//! folded per task in order with the domain's merge rules, one `MSET` of
//! the results, then every message acknowledged. What the machine, the
//! NATS cluster and Redis allow with the app's data and order, and none of
//! its other work (no outbox, feed, counters or logs).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use tasks_domain::event::{self, EventKind};
use tasks_domain::{Task, Timestamp, keys, merge};

/// What the Redis mode needs.
pub struct Args {
    /// NATS server URLs, comma-separated.
    pub server: String,
    /// The stream's subjects: `<prefix>.created` and `<prefix>.updated`.
    pub prefix: String,
    /// Redis URL (a database of its own: the tasks are written there).
    pub redis: String,
    /// Events to apply before exiting.
    pub count: usize,
    /// Most messages per pull.
    pub batch: usize,
    /// The stream's replicas.
    pub replicas: usize,
}

/// Runs the yardstick: prints `ready` once its stream and consumer exist,
/// then the time from the first message to the last write.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let servers: Vec<async_nats::ServerAddr> = a
        .server
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let client = async_nats::connect(servers).await?;
    let js = jetstream::new(client.clone());
    let name = a.prefix.to_uppercase();
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{}.*", a.prefix)],
            num_replicas: a.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("stream {name}: {e}"))?;
    let consumer = stream
        .get_or_create_consumer(
            "baseline",
            pull::Config {
                durable_name: Some("baseline".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: i64::try_from(a.batch).unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("consumer: {e}"))?;
    let redis = redis::Client::open(a.redis.as_str())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    println!("ready");

    let mut first: Option<Instant> = None;
    let mut applied = 0usize;
    while applied < a.count {
        let mut pulled = consumer
            .fetch()
            .max_messages(a.batch)
            .expires(Duration::from_millis(200))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pull: {e}"))?;
        let mut msgs = Vec::with_capacity(a.batch);
        while let Some(m) = pulled.next().await {
            msgs.push(m.map_err(|e| anyhow::anyhow!("message: {e}"))?);
        }
        if msgs.is_empty() {
            continue;
        }
        first.get_or_insert_with(Instant::now);
        let mut events = Vec::with_capacity(msgs.len());
        for m in &msgs {
            let kind = m.subject.rsplit('.').next().unwrap_or("");
            let ev = event::parse(&format!("tasks.{kind}"), &m.payload)
                .map_err(|r| anyhow::anyhow!(r.reason))?;
            events.push(ev);
        }
        let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let task_keys: Vec<String> = ids.iter().map(|id| keys::task(id)).collect();
        let docs: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&task_keys)
            .query_async(&mut conn)
            .await?;
        let mut tasks: HashMap<&str, Option<Task>> = HashMap::new();
        for (id, doc) in ids.iter().zip(docs) {
            let task = doc.map(|d| Task::from_json(&d)).transpose()?;
            tasks.insert(id, task);
        }
        let now = Timestamp::now();
        for ev in &events {
            let slot = tasks.entry(ev.id.as_str()).or_default();
            *slot = Some(match (ev.kind, slot.as_ref()) {
                (EventKind::Created, existing) => merge::created(existing, &ev.id, &ev.fields, now),
                (EventKind::Updated, Some(old)) => merge::updated(old, &ev.fields, now),
                (EventKind::Updated, None) => bail!("update of unknown task {}", ev.id),
                (EventKind::Deleted, _) => bail!("the baseline handles creates and updates"),
            });
        }
        let mut set = redis::cmd("MSET");
        for (id, task) in &tasks {
            if let Some(task) = task {
                set.arg(keys::task(id)).arg(task.to_json());
            }
        }
        set.query_async::<()>(&mut conn).await?;
        for m in &msgs {
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        applied += msgs.len();
    }
    client.flush().await?;
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "baseline: {applied} events written to Redis in {secs:.3} s ({:.0}/s)",
        applied as f64 / secs
    );
    Ok(())
}
