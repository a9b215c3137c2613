//! `tasks-sign METHOD PATH [BODY]`: prints the two headers that sign a
//! request for spin-tasks' admin routes, one per line, in the form curl's
//! `-H @file` reads:
//!
//! ```text
//! curl -X POST -H @<(tasks-sign POST /api/dead-letters/ID/replay) \
//!      http://127.0.0.1:3000/api/dead-letters/ID/replay
//! ```
//!
//! The key comes from the variable `spin up` checks that route with:
//! `SPIN_VARIABLE_REPLAY_KEY` for a replay, `SPIN_VARIABLE_PURGE_KEY` for a
//! purge, else `SPIN_VARIABLE_HMAC_KEY` for either. `TASKS_SIGN_TIME` (when set and not empty) overrides the timestamp (Unix seconds), for
//! tests that need an expired or future signature.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: tasks-sign METHOD PATH [BODY]   (key from SPIN_VARIABLE_PURGE_KEY or SPIN_VARIABLE_REPLAY_KEY by path, else SPIN_VARIABLE_HMAC_KEY)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (method, path, body) = match args.as_slice() {
        [m, p] => (m, p, ""),
        [m, p, b] => (m, p, b.as_str()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The purpose's own key (SPIN_VARIABLE_PURGE_KEY, SPIN_VARIABLE_REPLAY_KEY), else the
    // shared one, as the app looks them up.
    let purpose = tasks_signing::Purpose::of_path(path);
    let env = |name: &str| {
        std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()))
            .ok()
            .filter(|k| !k.is_empty())
    };
    let Some((key, _)) = purpose.key(env) else {
        eprintln!(
            "tasks-sign: set SPIN_VARIABLE_{} (or SPIN_VARIABLE_HMAC_KEY) to the key spin up runs with",
            purpose.variable().to_ascii_uppercase()
        );
        return ExitCode::from(2);
    };
    let now = match std::env::var("TASKS_SIGN_TIME")
        .ok()
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<i64>())
    {
        Some(Ok(t)) => t,
        Some(Err(_)) => {
            eprintln!("tasks-sign: TASKS_SIGN_TIME must be Unix seconds");
            return ExitCode::from(2);
        }
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or_default(),
    };
    let signature = tasks_signing::sign(key.as_bytes(), now, method, path, body.as_bytes());
    println!("X-Timestamp: {now}");
    println!("X-Signature: {signature}");
    ExitCode::SUCCESS
}
