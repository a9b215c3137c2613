//! `tasks-wal`: puts the SQLite files a Spin runtime config gives its
//! key-value stores in write-ahead-log mode, before `spin up` opens them.
//!
//! ```text
//! tasks-wal runtime-config.toml
//! ```
//! Every `[key_value_store.<label>]` of `type = "spin"` with a `path` (relative
//! paths resolve against the config file's directory, as Spin resolves them)
//! is created if absent and switched; one line per file. A file another
//! process holds open keeps its mode and is reported, not an error: the app
//! runs either way, WAL only makes commits cheaper (docs/performance.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tasks_seed::{Journal, use_wal};

/// The files of the config's `spin`-type key-value stores, by label.
fn spin_store_files(config: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {config:?}"))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {config:?}"))?;
    let base = config.parent().unwrap_or(Path::new(""));
    let mut files = Vec::new();
    let Some(stores) = table.get("key_value_store").and_then(toml::Value::as_table) else {
        return Ok(files);
    };
    for (label, store) in stores {
        let is_spin = store.get("type").and_then(toml::Value::as_str) == Some("spin");
        if let (true, Some(path)) = (is_spin, store.get("path").and_then(toml::Value::as_str)) {
            files.push((label.clone(), base.join(path)));
        }
    }
    Ok(files)
}

fn main() -> anyhow::Result<()> {
    let configs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if configs.is_empty() {
        bail!("usage: tasks-wal RUNTIME_CONFIG.toml...");
    }
    for config in &configs {
        for (label, file) in spin_store_files(config)? {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {dir:?}"))?;
            }
            let what = match use_wal(&file).with_context(|| format!("opening {file:?}"))? {
                Journal::Switched => "now in WAL mode".to_owned(),
                Journal::Already => "in WAL mode".to_owned(),
                Journal::Kept(mode) => {
                    format!("left in {mode} mode: another process has it open")
                }
            };
            println!("store {label}: {} {what}", file.display());
        }
    }
    Ok(())
}
