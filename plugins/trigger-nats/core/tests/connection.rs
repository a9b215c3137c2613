//! `[application.trigger.nats]` against a real `nats-server`: TLS with a
//! private CA and client certificates (made here with openssl), NKey users,
//! and a JetStream domain; each refusal named at start-up, without quoting
//! a secret.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::json;
use support::*;
use trigger_nats_core::config::{Connection, TriggerConfig, TriggerMetadata};
use trigger_nats_core::listener;
use trigger_nats_core::plan;

/// A directory removed at drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "trigger-nats-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("these tests need the openssl command (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>-ca.pem`) and, signed by it, a server certificate for
/// 127.0.0.1 (`<name>-server.pem`/`.key`) and a client one
/// (`<name>-client.pem`/`.key`).
fn pki(dir: &Path, name: &str) {
    let ca = format!("{name}-ca");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
    for (who, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let base = format!("{name}-{who}");
        std::fs::write(dir.join(format!("{base}.ext")), ext).expect("an extensions file");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={who}"),
                "-keyout",
                &format!("{base}.key"),
                "-out",
                &format!("{base}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{base}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{base}.ext"),
                "-out",
                &format!("{base}.pem"),
            ],
        );
    }
}

fn metadata(fields: serde_json::Value) -> TriggerMetadata {
    serde_json::from_value(fields).expect("valid [application.trigger.nats] fields")
}

/// The subscriptions of one core entry and one JetStream entry.
fn subscriptions(connection: &Connection) -> Vec<trigger_nats_core::Subscription> {
    let entries: Vec<TriggerConfig> = vec![
        serde_json::from_value(json!({"component": "core", "subject": "greetings.*"}))
            .expect("an entry"),
        serde_json::from_value(json!({"component": "writer", "subject": "tasks.>",
            "stream": "TASKS", "consumer": "w", "stream_subjects": ["tasks.>"],
            "handler_timeout_ms": 1000, "ack_wait_ms": 5000}))
        .expect("an entry"),
    ];
    let mut subs = plan::plan(&entries).expect("valid entries");
    for s in &mut subs {
        if let Some(p) = &mut s.jetstream {
            p.api = connection.jetstream_api.clone();
        }
    }
    subs
}

/// Runs both entries over `connection`, publishes one message to each
/// through `publisher`, and waits until both are handled.
async fn both_modes_handle_a_message(
    connection: &Connection,
    publisher: async_nats::Client,
    js: jetstream::Context,
) -> TestResult {
    let client = listener::connect_with(connection, "test", std::future::pending())
        .await?
        .ok_or("no client")?;
    let rec = Recorder::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handler = rec.handler();
    let subs = subscriptions(connection);
    let task = tokio::spawn(async move {
        listener::run(client, subs, handler, async move {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    // The stream exists once the listener made it.
    while js.get_stream("TASKS").await.is_err() {
        assert!(Instant::now() < deadline, "the listener made no stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.publish("greetings.world", "hi".into()).await?;
    publisher.flush().await?;
    js.publish("tasks.created", "stored".into()).await?.await?;
    while rec.payloads().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "handled only {:?}",
            rec.payloads()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = rec.payloads();
    got.sort();
    assert_eq!(got, ["hi", "stored"]);
    let _ = stop.send(());
    task.await??;
    Ok(())
}

#[tokio::test]
async fn tls_with_a_private_ca_and_client_certificates_carries_both_modes() -> TestResult {
    let dir = TempDir::new("tls");
    pki(&dir.0, "good");
    pki(&dir.0, "other");
    let port = free_port();
    let store = dir.path("js");
    let _server = start_server_with(
        port,
        &[
            "-js",
            "-sd",
            &store,
            "--tls",
            "--tlscert",
            &dir.path("good-server.pem"),
            "--tlskey",
            &dir.path("good-server.key"),
            "--tlsverify",
            "--tlscacert",
            &dir.path("good-ca.pem"),
        ],
    );
    let url = format!("tls://127.0.0.1:{port}");
    let fields = |ca: &str, client: &str| {
        json!({"url": url, "tls_ca_file": dir.path(&format!("{ca}-ca.pem")),
            "tls_cert_file": dir.path(&format!("{client}-client.pem")),
            "tls_key_file": dir.path(&format!("{client}-client.key"))})
    };
    let connection = metadata(fields("good", "good")).connection()?;
    assert!(connection.tls.required);
    let publisher = async_nats::ConnectOptions::new()
        .add_root_certificates(dir.path("good-ca.pem").into())
        .add_client_certificate(
            dir.path("good-client.pem").into(),
            dir.path("good-client.key").into(),
        )
        .connect(&url)
        .await?;
    let js = jetstream::new(publisher.clone());
    both_modes_handle_a_message(&connection, publisher, js).await?;

    // Refusals come at once, naming what to check, not as a reconnect loop.
    for (what, m) in [
        (
            "a CA that did not sign the server's certificate",
            metadata(fields("other", "good")),
        ),
        (
            "a client certificate the server does not trust",
            metadata(fields("good", "other")),
        ),
        (
            "no TLS settings for a server that requires TLS",
            metadata(json!({"url": format!("nats://127.0.0.1:{port}")})),
        ),
    ] {
        let began = Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(20),
            listener::connect_with(&m.connection()?, "test", std::future::pending()),
        )
        .await
        .map_err(|_| format!("{what}: still trying after 20 s"))?;
        let err = got.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("TLS") || err.contains("refused") || err.contains("tls"),
            "{what}: {err}"
        );
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{what}: {:?}",
            began.elapsed()
        );
    }

    // Files that cannot be read, and halves of a pair, are named before connecting.
    let missing = dir.path("nowhere.key");
    let got = metadata(
        json!({"url": url, "tls_cert_file": dir.path("good-client.pem"),
        "tls_key_file": missing}),
    )
    .connection()
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        got.contains("tls_key_file") && got.contains("nowhere.key"),
        "{got}"
    );
    let got = metadata(json!({"tls_cert_file": dir.path("good-client.pem")}))
        .connection()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        got.contains("tls_key_file is set") || got.contains("tls_key_file is not"),
        "{got}"
    );
    let got = metadata(json!({"url": url, "tls_required": false}))
        .connection()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(got.contains("tls_required = false"), "{got}");
    Ok(())
}

#[tokio::test]
async fn an_nkey_user_connects_and_a_wrong_or_malformed_seed_is_refused_without_quoting_it()
-> TestResult {
    let dir = TempDir::new("nkey");
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed()?;
    let stranger = nkeys::KeyPair::new_user().seed()?;
    let port = free_port();
    let conf = dir.path("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "jetstream {{ store_dir: {:?} }}\nauthorization {{ users = [ {{ nkey: {:?} }} ] }}\n",
            dir.path("js"),
            user.public_key()
        ),
    )?;
    let _server = start_server_with(port, &["-c", &conf]);
    let url = format!("nats://127.0.0.1:{port}");
    // From a file, as a deployment would mount it.
    let seed_file = dir.path("user.nk");
    std::fs::write(&seed_file, format!("{seed}\n"))?;
    let connection = metadata(json!({"url": url, "nkey_seed_file": seed_file})).connection()?;
    let publisher = async_nats::ConnectOptions::with_nkey(seed.clone())
        .connect(&url)
        .await?;
    let js = jetstream::new(publisher.clone());
    both_modes_handle_a_message(&connection, publisher, js).await?;

    let refused = listener::connect_with(
        &metadata(json!({"url": url, "nkey_seed": stranger})).connection()?,
        "test",
        std::future::pending(),
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(refused.contains("refused the credentials"), "{refused}");
    assert!(
        !refused.contains(&stranger),
        "the seed is quoted: {refused}"
    );
    let malformed = "SUNOTASEED";
    let got = metadata(json!({"url": url, "nkey_seed": malformed}))
        .connection()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        got.contains("not a user seed") && !got.contains(malformed),
        "{got}"
    );
    let got = metadata(json!({"nkey_seed": seed, "token": "t"}))
        .connection()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(got.contains("only one of") && !got.contains(&seed), "{got}");
    Ok(())
}

#[tokio::test]
async fn a_jetstream_domain_is_where_requests_go() -> TestResult {
    let dir = TempDir::new("domain");
    let port = free_port();
    let conf = dir.path("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "jetstream {{ store_dir: {:?}, domain: hub }}\n",
            dir.path("js")
        ),
    )?;
    let _server = start_server_with(port, &["-c", &conf]);
    let url = format!("nats://127.0.0.1:{port}");
    let connection = metadata(json!({"url": url, "jetstream_domain": "hub"})).connection()?;
    let publisher = async_nats::connect(&url).await?;
    let js = jetstream::with_domain(publisher.clone(), "hub");
    both_modes_handle_a_message(&connection, publisher, js).await?;
    // A domain nobody serves: an answer at start-up (no responders), not a wait.
    let elsewhere = metadata(json!({"url": url, "jetstream_domain": "nowhere"})).connection()?;
    let client = listener::connect_with(&elsewhere, "test", std::future::pending())
        .await?
        .ok_or("no client")?;
    let began = Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        listener::run(
            client,
            subscriptions(&elsewhere),
            Recorder::default().handler(),
            std::future::pending(),
        ),
    )
    .await?
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(got.contains("TASKS"), "{got}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    for (fields, says) in [
        (
            json!({"jetstream_domain": "a.b"}),
            "must be one subject token",
        ),
        (
            json!({"jetstream_domain": "hub", "api_prefix": "$JS.hub.API"}),
            "not both",
        ),
    ] {
        let got = metadata(fields.clone())
            .connection()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(got.contains(says), "{fields}: {got}");
    }
    Ok(())
}

/// The permissions `docs/trigger-nats.md` lists for a trigger user, for a
/// core entry on `greetings.*` and a JetStream entry on stream `TASKS`,
/// consumer `w` (which the trigger may create).
fn least_privilege() -> serde_json::Value {
    json!({
        "publish": {"allow": [
            "$JS.API.STREAM.INFO.TASKS",
            "$JS.API.STREAM.CREATE.TASKS",
            "$JS.API.CONSUMER.INFO.TASKS.w",
            "$JS.API.CONSUMER.CREATE.TASKS.w.>",
            "$JS.API.CONSUMER.NAMES.TASKS",
            "$JS.API.CONSUMER.MSG.NEXT.TASKS.w",
            "$JS.ACK.TASKS.w.>",
            "_INBOX.>"
        ]},
        "subscribe": {"allow": ["greetings.*", "_INBOX.>"]}
    })
}

#[tokio::test]
async fn the_documented_least_privilege_permissions_are_enough() -> TestResult {
    let dir = TempDir::new("perms");
    let port = free_port();
    let conf = dir.path("nats.conf");
    // nats-server reads JSON-like values in its configuration.
    std::fs::write(
        &conf,
        format!(
            "jetstream {{ store_dir: {:?} }}\nauthorization {{ users = [\n  {{ user: trigger, password: t0k3n-trigger, permissions: {} }}\n  {{ user: publisher, password: t0k3n-publisher }}\n] }}\n",
            dir.path("js"),
            least_privilege()
        ),
    )?;
    let _server = start_server_with(port, &["-c", &conf]);
    let url = format!("nats://127.0.0.1:{port}");
    let connection = metadata(json!({"url": url, "user": "trigger", "password": "t0k3n-trigger"}))
        .connection()?;
    let publisher = async_nats::ConnectOptions::with_user_and_password(
        "publisher".into(),
        "t0k3n-publisher".into(),
    )
    .connect(&url)
    .await?;
    let js = jetstream::new(publisher.clone());
    both_modes_handle_a_message(&connection, publisher, js).await
}
