//! [`SqliteKv`]: a [`KeyValue`] over the file format of Spin's embedded
//! key-value store (`spin_key_value(store, key, value)`), so native tools and
//! tests read and write exactly what `spin up` does; [`use_wal`] puts such a
//! file in SQLite's write-ahead-log mode before Spin opens it.

use rusqlite::{Connection, OptionalExtension, params};
use tasks_kv::{KeyValue, StoreError};

/// Spin's own schema, created when absent.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
)";

/// What [`use_wal`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Journal {
    /// The file was switched to WAL now (or created in it).
    Switched,
    /// The file was in WAL already.
    Already,
    /// The file stays in the mode named: another process holds it open, and
    /// a file changes mode only while nobody else has it.
    Kept(String),
}

/// Puts the SQLite file at `path` (created if absent) in write-ahead-log
/// mode. The mode is kept in the file, so every later connection uses it,
/// Spin's too (Spin 4.0.2 sets no pragmas and opens its files in the
/// rollback-journal mode otherwise). A commit then syncs the log once instead of the
/// journal's several syncs and file creations, and readers in other processes
/// are not held up by a writer (docs/performance.md).
pub fn use_wal(path: &std::path::Path) -> anyhow::Result<Journal> {
    let conn = Connection::open(path)?;
    // Long enough for a commit elsewhere to end; a process that holds the
    // file open keeps it from changing however long one waits.
    conn.busy_timeout(std::time::Duration::from_millis(200))?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(Journal::Already);
    }
    match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
        Ok(now) if now.eq_ignore_ascii_case("wal") => Ok(Journal::Switched),
        Ok(now) => Ok(Journal::Kept(now)),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Ok(Journal::Kept(mode))
        }
        Err(e) => Err(e.into()),
    }
}

/// One store label inside a Spin SQLite key-value file.
pub struct SqliteKv {
    conn: Connection,
    store: String,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteKv {
    /// Opens (creating if needed) `path`, scoped to the store `label`.
    pub fn open(path: &std::path::Path, label: &str) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute(SCHEMA, [])?;
        Ok(SqliteKv {
            conn,
            store: label.to_owned(),
        })
    }

    /// Writes one pair.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.set_many(vec![(key.to_owned(), value.to_vec())])
    }
}

impl KeyValue for SqliteKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                params![self.store, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                )
                .map_err(err)?;
            for (k, v) in pairs {
                stmt.execute(params![self.store, k, v]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        for k in keys {
            self.conn
                .execute(
                    "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    params![self.store, k],
                )
                .map_err(err)?;
        }
        Ok(())
    }

    fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")
            .map_err(err)?;
        let rows = stmt
            .query_map(params![self.store], |r| r.get(0))
            .map_err(err)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(err)
    }
}
