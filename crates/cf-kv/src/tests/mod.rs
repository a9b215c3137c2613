//! Client behaviour against a scripted fake [`Http`].

mod bulk;
mod single;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Client, Config, Http, HttpRequest, HttpResponse, Sleeper, TransportError};

pub(super) type Reply = Result<HttpResponse, TransportError>;

/// Answers with a function of the request and records what was sent.
pub(super) struct Fake {
    respond: Box<dyn Fn(&HttpRequest) -> Reply + Send + Sync>,
    sent: Mutex<Vec<HttpRequest>>,
}

impl Fake {
    pub(super) fn with(respond: impl Fn(&HttpRequest) -> Reply + Send + Sync + 'static) -> Self {
        Fake {
            respond: Box::new(respond),
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Replies in order; a 599 once the script runs out.
    pub(super) fn scripted(replies: Vec<Reply>) -> Self {
        let queue = Mutex::new(VecDeque::from(replies));
        Fake::with(move |_| {
            queue
                .lock()
                .map_or(None, |mut q| q.pop_front())
                .unwrap_or_else(|| Ok(raw(599, "script exhausted")))
        })
    }

    pub(super) fn sent(&self) -> Vec<HttpRequest> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Http for Fake {
    fn send(&self, req: HttpRequest) -> Reply {
        let reply = (self.respond)(&req);
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(req);
        }
        reply
    }
}

pub(super) fn raw(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

pub(super) fn ok(result: Value) -> HttpResponse {
    raw(
        200,
        &json!({"success": true, "errors": [], "messages": [], "result": result}).to_string(),
    )
}

pub(super) fn page(names: &[&str], cursor: &str) -> Reply {
    let keys: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
    Ok(raw(
        200,
        &json!({"success": true, "errors": [], "messages": [], "result": keys,
                "result_info": {"count": names.len(), "cursor": cursor}})
        .to_string(),
    ))
}

pub(super) fn fail(status: u16, code: u32, message: &str) -> HttpResponse {
    raw(
        status,
        &json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})
            .to_string(),
    )
}

pub(super) fn with_header(mut resp: HttpResponse, name: &str, value: &str) -> HttpResponse {
    resp.headers.push((name.to_owned(), value.to_owned()));
    resp
}

pub(super) const BASE: &str = "http://127.0.0.1:9/cdn-cgi/local/explorer/api";
pub(super) const NS: &str = "0123456789abcdef0123456789abcdef";
pub(super) const TOKEN: &str = "tok-SECRET-42";

pub(super) fn client(fake: &Fake) -> Client<&Fake> {
    Client::new(fake, Config::new(BASE, NS, TOKEN)).expect("client")
}

pub(super) fn url(tail: &str) -> String {
    format!("{BASE}/storage/kv/namespaces/{NS}/{tail}")
}

pub(super) fn body_json(req: &HttpRequest) -> Value {
    serde_json::from_slice(&req.body).expect("json body")
}

#[derive(Clone, Default)]
pub(super) struct RecordingSleeper(Arc<Mutex<Vec<Duration>>>);

impl Sleeper for RecordingSleeper {
    fn sleep(&self, d: Duration) {
        if let Ok(mut v) = self.0.lock() {
            v.push(d);
        }
    }
}

impl RecordingSleeper {
    pub(super) fn waits(&self) -> Vec<Duration> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
