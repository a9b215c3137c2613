//! The Spin side of the NATS trigger: reads the manifest, resolves
//! variables, and runs a component per message. Connecting, subscribing,
//! replies and draining live in `trigger-nats-core` (tested without Spin).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures::FutureExt;
use opentelemetry::propagation::Extractor;
use spin_factor_variables::VariablesFactor;
use spin_factors::RuntimeFactors;
use spin_trigger::cli::NoCliArgs;
use spin_trigger::{App, Trigger, TriggerApp};
use tokio::sync::{Notify, watch};
use tracing::{Instrument, Span, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use trigger_nats_core::Subscription;
use trigger_nats_core::config::{self, TriggerConfig, TriggerMetadata};
use trigger_nats_core::lifecycle::Ancestry;
use trigger_nats_core::listener::{self, BatchFuture, Handler, HandlerFuture, Message};

pub mod redis_store;

/// Host bindings of the guest worlds in `plugins/trigger-nats/wit`: one message per call.
mod single {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "nats-trigger",
        imports: { default: async },
        exports: { default: async },
    });
}

/// A batch per call.
mod batch {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "nats-batch-trigger",
        imports: { default: async },
        exports: { default: async },
    });
}

use batch::spin_nats::trigger::types as batch_guest;
use single::spin_nats::trigger::types as guest;

/// Which function of the guest world a component exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Export {
    /// `handle-message`: one call per message.
    Message,
    /// `handle-batch`: one call per pull (one message in core mode).
    Batch,
}

impl Export {
    /// The export `component` has, `handle-batch` first; an error naming the
    /// component when it has neither.
    fn of<F: RuntimeFactors>(
        app: &TriggerApp<NatsTrigger, F>,
        component: &str,
    ) -> anyhow::Result<Export> {
        let wasm = app
            .get_component(component)
            .with_context(|| format!("component {component:?} named in [[trigger.nats]]"))?;
        if wasm.get_export_index(None, "handle-batch").is_some() {
            Ok(Export::Batch)
        } else if wasm.get_export_index(None, "handle-message").is_some() {
            Ok(Export::Message)
        } else {
            Err(anyhow!(
                "component {component:?} exports neither handle-batch nor handle-message of spin-nats:trigger (plugins/trigger-nats/wit): it cannot be triggered by NATS"
            ))
        }
    }

    fn name(self) -> &'static str {
        match self {
            Export::Message => "handle-message",
            Export::Batch => "handle-batch",
        }
    }
}

/// The running listener, reachable from `main` after Spin's command returns.
///
/// Spin's trigger command aborts `Trigger::run` on SIGINT/SIGTERM (its own
/// ctrlc handler), which would drop the listener mid-drain. So the listener
/// runs on its own task; [`finish`] asks it to drain and waits for it.
struct Running {
    stop: Arc<Notify>,
    done: watch::Receiver<bool>,
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// This build's version: `TRIGGER_NATS_VERSION` when the build sets it
/// (`scripts/install-plugin.sh`: the crate version plus the commit it was
/// built from), else the crate version. Logged at start-up, so a test can
/// tell which build Spin runs.
pub const VERSION: &str = match option_env!("TRIGGER_NATS_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// How long `finish` waits for the drain.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// Drains the listener if one is running: stops taking messages, lets
/// delivered ones finish and their acknowledgements go out. Call after
/// Spin's trigger command returns.
pub async fn finish() {
    let running = RUNNING.lock().ok().and_then(|mut r| r.take());
    if let Some(Running { stop, mut done }) = running {
        stop.notify_one();
        let _ = tokio::time::timeout(DRAIN_WAIT, done.wait_for(|d| *d)).await;
    }
}

/// The `nats` trigger type.
pub struct NatsTrigger {
    metadata: TriggerMetadata,
    subscriptions: Vec<Subscription>,
}

impl<F: RuntimeFactors> Trigger<F> for NatsTrigger {
    const TYPE: &'static str = "nats";
    type CliArgs = NoCliArgs;
    type InstanceState = ();

    fn new(_cli_args: Self::CliArgs, app: &App) -> anyhow::Result<Self> {
        let metadata = app
            .get_trigger_metadata::<TriggerMetadata>("nats")
            .context("reading [application.trigger.nats]")?
            .unwrap_or_default();
        let entries: Vec<TriggerConfig> = app
            .trigger_configs::<TriggerConfig>("nats")
            .context("reading [[trigger.nats]]")?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let subscriptions = trigger_nats_core::plan::plan(&entries)?;
        Ok(NatsTrigger {
            metadata,
            subscriptions,
        })
    }

    async fn run(self, trigger_app: TriggerApp<Self, F>) -> anyhow::Result<()> {
        listener::log(&format!(
            "version {VERSION} for app {:?}",
            trigger_app.app().id()
        ));
        let variables = trigger_app
            .configured_app()
            .app_state::<VariablesFactor>()
            .context("the NATS trigger needs the variables factor")?;
        let resolve =
            async |field: &str, value: Option<String>| -> anyhow::Result<Option<String>> {
                match value {
                    None => Ok(None),
                    Some(expr) => variables
                        .resolve_expression(expr.clone())
                        .await
                        .map(Some)
                        .with_context(|| {
                            format!("resolving {field} = {expr:?} in [application.trigger.nats]")
                        }),
                }
            };
        // Variables are resolved before connecting, so `url = "{{ nats_url }}"` works.
        let resolved = TriggerMetadata {
            url: resolve("url", self.metadata.url.clone()).await?,
            user: resolve("user", self.metadata.user.clone()).await?,
            password: resolve("password", self.metadata.password.clone()).await?,
            token: resolve("token", self.metadata.token.clone()).await?,
            creds_file: resolve("creds_file", self.metadata.creds_file.clone()).await?,
            nkey_seed: resolve("nkey_seed", self.metadata.nkey_seed.clone()).await?,
            nkey_seed_file: resolve("nkey_seed_file", self.metadata.nkey_seed_file.clone()).await?,
            tls_ca_file: resolve("tls_ca_file", self.metadata.tls_ca_file.clone()).await?,
            tls_cert_file: resolve("tls_cert_file", self.metadata.tls_cert_file.clone()).await?,
            tls_key_file: resolve("tls_key_file", self.metadata.tls_key_file.clone()).await?,
            tls_required: self.metadata.tls_required,
            jetstream_domain: resolve("jetstream_domain", self.metadata.jetstream_domain.clone())
                .await?,
            api_prefix: resolve("api_prefix", self.metadata.api_prefix.clone()).await?,
        };
        let connection = resolved.connection()?;
        let mut subscriptions = self.subscriptions.clone();
        for sub in &mut subscriptions {
            if let Some(plan) = &mut sub.jetstream {
                plan.api = connection.jetstream_api.clone();
            }
            sub.subject = variables
                .resolve_expression(sub.subject.clone())
                .await
                .with_context(|| format!("resolving subject {:?}", sub.subject))?;
            config::validate_subject(&sub.subject)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("[[trigger.nats]] of component {}", sub.component))?;
        }

        let url = connection.url.clone();
        let name = format!("spin-trigger-nats ({})", trigger_app.app().id());
        // Stop on SIGINT/SIGTERM, and when `spin up` is gone (even killed
        // with SIGKILL), so no orphaned listener runs beside a restarted app.
        let ancestry = Ancestry::now();
        let ended = async move {
            tokio::select! {
                _ = listener::shutdown_signal() => {}
                gone = ancestry.watch() => listener::log(&format!("{gone}; stopping")),
            }
        };
        let ended = ended.boxed().shared();
        let Some(client) = listener::connect_with(&connection, &name, ended.clone())
            .await
            .map_err(anyhow::Error::from_boxed)
            .with_context(|| format!("connecting to the NATS server at {url}"))?
        else {
            return Ok(());
        };
        let mut exports = HashMap::new();
        for sub in &subscriptions {
            let export = Export::of(&trigger_app, &sub.component)?;
            if exports.insert(sub.component.clone(), export).is_none() {
                let how = match (export, sub.jetstream.as_ref()) {
                    (Export::Batch, Some(js)) => format!("up to {} messages per call", js.batch),
                    (Export::Batch, None) => "one message per call in core mode".to_owned(),
                    (Export::Message, _) => "one message per call".to_owned(),
                };
                listener::log(&format!(
                    "component {} exports {}: {how}",
                    sub.component,
                    export.name()
                ));
            }
        }
        let handler: Arc<dyn Handler> = Arc::new(SpinHandler {
            app: Arc::new(trigger_app),
            exports,
        });
        let stop = Arc::new(Notify::new());
        let (done_tx, done) = watch::channel(false);
        let shutdown = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = ended => {}
                    _ = stop.notified() => {}
                }
            }
        };
        let task = tokio::spawn(async move {
            let result = listener::run(client, subscriptions, handler, shutdown).await;
            let _ = done_tx.send(true);
            result
                .map(drop)
                .map_err(anyhow::Error::from_boxed)
                .context("the NATS listener stopped")
        });
        if let Ok(mut r) = RUNNING.lock() {
            *r = Some(Running { stop, done });
        }
        task.await.context("the NATS listener task failed")??;
        Ok(())
    }
}

/// A message's headers as W3C trace context carriers (names case-insensitive).
struct NatsHeaders<'a>(&'a [(String, String)]);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// The span of one delivery to `component`: a consumer span named after the
/// subject, whose parent is the message's `traceparent` when it has one.
/// It lasts until dropped; [`finished`] records the outcome.
fn delivery_span(component: &str, msg: &Message) -> Span {
    let span = tracing::info_span!(
        "spin_trigger_nats.handle",
        "otel.name" = format!("{} process", msg.subject),
        "otel.kind" = "consumer",
        "otel.status_code" = field::Empty,
        "otel.status_message" = field::Empty,
        "messaging.system" = "nats",
        "messaging.operation.type" = "process",
        "messaging.destination.name" = %msg.subject,
        "messaging.nats.stream.sequence" = field::Empty,
        "messaging.nats.delivered" = field::Empty,
        "spin.component" = component,
        "outcome" = field::Empty,
    );
    if let Some(stream) = msg.stream {
        span.record("messaging.nats.stream.sequence", stream.sequence);
        span.record("messaging.nats.delivered", stream.delivered);
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&NatsHeaders(&msg.headers))
    });
    span.set_parent(parent);
    span
}

/// Records how a delivery ended on its span.
fn finished(span: &Span, outcome: &Result<(), String>) {
    match outcome {
        Ok(()) => {
            span.record("outcome", "ok");
            span.record("otel.status_code", "OK");
        }
        Err(e) => {
            span.record("outcome", "error");
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", e.as_str());
        }
    }
}

/// Runs the component named by a subscription, one instance per call.
struct SpinHandler<F: RuntimeFactors> {
    app: Arc<TriggerApp<NatsTrigger, F>>,
    /// What each component exports, found at start-up.
    exports: HashMap<String, Export>,
}

impl<F: RuntimeFactors> Handler for SpinHandler<F> {
    fn handle(&self, component: &str, msg: Message) -> HandlerFuture {
        let app = self.app.clone();
        let component = component.to_owned();
        let export = self.exports.get(&component).copied();
        let span = delivery_span(&component, &msg);
        let recorded = span.clone();
        let handled = async move {
            let result =
                match export {
                    Some(Export::Batch) => invoke_batch(&app, &component, vec![msg])
                        .await
                        .and_then(|mut outcomes| {
                            outcomes.pop().ok_or_else(|| {
                                anyhow!("{component} returned no outcome for its message")
                            })?
                        }),
                    _ => invoke(&app, &component, msg).await,
                };
            let outcome = result.map_err(|e| format!("{e:#}"));
            finished(&recorded, &outcome);
            outcome
        };
        Box::pin(handled.instrument(span))
    }

    fn takes_batches(&self, component: &str) -> bool {
        self.exports.get(component) == Some(&Export::Batch)
    }

    fn tick(&self, component: &str) -> HandlerFuture {
        let app = self.app.clone();
        let component = component.to_owned();
        Box::pin(async move {
            invoke_batch(&app, &component, Vec::new())
                .await
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        })
    }

    fn handle_batch(&self, component: &str, msgs: Vec<Message>) -> BatchFuture {
        let app = self.app.clone();
        let component = component.to_owned();
        // One span per delivery, each with its own parent, all as long as the call.
        let spans: Vec<Span> = msgs.iter().map(|m| delivery_span(&component, m)).collect();
        Box::pin(async move {
            let n = msgs.len();
            let outcomes: Vec<Result<(), String>> = match invoke_batch(&app, &component, msgs).await
            {
                Ok(outcomes) => outcomes
                    .into_iter()
                    .map(|o| o.map_err(|e| format!("{e:#}")))
                    .collect(),
                Err(e) => vec![Err(format!("{e:#}")); n],
            };
            for (span, outcome) in spans.iter().zip(&outcomes) {
                finished(span, outcome);
            }
            outcomes
        })
    }
}

async fn invoke<F: RuntimeFactors>(
    app: &TriggerApp<NatsTrigger, F>,
    component: &str,
    msg: Message,
) -> anyhow::Result<()> {
    let (instance, mut store) = app.prepare(component)?.instantiate(()).await?;
    let guest_world = single::NatsTrigger::new(&mut store, &instance)
        .map_err(|e| anyhow!("component {component:?}: spin-nats:trigger handle-message: {e}"))?;
    let message = guest::Message {
        subject: msg.subject,
        payload: msg.payload,
        headers: msg.headers,
        reply_to: msg.reply,
    };
    guest_world
        .call_handle_message(&mut store, &message)
        .await?
        .map_err(|guest::Error::Other(e)| anyhow!("{component}: {e}"))
}

/// One call of `handle-batch`; the outer error when the call itself failed
/// (trap, or a list of the wrong length), else one outcome per message.
async fn invoke_batch<F: RuntimeFactors>(
    app: &TriggerApp<NatsTrigger, F>,
    component: &str,
    msgs: Vec<Message>,
) -> anyhow::Result<Vec<anyhow::Result<()>>> {
    let (instance, mut store) = app.prepare(component)?.instantiate(()).await?;
    let guest_world = batch::NatsBatchTrigger::new(&mut store, &instance)
        .map_err(|e| anyhow!("component {component:?}: spin-nats:trigger handle-batch: {e}"))?;
    let n = msgs.len();
    let deliveries: Vec<batch_guest::Delivery> = msgs
        .into_iter()
        .map(|m| batch_guest::Delivery {
            message: batch_guest::Message {
                subject: m.subject,
                payload: m.payload,
                headers: m.headers,
                reply_to: m.reply,
            },
            jetstream: m.stream.map(|s| batch_guest::StreamInfo {
                sequence: s.sequence,
                delivered: s.delivered,
                published_ms: s.published_ms,
            }),
        })
        .collect();
    let outcomes = guest_world
        .call_handle_batch(&mut store, &deliveries)
        .await?;
    anyhow::ensure!(
        outcomes.len() == n,
        "{component} returned {} outcomes for a batch of {n}",
        outcomes.len()
    );
    Ok(outcomes
        .into_iter()
        .map(|o| o.map_err(|batch_guest::Error::Other(e)| anyhow!("{component}: {e}")))
        .collect())
}
