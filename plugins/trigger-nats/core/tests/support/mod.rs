//! Shared by the integration tests: a real `nats-server` on a free loopback
//! port, a recording handler, and a listener run until stopped.
#![allow(dead_code)] // each test file uses its own part

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trigger_nats_core::HANDLER_TIMEOUT_HEADER;
use trigger_nats_core::Subscription;
use trigger_nats_core::config::Credentials;
use trigger_nats_core::listener::{self, HandlerFuture, Message, Stats};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port, never the same twice in this process: the tests
/// run in parallel, and a port the OS hands out, released, can be handed to
/// the next test before the first one's server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + std::process::id() % 20_000;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(base + offset % 20_000).unwrap_or(20_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn start_server(port: u16) -> Server {
    start_server_with(port, &[])
}

pub fn start_server_with(port: u16, extra: &[&str]) -> Server {
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("these tests need nats-server on PATH (apt-get install nats-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    }
}

pub fn sub(subject: &str, queue: Option<&str>, max_in_flight: usize) -> Subscription {
    Subscription {
        component: "writer".into(),
        subject: subject.into(),
        queue_group: queue.map(Into::into),
        max_in_flight,
        handler_timeout: Duration::from_secs(30),
        jetstream: None,
        tick: None,
    }
}

/// Records what it saw; fails messages whose payload is `fail`; sleeps `delay`;
/// never finishes a `hang` payload unless the handler-timeout header is set.
#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Message>>>,
    pub delay: Duration,
}

impl Recorder {
    pub fn handler(&self) -> Arc<dyn listener::Handler> {
        let me = self.clone();
        Arc::new(move |_component: &str, msg: Message| -> HandlerFuture {
            let me = me.clone();
            Box::pin(async move {
                if !me.delay.is_zero() {
                    tokio::time::sleep(me.delay).await;
                }
                let second_call = msg.headers.iter().any(|(n, _)| n == HANDLER_TIMEOUT_HEADER);
                if msg.payload == b"hang" && !second_call {
                    std::future::pending::<()>().await;
                }
                let fail = msg.payload == b"fail";
                if let Ok(mut seen) = me.seen.lock() {
                    seen.push(msg);
                }
                if fail {
                    Err("handler refused \"fail\"".into())
                } else {
                    Ok(())
                }
            })
        })
    }
    pub fn payloads(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| {
                s.iter()
                    .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub struct Running {
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<Result<Stats, String>>,
}

impl Running {
    pub async fn stop(self) -> Result<Stats, String> {
        let _ = self.stop.send(());
        self.task.await.map_err(|e| e.to_string())?
    }
}

pub async fn start_listener(
    url: &str,
    subs: Vec<Subscription>,
    rec: &Recorder,
) -> Result<Running, async_nats::Error> {
    let client = listener::connect(url, &Credentials::None, "test", std::future::pending())
        .await?
        .ok_or("no client")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let handler = rec.handler();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = ready_tx.send(());
        listener::run(client, subs, handler, async move {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    let _ = ready_rx.await;
    // run() subscribes and flushes before serving; give it that moment.
    tokio::time::sleep(Duration::from_millis(150)).await;
    Ok(Running { stop, task })
}
