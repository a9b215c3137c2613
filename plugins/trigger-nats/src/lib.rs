//! The Spin side of the NATS trigger: reads the manifest, resolves
//! variables, and runs a component per message. Connecting, subscribing,
//! replies and draining live in `nats-trigger-core` (tested without Spin).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures::FutureExt;
use nats_trigger_core::Subscription;
use nats_trigger_core::config::{self, TriggerConfig, TriggerMetadata};
use nats_trigger_core::lifecycle::Ancestry;
use nats_trigger_core::listener::{self, Handler, HandlerFuture, Message};
use spin_factor_variables::VariablesFactor;
use spin_factors::RuntimeFactors;
use spin_trigger::cli::NoCliArgs;
use spin_trigger::{App, Trigger, TriggerApp};
use tokio::sync::{Notify, watch};

/// Host bindings of the guest world in `wit/spin-nats`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/spin-nats",
        world: "nats-trigger",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::spin_nats::trigger::types as guest;

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
        let subscriptions = nats_trigger_core::plan::plan(&entries)?;
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
        };
        let credentials = resolved.credentials()?;
        let mut subscriptions = self.subscriptions.clone();
        for sub in &mut subscriptions {
            sub.subject = variables
                .resolve_expression(sub.subject.clone())
                .await
                .with_context(|| format!("resolving subject {:?}", sub.subject))?;
            config::validate_subject(&sub.subject).map_err(|e| anyhow!(e))?;
        }

        let url = resolved.url().to_owned();
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
        let Some(client) = listener::connect(&url, &credentials, &name, ended.clone())
            .await
            .map_err(|e| anyhow!("{e}"))?
        else {
            return Ok(());
        };
        let handler: Arc<dyn Handler> = Arc::new(SpinHandler {
            app: Arc::new(trigger_app),
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
            result.map_err(|e| anyhow!("{e}"))
        });
        if let Ok(mut r) = RUNNING.lock() {
            *r = Some(Running { stop, done });
        }
        task.await.context("the NATS listener task failed")??;
        Ok(())
    }
}

/// Runs the component named by a subscription, one instance per message.
struct SpinHandler<F: RuntimeFactors> {
    app: Arc<TriggerApp<NatsTrigger, F>>,
}

impl<F: RuntimeFactors> Handler for SpinHandler<F> {
    fn handle(&self, component: &str, msg: Message) -> HandlerFuture {
        let app = self.app.clone();
        let component = component.to_owned();
        Box::pin(async move {
            invoke(&app, &component, msg)
                .await
                .map_err(|e| format!("{e:#}"))
        })
    }
}

async fn invoke<F: RuntimeFactors>(
    app: &TriggerApp<NatsTrigger, F>,
    component: &str,
    msg: Message,
) -> anyhow::Result<()> {
    let (instance, mut store) = app.prepare(component)?.instantiate(()).await?;
    let guest_world = bindings::NatsTrigger::new(&mut store, &instance).map_err(|e| {
        anyhow!("component {component:?} does not export spin-nats:trigger handle-message: {e}")
    })?;
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
