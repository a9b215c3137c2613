//! `tasks-seed`: writes tasks into a Spin SQLite key-value file.
//!
//! ```text
//! tasks-seed --db .spin/tasks.db [--store tasks] [--count N] [--prefix t-] [--task JSON]...
//! ```
//! `--count` generates `N` tasks (`<prefix>00000`…) cycling through the
//! statuses; each `--task` adds one from JSON (`id`, `title`, optional
//! `description` and `status`). The tasks store's membership stamp is
//! rewritten afterwards, as every writer must.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;
use tasks_domain::{Status, Task, Timestamp, keys, validate};
use tasks_kv::KeyValue;
use tasks_seed::SqliteKv;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Partial {
    id: String,
    title: String,
    description: Option<String>,
    status: Option<Status>,
}

fn build(p: Partial, at: Timestamp) -> anyhow::Result<Task> {
    validate::validate_id(&p.id)?;
    let title = validate::normalize_title(&p.title)?;
    if let Some(d) = &p.description {
        validate::validate_description(d)?;
    }
    Ok(Task {
        id: p.id,
        title,
        description: p.description,
        status: p.status.unwrap_or_default(),
        created_at: at,
        updated_at: at,
        version: 1,
        stream_seq: None,
        stream_epoch: None,
    })
}

fn main() -> anyhow::Result<()> {
    let mut db: Option<PathBuf> = None;
    let mut store = "tasks".to_owned();
    let mut count = 0usize;
    let mut prefix = "t-".to_owned();
    let mut partials = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => db = Some(PathBuf::from(value()?)),
            "--store" => store = value()?,
            "--count" => count = value()?.parse().context("--count must be a number")?,
            "--prefix" => prefix = value()?,
            "--task" => partials.push(
                serde_json::from_str::<Partial>(&value()?)
                    .context("--task must be a task JSON object")?,
            ),
            other => bail!(
                "unknown argument {other:?}; see the comment at the top of tools/seed/src/main.rs"
            ),
        }
    }
    let db = db.context("--db is required")?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir:?}"))?;
    }
    let kv = SqliteKv::open(&db, &store).with_context(|| format!("opening {db:?}"))?;

    let now = Timestamp::now();
    let mut pairs = Vec::with_capacity(count + partials.len());
    for i in 0..count {
        let status = Status::ALL[i % Status::ALL.len()];
        let t = build(
            Partial {
                id: format!("{prefix}{i:05}"),
                title: format!("Task number {i}"),
                description: None,
                status: Some(status),
            },
            Timestamp(now.millis() - (count - i) as i64 * 1_000),
        )?;
        pairs.push((keys::task(&t.id), t.to_json()));
    }
    for p in partials {
        let t = build(p, now)?;
        pairs.push((keys::task(&t.id), t.to_json()));
    }
    let written = pairs.len();
    pairs.push((
        keys::TASKS_STAMP.to_owned(),
        format!("seed-{}", now.millis()).into_bytes(),
    ));
    kv.set_many(pairs).context("writing tasks")?;
    println!(
        "seeded {written} tasks into store {store:?} of {}",
        db.display()
    );
    Ok(())
}
