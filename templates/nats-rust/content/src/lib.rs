use anyhow::Context;
use trigger_nats_sdk::{Message, nats_component};

/// Called once per message on the subject in spin.toml. `Ok` acknowledges it (and answers
/// a requester `{"ok":true}`); an error is logged by the plugin, answered
/// `{"ok":false,"error":…}` and, in JetStream mode, the message is delivered again.
#[nats_component]
fn handle(message: Message) -> anyhow::Result<()> {
    let text = message
        .payload_str()
        .with_context(|| format!("the payload on {} is not UTF-8", message.subject))?;
    println!("{}: {text}", message.subject);
    Ok(())
}
