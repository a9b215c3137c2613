//! Telling a web deployed elsewhere that tasks changed: a signed
//! `POST {"taskIds":[…]}` to the `web_purge_url` variable, so it drops its
//! cached copies at once instead of after its TTL.

use spin_sdk::http::{Method, Request, Response};
use tasks_domain::{CORRELATION_HEADER, Timestamp};

use crate::variable;

/// Whether `verify_writes` is on (`true`, `1`, `on`, `yes`).
pub fn verify_writes() -> bool {
    variable("verify_writes")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "on" | "yes"))
}

/// Sends the purge when `web_purge_url` and `purge_key` (or `hmac_key`) are set; logs the
/// outcome, never fails the caller (the web's TTL still bounds staleness).
pub fn purge_remote_web(task_ids: &[String], correlation_id: &str, log: &dyn Fn(&str)) {
    if task_ids.is_empty() {
        return;
    }
    let Some(url) = variable("web_purge_url") else {
        return;
    };
    let Some((key, name)) = tasks_signing::Purpose::Purge.key(variable) else {
        log(&format!(
            "[{correlation_id}] PURGE {url} skipped: web_purge_url is set but neither purge_key nor hmac_key is"
        ));
        return;
    };
    if let Err(why) = tasks_signing::strong_enough(name, key.as_bytes()) {
        log(&format!("[{correlation_id}] PURGE {url} skipped: {why}"));
        return;
    }
    if let Err(why) = tasks_signing::may_send_signed_to(&url) {
        log(&format!(
            "[{correlation_id}] PURGE skipped: web_purge_url: {why}"
        ));
        return;
    }
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/")
        .split(['?', '#'])
        .next()
        .unwrap_or("/")
        .to_owned();
    // One request per MAX_PURGE_IDS ids: the most the web takes in one.
    for ids in task_ids.chunks(tasks_domain::validate::MAX_PURGE_IDS) {
        send_purge(&url, &path, &key, ids, correlation_id, log);
    }
}

/// One signed purge of `task_ids` to `url` (whose path is `path`).
fn send_purge(
    url: &str,
    path: &str,
    key: &str,
    task_ids: &[String],
    correlation_id: &str,
    log: &dyn Fn(&str),
) {
    // The nonce makes each purge's signature its own: the web takes a
    // signature once, and two purges of one task can fall in one second.
    let body = serde_json::json!({ "taskIds": task_ids, "nonce": crate::unique() }).to_string();
    let now = Timestamp::now().millis() / 1000;
    let signature = tasks_signing::sign(key.as_bytes(), now, "POST", path, body.as_bytes());
    let request = Request::builder()
        .method(Method::Post)
        .uri(url)
        .header("content-type", "application/json")
        .header(CORRELATION_HEADER, correlation_id)
        .header(tasks_signing::TIMESTAMP_HEADER, now.to_string())
        .header(tasks_signing::SIGNATURE_HEADER, signature)
        .body(body)
        .build();
    crate::write_held();
    let outcome: Result<Response, _> = spin_sdk::http::run(spin_sdk::http::send(request));
    match outcome {
        Ok(r) if (200..300).contains(r.status()) => {
            log(&format!("[{correlation_id}] PURGE {url} → {}", r.status()));
        }
        Ok(r) => log(&format!(
            "[{correlation_id}] PURGE {url} → {}: {}",
            r.status(),
            String::from_utf8_lossy(r.body())
        )),
        Err(e) => log(&format!("[{correlation_id}] PURGE {url} failed: {e}")),
    }
}
