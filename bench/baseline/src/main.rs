//! `ingest-baseline --server URL --subject S --db FILE --count N [--journal wal|delete]`
//! `ingest-baseline --server URL[,URL…] --redis URL --prefix P --count N [--batch 100] [--replicas R]`
//!
//! The native yardstick for the writer: subscribes with async-nats, parses
//! and validates each event with the same domain rules, and writes the same
//! JSON document into a table shaped like Spin's key-value store, one
//! transaction per event with SQLite's defaults (as Spin's `set` does), in
//! WAL mode like the app's files (`tasks-wal`), or with `--journal delete` in
//! the rollback journal Spin gives a file it creates itself.
//! Prints `ready` once subscribed and exits after N events, printing the
//! time from the first message to the last commit.
//!
//! With `--redis`, the yardstick of the distributed path instead
//! ([`redis_mode`]): a JetStream pull consumer of creates and updates on
//! `P.created` / `P.updated`, one pipeline of Redis calls per batch.

mod redis_mode;

use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use rusqlite::{Connection, params};
use tasks_domain::event::{self, EventKind};
use tasks_domain::{Timestamp, keys, merge};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut server, mut subject, mut db, mut count) =
        (String::new(), String::new(), String::new(), 0usize);
    let mut journal = "wal".to_owned();
    let (mut redis, mut prefix, mut batch, mut replicas) = (None, "baseline".to_owned(), 100, 1);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => server = value,
            "--subject" => subject = value,
            "--db" => db = value,
            "--count" => count = value.parse()?,
            "--journal" => journal = value,
            "--redis" => redis = Some(value),
            "--prefix" => prefix = value,
            "--batch" => batch = value.parse()?,
            "--replicas" => replicas = value.parse()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    if let Some(redis) = redis {
        return redis_mode::run(redis_mode::Args {
            server,
            prefix,
            redis,
            count,
            batch,
            replicas,
        })
        .await;
    }
    match journal.as_str() {
        "wal" => drop(tasks_seed::use_wal(std::path::Path::new(&db))?),
        "delete" => {}
        other => bail!("--journal is wal or delete, not {other:?}"),
    }
    let conn = Connection::open(&db)?;
    conn.execute(
        "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key))",
        [],
    )?;
    let client = async_nats::connect(&server).await?;
    let mut sub = client.subscribe(subject).await?;
    client.flush().await?;
    println!("ready");

    let mut first: Option<Instant> = None;
    let mut stmt = conn.prepare(
        "INSERT INTO spin_key_value (store, key, value) VALUES ('tasks', ?1, ?2)
         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
    )?;
    for _ in 0..count {
        let msg = sub.next().await.context("subscription ended")?;
        first.get_or_insert_with(Instant::now);
        let ev =
            event::parse("tasks.created", &msg.payload).map_err(|r| anyhow::anyhow!(r.reason))?;
        if ev.kind != EventKind::Created {
            bail!("baseline handles creates only");
        }
        let task = merge::created(None, &ev.id, &ev.fields, Timestamp::now());
        stmt.execute(params![keys::task(&task.id), task.to_json()])?;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "baseline: {count} events committed in {secs:.3} s ({:.0}/s)",
        count as f64 / secs
    );
    Ok(())
}
