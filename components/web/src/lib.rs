//! `web`: the HTTP component. Translates Spin requests to [`tasks_site`] and
//! back; reads tasks through the `tasks:store/reader` import, which Spin
//! satisfies with the `kv-read` component. Logs one line in, one line out.

mod admin;
mod source;

use std::time::Instant;

use spin_sdk::http::{Request, Response};
use tasks_site::correlation;

/// Generated bindings: the only code here that needs `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "reader-consumer",
        path: "../../wit/tasks-store",
    });
}

/// The exported HTTP handler: the SDK's macro expands to `unsafe` glue.
#[allow(unsafe_code)]
mod entry {
    #[spin_sdk::http_component]
    fn handle(req: spin_sdk::http::Request) -> spin_sdk::http::Response {
        super::serve(req)
    }
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.header(name).and_then(|h| h.as_str()).map(str::to_owned)
}

fn serve(req: Request) -> Response {
    let start = Instant::now();
    let cid = correlation::resolve(req.header(correlation::HEADER).and_then(|h| h.as_str()));
    let method = req.method().to_string();
    let query = req.query();
    let sep = if query.is_empty() { "" } else { "?" };
    println!("[{cid}] → {method} {}{sep}{query}", req.path());

    let site_req = tasks_site::Request {
        method,
        path: req.path().to_owned(),
        query: query.to_owned(),
        if_none_match: header(&req, "if-none-match"),
        timestamp: header(&req, tasks_signing::TIMESTAMP_HEADER),
        signature: header(&req, tasks_signing::SIGNATURE_HEADER),
        body: req.body().to_vec(),
    };
    let resp = tasks_site::handle(&site_req, &cid, &source::Reader, &admin::SpinAdmin);

    println!(
        "[{cid}] ← {} ({} ms)",
        resp.status,
        start.elapsed().as_millis()
    );
    let mut builder = Response::builder();
    builder.status(resp.status);
    for (name, value) in resp.headers {
        builder.header(name, value);
    }
    builder.body(resp.body).build()
}
