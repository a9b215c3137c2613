//! Connecting, subscribing, handing messages to the handler, replying, and
//! draining on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use crate::StreamInfo;
use crate::config::{Connection, Credentials, JetStreamApi, Tls};
pub use crate::handler::{BatchFuture, Handler, HandlerFuture, Message, log};
use crate::handler::{Counters, call_with_deadline, header_pairs};
use crate::plan::Subscription;
use crate::{InFlight, reply};

/// Longest wait for buffered messages and running handlers at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// While draining without a server: how long no message may come before
/// reading stops.
const IDLE_WITHOUT_SERVER: Duration = Duration::from_millis(200);

/// Longest wait for one exchange with the server at shutdown (unsubscribe,
/// flush): while it is unreachable they would wait for a reconnection, and a
/// stop must not.
const PROTOCOL_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts over the listener's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages whose handler returned Ok.
    pub handled: u64,
    /// Messages whose handler returned an error.
    pub failed: u64,
}

/// The servers in `url`: one URL, or several separated by commas (a
/// cluster: the client connects to one and fails over to the others).
fn server_list(url: &str) -> Result<Vec<async_nats::ServerAddr>, async_nats::Error> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("NATS server URL {s:?} is not valid: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(format!("no NATS server URL in {url:?}").into());
    }
    Ok(servers)
}

/// Whether a connection failed in TLS: a certificate one side does not
/// accept, or TLS the other side does not speak. Trying again would not
/// change it. (async-nats reports a rustls verdict as an I/O error, so its
/// words are read too.)
fn tls_refused(e: &async_nats::ConnectError) -> bool {
    let text = e.to_string();
    e.kind() == async_nats::ConnectErrorKind::Tls
        || ["certificate", "fatal alert", "handshake"]
            .iter()
            .any(|w| text.contains(w))
}

/// Connects, retrying every 2 s with a log line until the server answers or
/// `shutdown` resolves (then `None`). Later disconnects reconnect on their own.
pub async fn connect(
    url: &str,
    credentials: &Credentials,
    name: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<async_nats::Client>, async_nats::Error> {
    let connection = Connection {
        url: url.to_owned(),
        credentials: credentials.clone(),
        tls: Tls::default(),
        jetstream_api: JetStreamApi::Default,
    };
    connect_with(&connection, name, shutdown).await
}

/// How a connection event is logged: as async-nats words it, and a permission
/// the server refused (naming the subject) also says what it means, since the
/// connection stays up without it.
fn event_line(event: &str) -> String {
    if event.contains("Permissions Violation") {
        format!(
            "{event}: the user this trigger connects as lacks that permission; what needs it \
             cannot work until the server grants it (the permissions the trigger needs: \
             \"Permissions a trigger user needs\" in docs/trigger-nats.md)"
        )
    } else {
        event.to_owned()
    }
}

/// [`connect`], with every setting of `[application.trigger.nats]`: TLS
/// (a certificate the server does not accept, or a CA that does not sign
/// the server's, is an error at once, not a reconnect loop) and NKey
/// authentication.
pub async fn connect_with(
    connection: &Connection,
    name: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<async_nats::Client>, async_nats::Error> {
    tokio::pin!(shutdown);
    let url = connection.url.as_str();
    let credentials = &connection.credentials;
    let tls = &connection.tls;
    let servers = server_list(url)?;
    let mut logged_wait = false;
    loop {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback({
                // The first connection is logged with its URL below; later
                // ones are reconnections.
                let seen_first = Arc::new(std::sync::atomic::AtomicBool::new(false));
                move |event| {
                    let seen_first = seen_first.clone();
                    async move {
                        match event {
                            async_nats::Event::Disconnected => log("disconnected; reconnecting"),
                            async_nats::Event::Connected => {
                                if seen_first.swap(true, Ordering::SeqCst) {
                                    log("reconnected");
                                }
                            }
                            other => log(&event_line(&other.to_string())),
                        }
                    }
                }
            });
        options = match credentials {
            Credentials::None => options,
            Credentials::UserPassword(u, p) => options.user_and_password(u.clone(), p.clone()),
            Credentials::Token(t) => options.token(t.clone()),
            Credentials::CredsFile(path) => options
                .credentials_file(path)
                .await
                .map_err(|e| format!("cannot read creds_file {path:?}: {e}"))?,
            Credentials::NKey(seed) => options.nkey(seed.clone()),
        };
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.into());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.into(), key.into());
        }
        if tls.required {
            options = options.require_tls(true);
        }
        match options.connect(servers.clone()).await {
            Ok(client) => {
                log(&format!("connected to {url}"));
                return Ok(Some(client));
            }
            Err(e) => {
                let auth = e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation
                    || e.kind() == async_nats::ConnectErrorKind::Authentication;
                if auth {
                    return Err(format!("server at {url} refused the credentials: {e}").into());
                }
                if tls_refused(&e) {
                    return Err(format!(
                        "TLS with {url} failed: {e} (check tls_ca_file, tls_cert_file and tls_key_file, and that the server speaks TLS)"
                    )
                    .into());
                }
                if !logged_wait {
                    log(&format!(
                        "cannot reach {url} ({e}); retrying every 2 s until it answers"
                    ));
                    logged_wait = true;
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// How long start-up keeps asking a server that cannot answer for the
/// moment (see [`crate::consumer::passing`]) before it gives up.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// Between two such questions.
const START_RETRY: Duration = Duration::from_secs(2);

/// Serves every subscription until `shutdown` resolves, then drains: stops
/// taking messages, handles those already delivered, waits for running
/// handlers, flushes replies.
pub async fn run(
    client: async_nats::Client,
    subscriptions: Vec<Subscription>,
    handler: Arc<dyn Handler>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, async_nats::Error> {
    tokio::pin!(shutdown);
    let tickers = crate::tick::tickers(&subscriptions);
    if let Some(refused) = crate::tick::refused(handler.as_ref(), &tickers) {
        return Err(refused.into());
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let handled = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    // A shutdown while start-up waits for the server: what started drains.
    let mut shut_down = false;
    'start: for sub in subscriptions {
        let counters = Counters {
            handled: handled.clone(),
            failed: failed.clone(),
        };
        if let Some(plan) = sub.jetstream.clone() {
            let started = tokio::time::Instant::now();
            let (consumer, epoch) = loop {
                let attempt = tokio::select! {
                    _ = &mut shutdown => {
                        shut_down = true;
                        break 'start;
                    }
                    attempt = crate::consumer::provision_with_epoch(&client, &plan) => attempt,
                };
                match attempt {
                    Ok(ready) => break ready,
                    Err(e)
                        if crate::consumer::passing(&e.to_string())
                            && started.elapsed() < START_PATIENCE =>
                    {
                        log(&format!(
                            "{}: {e}; asking again in {} s (a cluster electing a leader answers again within seconds)",
                            sub.subject,
                            START_RETRY.as_secs()
                        ));
                        tokio::select! {
                            _ = &mut shutdown => {
                                shut_down = true;
                                break 'start;
                            }
                            _ = tokio::time::sleep(START_RETRY) => {}
                        }
                    }
                    Err(e) => return Err(e),
                }
            };
            let mut part = plan.partition.as_ref().map_or(String::new(), |p| {
                format!(", partition {} of {}", p.index, p.count)
            });
            if plan.concurrency > 1 {
                part.push_str(&format!(", {} calls at once per pull", plan.concurrency));
            }
            if let Some(key) = &plan.ordering_key {
                part.push_str(&format!(", by {key}"));
            }
            log(&format!(
                "{} ← {} (JetStream: stream {}, durable consumer {}, batch {}{part})",
                sub.component, sub.subject, plan.stream, plan.consumer.durable, plan.batch
            ));
            let pulling = crate::consumer::Pulling {
                client: client.clone(),
                leader: crate::consumer::leader_of(consumer.cached_info()),
                pull_size: plan.batch,
                consumer,
                epoch,
                acked_up_to: Default::default(),
                refused: None,
                failures: Default::default(),
                plan,
                sub,
                handler: handler.clone(),
                counters,
            };
            tasks.spawn(pulling.serve(stop_rx.clone()));
            continue;
        }
        let subscriber = match &sub.queue_group {
            Some(q) => {
                client
                    .queue_subscribe(sub.subject.clone(), q.clone())
                    .await?
            }
            None => client.subscribe(sub.subject.clone()).await?,
        };
        log(&format!(
            "{} ← {}{} (max_in_flight {})",
            sub.component,
            sub.subject,
            sub.queue_group
                .as_deref()
                .map(|q| format!(" in queue group {q}"))
                .unwrap_or_default(),
            sub.max_in_flight
        ));
        let serving = Serving {
            client: client.clone(),
            sub,
            handler: handler.clone(),
            counters,
        };
        tasks.spawn(serving.serve(subscriber, stop_rx.clone()));
    }
    // Subscriptions must reach the server before callers publish.
    client.flush().await?;
    if !shut_down {
        for ticker in tickers {
            log(&format!(
                "{} is called with no message every {} ms (tick_ms)",
                ticker.component,
                ticker.every.as_millis()
            ));
            tasks.spawn(crate::tick::serve(handler.clone(), ticker, stop_rx.clone()));
        }
    }

    if shut_down {
        log("shutting down while starting: draining");
    } else {
        tokio::select! {
            _ = &mut shutdown => log("shutting down: draining"),
            Some(_) = tasks.join_next() => log("a subscription ended unexpectedly; draining the others"),
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // Replies go out before exit, unless the server is gone (then they cannot).
    if tokio::time::timeout(PROTOCOL_TIMEOUT, client.flush())
        .await
        .is_err()
    {
        log("the server did not answer the final flush; exiting without it");
    }
    let stats = Stats {
        handled: handled.load(Ordering::SeqCst),
        failed: failed.load(Ordering::SeqCst),
    };
    log(&format!(
        "drained: {} handled, {} failed",
        stats.handled, stats.failed
    ));
    Ok(stats)
}

struct Serving {
    client: async_nats::Client,
    sub: Subscription,
    handler: Arc<dyn Handler>,
    counters: Counters,
}

impl Serving {
    async fn serve(self, mut subscriber: async_nats::Subscriber, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.sub.max_in_flight));
        let running = InFlight::new();
        let this = Arc::new(self);
        let mut draining = false;
        // Armed only once draining starts; until then the branch is disabled.
        let deadline = tokio::time::sleep(DRAIN_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.changed(), if !draining => {
                    draining = true;
                    // Unsubscribes; messages already delivered still come out of the stream.
                    // A server that is gone cannot be told: stop reading anyway.
                    if tokio::time::timeout(PROTOCOL_TIMEOUT, subscriber.drain()).await.is_err() {
                        break;
                    }
                    deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                    continue;
                }
                _ = &mut deadline, if draining => {
                    log(&format!("{}: drain timed out; stopping", this.sub.subject));
                    break;
                }
                // While draining without a server, the end of the subscription
                // never comes: what was delivered is read, then reading stops.
                _ = tokio::time::sleep(IDLE_WITHOUT_SERVER), if draining
                    && this.client.connection_state() != async_nats::connection::State::Connected => break,
                m = subscriber.next() => m,
            };
            let Some(msg) = next else { break };
            // In order: the next message waits for a free slot.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let guard = running.start();
            let this = this.clone();
            tokio::spawn(async move {
                this.handle(msg).await;
                drop(slot);
                drop(guard);
            });
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, running.idle())
            .await
            .is_err()
        {
            log(&format!(
                "{}: handlers still running after {DRAIN_TIMEOUT:?}",
                this.sub.subject
            ));
        }
    }

    async fn handle(&self, msg: async_nats::Message) {
        let message = Message {
            subject: msg.subject.to_string(),
            payload: msg.payload.to_vec(),
            headers: header_pairs(msg.headers.as_ref()),
            reply: msg.reply.as_ref().map(|r| r.to_string()),
            stream: None,
        };
        let subject = message.subject.clone();
        let reply_to = message.reply.clone();
        let result = call_with_deadline(self.handler.as_ref(), &self.sub, message, None).await;
        self.counters.count(&result);
        if let Err(e) = &result {
            log(&format!(
                "component {} failed on {subject}: {e}",
                self.sub.component
            ));
        }
        if let Some(reply) = reply_to
            && let Err(e) = self
                .client
                .publish(reply, reply::encode(&result).into())
                .await
        {
            log(&format!(
                "could not acknowledge a message on {subject}: {e}"
            ));
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{event_line, server_list};

    #[test]
    fn a_refused_permission_is_logged_with_its_subject_and_what_it_means() {
        let refused = event_line(
            "server error: nats: Permissions Violation for Subscription to \"greetings.>\"",
        );
        assert!(refused.starts_with(
            "server error: nats: Permissions Violation for Subscription to \"greetings.>\": the user"
        ));
        assert!(refused.contains("Permissions a trigger user needs"));
        assert_eq!(event_line("lame duck mode"), "lame duck mode");
    }

    #[test]
    fn one_url_or_several_separated_by_commas() {
        let one = server_list("nats://127.0.0.1:4222").map(|s| s.len());
        assert_eq!(one.ok(), Some(1));
        let three = server_list("nats://a:1, nats://b:2,nats://c:3").map(|s| s.len());
        assert_eq!(three.ok(), Some(3));
        let bad = server_list("nats://a:1,nats://b:notaport")
            .err()
            .map(|e| e.to_string());
        assert!(bad.is_some_and(|e| e.contains("\"nats://b:notaport\" is not valid")));
        assert!(server_list(" , ").is_err());
    }
}
