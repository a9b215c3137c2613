//! Against a real `redis-server` on a free loopback port: every call's
//! meaning, compare-and-swap under contention, and reconnection after
//! Redis is stopped and started again.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trigger_nats_redis::{RESPONSE_TIMEOUT, RedisKv};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A `redis-server` without persistence; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("these tests need redis-server on PATH (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fails a call that is still waiting after 10 s, so a store that holds
/// calls while Redis is away fails these tests instead of hanging them.
async fn bounded<T>(call: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "a call was still waiting after 10 s".to_string())
}

/// A free loopback port, never the same twice in this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 40_000 + std::process::id() % 15_000;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(base + offset % 10_000).unwrap_or(40_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test]
async fn each_call_reads_and_writes_what_it_says() -> TestResult {
    let server = Server::start(free_port());
    let kv = RedisKv::new(&server.url(3))?;
    assert_eq!(
        kv.address(),
        format!("Redis at 127.0.0.1:{}, database 3", server.port)
    );

    assert_eq!(kv.get("a").await?, None);
    assert!(!kv.exists("a").await?);
    kv.set("a", b"\x00binary\xff").await?;
    assert_eq!(kv.get("a").await?.as_deref(), Some(&b"\x00binary\xff"[..]));
    assert!(kv.exists("a").await?);
    kv.delete("a").await?;
    kv.delete("a").await?; // absent is fine
    assert_eq!(kv.get("a").await?, None);

    // get-many keeps the order of the keys asked, absent ones as None.
    kv.set_many(&[("k1".into(), b"1".to_vec()), ("k3".into(), b"3".to_vec())])
        .await?;
    let keys: Vec<String> = ["k3", "missing", "k1", "k3"].map(String::from).to_vec();
    assert_eq!(
        kv.get_many(&keys).await?,
        vec![
            Some(b"3".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"3".to_vec())
        ]
    );
    assert_eq!(
        kv.get_many(&["k1".into()]).await?,
        vec![Some(b"1".to_vec())]
    );
    assert_eq!(kv.get_many(&[]).await?, Vec::<Option<Vec<u8>>>::new());
    kv.set_many(&[]).await?;
    kv.delete_many(&[]).await?;
    kv.delete_many(&["k1".into(), "missing".into()]).await?;
    assert_eq!(kv.get("k1").await?, None);
    assert_eq!(kv.get("k3").await?.as_deref(), Some(&b"3"[..]));

    assert_eq!(kv.increment("n", 5).await?, 5);
    assert_eq!(kv.increment("n", -7).await?, -2);
    // An increment of a value that is not an integer is refused, with Redis's reason.
    let refused = kv.increment("k3x", 1).await.map(|_| ());
    assert!(refused.is_ok(), "absent counts as 0: {refused:?}");
    kv.set("text", b"abc").await?;
    let err = kv
        .increment("text", 1)
        .await
        .err()
        .ok_or("incremented text")?;
    assert!(err.to_string().contains("not an integer"), "{err}");

    // Databases are separate: the URL's /N is the label's own key space.
    let other = RedisKv::new(&server.url(4))?;
    assert_eq!(other.get("k3").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_scan_walks_every_key_of_its_database_once_the_database_holds_still() -> TestResult {
    let server = Server::start(free_port());
    let kv = RedisKv::new(&server.url(1))?;
    let pairs: Vec<(String, Vec<u8>)> = (0..2_500)
        .map(|i| (format!("task:{i}"), b"x".to_vec()))
        .collect();
    kv.set_many(&pairs).await?;
    RedisKv::new(&server.url(2))?.set("elsewhere", b"x").await?;

    let mut seen = std::collections::BTreeSet::new();
    let (mut cursor, mut pages) = (0, 0);
    loop {
        let (next, keys) = kv.scan(cursor).await?;
        seen.extend(keys);
        pages += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert!(pages > 1, "2,500 keys take more than one page");
    let expected: std::collections::BTreeSet<String> = pairs.into_iter().map(|(k, _)| k).collect();
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test]
async fn a_swap_writes_only_over_the_value_it_expects() -> TestResult {
    let server = Server::start(free_port());
    let kv = RedisKv::new(&server.url(0))?;

    // Expecting absence: written once, refused once the key exists.
    assert!(kv.swap("k", None, b"first").await?);
    assert!(!kv.swap("k", None, b"second").await?);
    assert_eq!(kv.get("k").await?.as_deref(), Some(&b"first"[..]));

    // Expecting a value: refused (nothing written) when it differs, written when it matches.
    assert!(!kv.swap("k", Some(b"other"), b"third").await?);
    assert!(!kv.swap("k", Some(b""), b"third").await?);
    assert_eq!(kv.get("k").await?.as_deref(), Some(&b"first"[..]));
    assert!(kv.swap("k", Some(b"first"), b"fourth").await?);
    assert_eq!(kv.get("k").await?.as_deref(), Some(&b"fourth"[..]));

    // An empty value is a value, not absence.
    kv.set("empty", b"").await?;
    assert!(!kv.swap("empty", None, b"x").await?);
    assert!(kv.swap("empty", Some(b""), b"x").await?);
    // Expecting a value of a key that is absent is refused.
    assert!(!kv.swap("absent", Some(b""), b"x").await?);
    assert_eq!(kv.get("absent").await?, None);
    Ok(())
}

/// Eight writers each add 1 fifty times by read-then-swap: with a swap that
/// wrote blindly (or answered "failed" after writing), increments would be
/// lost or doubled and the total would not be 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_then_swap_loses_and_doubles_nothing() -> TestResult {
    let server = Server::start(free_port());
    let kv = Arc::new(RedisKv::new(&server.url(0))?);
    let mut writers = Vec::new();
    for _ in 0..8 {
        let kv = kv.clone();
        writers.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..50 {
                loop {
                    let current = kv.get("counter").await?;
                    let n: u64 = match &current {
                        Some(bytes) => String::from_utf8_lossy(bytes).parse()?,
                        None => 0,
                    };
                    if kv
                        .swap(
                            "counter",
                            current.as_deref(),
                            (n + 1).to_string().as_bytes(),
                        )
                        .await?
                    {
                        break;
                    }
                    conflicts += 1;
                }
            }
            Ok::<u32, Box<dyn std::error::Error + Send + Sync>>(conflicts)
        }));
    }
    let mut conflicts = 0;
    for writer in writers {
        conflicts += writer.await??;
    }
    assert_eq!(kv.get("counter").await?.as_deref(), Some(&b"400"[..]));
    assert!(
        conflicts > 0,
        "the writers never overlapped; the test proves nothing"
    );
    Ok(())
}

/// The recovery the delivery issue asks for: calls during an outage fail
/// promptly (they do not wait for Redis), and the first call after Redis is
/// back succeeds within about a second, not after Spin's 60 s backoff.
#[tokio::test]
async fn calls_fail_promptly_while_redis_is_down_and_succeed_within_a_second_of_its_return()
-> TestResult {
    let port = free_port();
    let mut server = Server::start(port);
    let kv = RedisKv::new(&server.url(0))?;
    kv.set("k", b"before").await?;

    server.stop();
    let mut failures = 0;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(6) {
        let call = Instant::now();
        let result = bounded(kv.get("k")).await?;
        assert!(result.is_err(), "a call succeeded with Redis stopped");
        assert!(
            call.elapsed() < RESPONSE_TIMEOUT + Duration::from_secs(2),
            "a call waited {:?} on a stopped Redis",
            call.elapsed()
        );
        failures += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A failing call waits for one round of reconnection attempts (about 3 s at most).
    assert!(failures >= 2, "{failures} calls in 6 s");

    let _server = Server::start(port);
    let back = Instant::now();
    loop {
        match bounded(kv.set("k", b"after")).await? {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    back.elapsed() < Duration::from_secs(3),
                    "still failing {:?} after Redis came back: {e}",
                    back.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let recovered = back.elapsed();
    assert!(
        recovered < Duration::from_millis(1_500),
        "reconnected after {recovered:?}"
    );
    assert_eq!(kv.get("k").await?.as_deref(), Some(&b"after"[..]));
    Ok(())
}

/// A Redis that accepts connections but never answers (stopped with
/// SIGSTOP) fails a call after the response timeout instead of holding it.
#[tokio::test]
async fn a_redis_that_does_not_answer_fails_the_call_after_the_response_timeout() -> TestResult {
    let server = Server::start(free_port());
    let kv = RedisKv::new(&server.url(0))?;
    kv.ping().await?;
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status()?;
    let call = Instant::now();
    let result = bounded(kv.get("k")).await;
    let waited = call.elapsed();
    Command::new("kill").args(["-CONT", &pid]).status()?;
    let result = result?;
    assert!(result.is_err(), "a call succeeded on a stopped server");
    assert!(
        waited >= RESPONSE_TIMEOUT - Duration::from_millis(100),
        "{waited:?}"
    );
    assert!(
        waited < RESPONSE_TIMEOUT + Duration::from_secs(2),
        "{waited:?}"
    );
    // ...and the store works again once Redis answers.
    let deadline = Instant::now() + Duration::from_secs(3);
    while bounded(kv.ping()).await?.is_err() {
        assert!(Instant::now() < deadline, "no answer after SIGCONT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_store_whose_redis_is_down_at_start_connects_once_it_is_up() -> TestResult {
    let port = free_port();
    let kv = RedisKv::new(&format!("redis://127.0.0.1:{port}/0"))?;
    let err = bounded(kv.get("k"))
        .await?
        .err()
        .ok_or("answered without a server")?;
    assert!(
        err.to_string()
            .starts_with(&format!("Redis at 127.0.0.1:{port}")),
        "{err}"
    );
    let _server = Server::start(port);
    bounded(kv.set("k", b"v")).await??;
    assert_eq!(kv.get("k").await?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

/// Whether Redis answers a raw `PING` with `-LOADING` (its data not yet in memory).
fn answers_loading(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0u8; 8];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut reply).is_ok() && reply.starts_with(b"-LOADING")
}

/// A Redis started again on a large dataset answers `LOADING` for a while
/// (0.4 s for a million keys here): the calls made meanwhile wait for it
/// instead of failing, on a database other than 0 too (the connection's
/// `SELECT` is refused while loading).
#[tokio::test]
async fn calls_made_while_a_restarted_redis_loads_its_data_wait_for_it() -> TestResult {
    let dir = std::env::temp_dir().join(format!("redis-kv-loading-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let dir_arg = dir.to_string_lossy().to_string();
    let extra = ["--dir", dir_arg.as_str(), "--enable-debug-command", "yes"];
    let port = free_port();
    let mut server = Server::start_with(port, &extra);
    let kv = RedisKv::new(&server.url(1))?;
    kv.set("mine", b"kept").await?;
    let admin = RedisKv::new(&server.url(0))?;
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "DEBUG", "POPULATE", "1000000"])
        .stdout(Stdio::null())
        .status()?;
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SAVE"])
        .stdout(Stdio::null())
        .status()?;
    server.stop();

    let _server = Server::start_with(port, &extra);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !answers_loading(port) {
        assert!(Instant::now() < deadline, "never saw Redis loading");
    }
    let (value, other) = tokio::join!(kv.get("mine"), admin.get("key:7"));
    assert_eq!(value?.as_deref(), Some(&b"kept"[..]));
    assert_eq!(other?.as_deref(), Some(&b"value:7"[..]));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_url_that_is_not_redis_is_refused_with_the_reason() {
    for url in ["http://127.0.0.1:6379", "not a url", ""] {
        let err = RedisKv::new(url)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("invalid Redis URL"), "{url:?}: {err:?}");
    }
}
