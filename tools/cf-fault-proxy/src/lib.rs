//! `cf-fault-proxy`: an HTTP/1.1 reverse proxy for tests and benchmarks that
//! injects faults (error statuses with `Retry-After`, latency, dropped
//! connections) and counts KV REST requests by endpoint.
//!
//! Control endpoints, never forwarded:
//! - `POST /__proxy/faults` with e.g. `{"status":429,"retryAfter":2,"count":3}`,
//!   `{"latencyMs":50}`, `{"drop":true,"count":1}`, `{"clear":true}`; an
//!   optional `"path"` substring limits a rule to matching requests;
//! - `GET /__proxy/stats`: request counts (`total`, `get`, `put`, `delete`,
//!   `list`, `bulk_write`, `bulk_get`, `bulk_delete`, `other`, `faulted`);
//! - `POST /__proxy/stats/reset`.
//!
//! One thread per client connection; forwarding is blocking (`ureq`).

pub mod faults;
pub mod stats;
pub mod wire;

use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use faults::{Action, FaultSpec, Faults};
use stats::Stats;
use wire::Request;

/// A keep-alive connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(30);

struct Shared {
    upstream: String,
    agent: ureq::Agent,
    faults: Mutex<Faults>,
    stats: Mutex<Stats>,
    stop: AtomicBool,
}

// A poisoned lock only means another connection's thread panicked; the
// counters and rules are still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running proxy; dropping it stops accepting connections.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds `listen` (port 0 picks a free one) and serves in background
    /// threads, forwarding to `upstream` (`http://host:port`, no path).
    pub fn start(listen: &str, upstream: &str) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            agent,
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(Stats::default()),
            stop: AtomicBool::new(false),
        });
        let accept = Arc::clone(&shared);
        thread::Builder::new()
            .name("cf-fault-proxy-accept".to_owned())
            .spawn(move || accept_loop(&listener, &accept))?;
        Ok(Proxy { addr, shared })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("cf-fault-proxy-conn".to_owned())
            .spawn(move || {
                // Resets and idle timeouts are routine; only malformed requests are news.
                if let Err(e) = serve(stream, &shared)
                    && e.kind() == io::ErrorKind::InvalidData
                {
                    eprintln!("cf-fault-proxy: {e}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("cf-fault-proxy: cannot start a connection thread: {e}");
        }
    }
}

/// Serves one client connection until it closes, asks to close, or a drop
/// fault closes it.
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(req) = wire::read_request(&mut reader, &mut out)? {
        if req.path().starts_with("/__proxy/") {
            let (status, body) = control(&req, shared);
            let headers = [("content-type".to_owned(), "application/json".to_owned())];
            wire::write_response(&mut out, status, &headers, body.as_bytes(), req.close)?;
        } else {
            lock(&shared.stats).count(stats::classify(&req.method, req.path()));
            let plan = lock(&shared.faults).plan_for(Some(&req.method), req.path());
            if !plan.delay.is_zero() {
                thread::sleep(plan.delay);
            }
            match plan.action {
                Some(Action::Drop) => {
                    lock(&shared.stats).faulted += 1;
                    return Ok(());
                }
                Some(Action::Status {
                    status,
                    retry_after,
                    body,
                }) => {
                    lock(&shared.stats).faulted += 1;
                    let mut headers =
                        vec![("content-type".to_owned(), "application/json".to_owned())];
                    if let Some(r) = retry_after {
                        headers.push(("retry-after".to_owned(), r));
                    }
                    wire::write_response(&mut out, status, &headers, body.as_bytes(), req.close)?;
                }
                None => {
                    let (status, headers, body) = forward(&req, shared);
                    wire::write_response(&mut out, status, &headers, &body, req.close)?;
                }
            }
        }
        if req.close {
            break;
        }
    }
    Ok(())
}

fn control(req: &Request, shared: &Shared) -> (u16, String) {
    let error = |status: u16, msg: String| {
        (
            status,
            serde_json::json!({ "ok": false, "error": msg }).to_string(),
        )
    };
    match (req.method.as_str(), req.path()) {
        ("POST", "/__proxy/faults") => {
            let spec: FaultSpec = match serde_json::from_slice(&req.body) {
                Ok(spec) => spec,
                Err(e) => return error(400, format!("bad fault: {e}")),
            };
            let mut faults = lock(&shared.faults);
            match faults.apply(spec) {
                Ok(()) => (
                    200,
                    serde_json::json!({ "ok": true, "rules": faults.len() }).to_string(),
                ),
                Err(e) => error(400, e),
            }
        }
        ("GET", "/__proxy/stats") => {
            let stats = lock(&shared.stats).clone();
            (200, serde_json::to_string(&stats).unwrap_or_default())
        }
        ("POST", "/__proxy/stats/reset") => {
            *lock(&shared.stats) = Stats::default();
            (200, r#"{"ok":true}"#.to_owned())
        }
        (method, path) => error(404, format!("no control endpoint {method} {path}")),
    }
}

/// Status, headers and body of an answer.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// Sends the request upstream; an unreachable upstream is a 502.
fn forward(req: &Request, shared: &Shared) -> Answer {
    match try_forward(req, shared) {
        Ok(answer) => answer,
        Err(e) => (
            502,
            vec![("content-type".to_owned(), "text/plain".to_owned())],
            format!("cf-fault-proxy: upstream {}: {e}", shared.upstream).into_bytes(),
        ),
    }
}

fn try_forward(req: &Request, shared: &Shared) -> Result<Answer, ureq::Error> {
    let mut builder = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("{}{}", shared.upstream, req.target));
    for (k, v) in &req.headers {
        if !wire::is_hop_by_hop(k) && !k.eq_ignore_ascii_case("content-length") {
            builder = builder.header(k, v);
        }
    }
    let bodiless = matches!(req.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS");
    let resp = if bodiless && req.body.is_empty() {
        shared.agent.run(builder.body(())?)?
    } else {
        shared.agent.run(builder.body(req.body.as_slice())?)?
    };
    let r = tasks_cf_kv::native::parts(resp)?;
    Ok((r.status, r.headers, r.body))
}
