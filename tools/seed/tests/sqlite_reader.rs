//! The task reader over real SQLite files in Spin's key-value format.

mod common;

use common::temp_db;
use tasks_domain::{ListRequest, ReadError, Status, Task, Timestamp, keys};
use tasks_kv::KeyValue;
use tasks_read::TaskReader;
use tasks_seed::SqliteKv;

#[test]
fn reader_pages_over_sqlite_and_stores_its_index_locally() -> anyhow::Result<()> {
    let db = temp_db("pages");
    // Two labels in one file, as Spin does with one runtime-config path.
    let tasks = SqliteKv::open(&db, "tasks")?;
    let local = SqliteKv::open(&db, "default")?;
    let mut pairs = Vec::new();
    for i in 0..1_234 {
        let t = Task {
            id: format!("k-{i:04}"),
            title: format!("T{i}"),
            description: None,
            status: if i % 2 == 0 {
                Status::Pending
            } else {
                Status::Completed
            },
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            version: 1,
            stream_seq: None,
            stream_epoch: None,
        };
        pairs.push((keys::task(&t.id), t.to_json()));
    }
    pairs.push((keys::TASKS_STAMP.into(), b"s1".to_vec()));
    tasks.set_many(pairs)?;

    let reader = TaskReader::new(&tasks, &local);
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let out = reader.list_tasks(&ListRequest {
            cursor,
            limit: Some(200),
            status: Some(Status::Completed),
        })?;
        seen.extend(out.page.tasks.into_iter().map(|t| t.id));
        match out.page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 617);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert!(
        local.get(keys::INDEX_HEAD)?.is_some(),
        "index head stored in the local label"
    );
    assert!(
        tasks.get(keys::INDEX_HEAD)?.is_none(),
        "nothing derived in the tasks label"
    );
    assert_eq!(reader.get_task("k-0001")?.status, Status::Completed);
    assert_eq!(
        reader.get_task("k-9999"),
        Err(ReadError::NotFound("k-9999".into()))
    );
    Ok(())
}
