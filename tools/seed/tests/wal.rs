//! `use_wal` on real SQLite files: the mode sticks for later connections, and
//! a file another connection holds keeps its mode instead of failing.

mod common;

use common::temp_db;
use rusqlite::Connection;
use tasks_kv::KeyValue;
use tasks_seed::{Journal, SqliteKv, use_wal};

fn mode(db: &std::path::Path) -> anyhow::Result<String> {
    Ok(Connection::open(db)?.query_row("PRAGMA journal_mode", [], |r| r.get(0))?)
}

#[test]
fn a_new_file_is_created_in_wal_mode_and_later_connections_keep_it() -> anyhow::Result<()> {
    let db = temp_db("new");
    assert_eq!(use_wal(&db)?, Journal::Switched);
    assert_eq!(mode(&db)?, "wal");
    assert_eq!(use_wal(&db)?, Journal::Already);

    // Spin's own access pattern: separate connections, no pragmas of their own.
    let writer = SqliteKv::open(&db, "tasks")?;
    let reader = SqliteKv::open(&db, "tasks")?;
    writer.set("task:t-1", b"one")?;
    assert_eq!(reader.get("task:t-1")?.as_deref(), Some(&b"one"[..]));
    assert_eq!(mode(&db)?, "wal");
    Ok(())
}

#[test]
fn an_existing_file_keeps_its_data_when_switched() -> anyhow::Result<()> {
    let db = temp_db("existing");
    SqliteKv::open(&db, "tasks")?.set("task:t-1", b"kept")?;
    assert_eq!(mode(&db)?, "delete");
    assert_eq!(use_wal(&db)?, Journal::Switched);
    assert_eq!(
        SqliteKv::open(&db, "tasks")?.get("task:t-1")?.as_deref(),
        Some(&b"kept"[..])
    );
    Ok(())
}

#[test]
fn a_file_another_connection_is_reading_keeps_its_mode() -> anyhow::Result<()> {
    let db = temp_db("busy");
    SqliteKv::open(&db, "tasks")?.set("task:t-1", b"x")?;
    let other = Connection::open(&db)?;
    other.execute_batch("BEGIN; SELECT count(*) FROM spin_key_value;")?;
    assert_eq!(use_wal(&db)?, Journal::Kept("delete".into()));
    other.execute_batch("COMMIT")?;
    assert_eq!(mode(&db)?, "delete");
    Ok(())
}
