//! What the SQLite file tests share.

/// A fresh `kv.db` path in its own empty directory, per test process and `name`.
pub fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tasks-seed-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir.join("kv.db")
}
