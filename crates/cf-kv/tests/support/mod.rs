//! Starts `tests/miniflare/serve.mjs` once per test binary.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use tasks_cf_kv::native::UreqHttp;
use tasks_cf_kv::{Client, Config};

/// A running emulator. Its stdin is our pipe: when this process exits, the
/// pipe closes and `serve.mjs` disposes miniflare and exits.
pub struct Miniflare {
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    /// The API path under the origin (`/cdn-cgi/local/explorer/api`).
    pub api_path: String,
    /// The namespace id serve.mjs configured.
    pub namespace_id: String,
}

impl Miniflare {
    /// A client on `origin` (miniflare's, or a proxy's in front of it).
    pub fn client_via(&self, origin: &str) -> Client<UreqHttp> {
        let config = Config::new(format!("{origin}{}", self.api_path), &self.namespace_id, "");
        Client::new(UreqHttp::new(Duration::from_secs(120)), config).expect("client")
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/miniflare")
}

/// The shared emulator, or `None` (after printing `SKIPPED: …`) when
/// miniflare is not installed. Under `CI=true` a missing emulator fails the
/// test instead: CI must not pass on tests that did not run.
pub fn miniflare() -> Option<&'static Miniflare> {
    static MF: OnceLock<Option<Miniflare>> = OnceLock::new();
    let mf = MF.get_or_init(start).as_ref();
    if mf.is_none() {
        let why =
            "miniflare not installed (fix: tests/cloudflare-conformance.sh installs it with npm)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        println!("SKIPPED: {why}");
    }
    mf
}

fn start() -> Option<Miniflare> {
    let dir = dir();
    if !dir.join("node_modules/miniflare/package.json").is_file() {
        return None;
    }
    let mut child = Command::new("node")
        .arg("serve.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is needed to run miniflare (tests/miniflare/node_modules exists)");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining so miniflare never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("serve.mjs printed nothing within 60 s")
        .expect("serve.mjs exited before printing its address")
        .expect("reading serve.mjs output");
    let info: serde_json::Value =
        serde_json::from_str(&line).expect("serve.mjs first line is JSON");
    let base = info["base"].as_str().expect("base").to_owned();
    let namespace_id = info["namespaceId"]
        .as_str()
        .expect("namespaceId")
        .to_owned();
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let path_at = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    Some(Miniflare {
        _child: child,
        origin: base[..path_at].to_owned(),
        api_path: base[path_at..].to_owned(),
        namespace_id,
    })
}
