//! `trigger-nats`: run by `spin up` as `spin trigger nats` for apps with
//! `[[trigger.nats]]` entries.

use clap::Parser;
use spin_trigger::cli::FactorsTriggerCommand;
use trigger_nats::NatsTrigger;
use trigger_nats::redis_store::NatsFactorsBuilder;

type Command = FactorsTriggerCommand<NatsTrigger, NatsFactorsBuilder>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let version = std::env::var("SPIN_VERSION").unwrap_or_else(|_| "unknown".into());
    spin_telemetry::init(version)?;
    let result = Command::parse().run().await;
    // Spin's command returns at once on SIGINT/SIGTERM; let the listener drain.
    trigger_nats::finish().await;
    result
}
