//! `web`: the HTTP component. Translates Spin requests to [`tasks_site`] and
//! back; reads tasks through the `tasks:store/reader` import, which Spin
//! satisfies with the `kv-read` component. Logs one line per request, when
//! it is answered: method, path, status and time.
//!
//! `GET /api/events` has its own component (`events`); a request for it that
//! reaches web gets the stream's opening only.
//!
//! It exports the WASI 0.3 HTTP handler, so Spin 4 reuses an instance for
//! many requests (up to 128 by default); the stores it opens and the
//! variables it reads are kept for the instance's life (`tasks-spin-kv`).
//! Everything it reads from the stores is read again on every request.
//! Built with the feature `wasi-http-0-2` instead (`make build-p2`), it
//! exports the WASI 0.2 handler, for hosts without this WASI 0.3 release
//! candidate (Spin 3.x; a later Spin on the final WASI 0.3): an instance
//! per request there.

#[cfg(all(feature = "wasi-http-0-2", feature = "wasi-http-0-3"))]
compile_error!(
    "web exports one HTTP handler: build with wasi-http-0-3 (the default) or wasi-http-0-2"
);

mod admin;
mod source;
#[cfg(feature = "wasi-http-0-2")]
mod wasi_http_0_2;

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tasks_site::{correlation, routes};
use tasks_spin_kv::counters;

/// A response body (boxed: the one type every path returns).
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Generated bindings: the only code here that needs `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "reader-consumer",
        path: "../../wit/tasks-store",
    });
}

/// The exported WASI 0.3 HTTP handler: the export macro expands to `unsafe` glue.
#[cfg(feature = "wasi-http-0-3")]
#[allow(unsafe_code)]
mod entry {
    use wasip3::http::types::{ErrorCode, Request, Response};
    use wasip3::http_compat::{http_from_wasi_request, http_into_wasi_response};

    struct Web;

    impl wasip3::exports::http::handler::Guest for Web {
        async fn handle(request: Request) -> Result<Response, ErrorCode> {
            let request = http_from_wasi_request(request)?;
            http_into_wasi_response(super::serve(request).await)
        }
    }

    wasip3::http::service::export!(Web with_types_in wasip3);
}

fn header<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

async fn serve<B>(req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = Instant::now();
    let cid = correlation::resolve(header(&req, correlation::HEADER).as_deref());
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();

    let if_none_match = header(&req, "if-none-match");
    let authorization = header(&req, "authorization");
    let last_event_id = header(&req, "last-event-id");
    let timestamp = header(&req, tasks_signing::TIMESTAMP_HEADER);
    let signature = header(&req, tasks_signing::SIGNATURE_HEADER);
    // Only the routes that take a body read one, up to their limit; every
    // other request is answered without reading it.
    let body = match routes::body_limit(&method, &path) {
        None => Vec::new(),
        Some(limit) => {
            let declared = header(&req, "content-length").and_then(|n| n.parse::<u64>().ok());
            let read = if declared.is_some_and(|n| n > limit as u64) {
                Err(None)
            } else {
                Limited::new(req.into_body(), limit)
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .map_err(Some)
            };
            match read {
                Ok(body) => body,
                Err(e) => {
                    let too_large = e
                        .as_ref()
                        .is_none_or(|e| e.downcast_ref::<LengthLimitError>().is_some());
                    let resp = if too_large {
                        routes::body_too_large()
                    } else {
                        routes::body_unreadable()
                    };
                    println!(
                        "[{cid}] {method} {path} → {} ({} ms): {}",
                        resp.status,
                        start.elapsed().as_millis(),
                        match &e {
                            None => format!("the declared body is over {limit} bytes"),
                            Some(_) if too_large => format!("the body is over {limit} bytes"),
                            Some(e) => format!("could not read the request body: {e}"),
                        }
                    );
                    counters::request(routes::name(&path), resp.status, &cid);
                    return whole(resp, &cid);
                }
            }
        }
    };
    let site_req = tasks_site::Request {
        method,
        path,
        query,
        if_none_match,
        timestamp,
        signature,
        authorization,
        last_event_id,
        body,
    };
    let route = routes::name(&site_req.path);
    let resp = tasks_site::handle(&site_req, &cid, &source::Reader, &admin::SpinAdmin);

    let sep = if site_req.query.is_empty() { "" } else { "?" };
    println!(
        "[{cid}] {} {}{sep}{} → {} ({} ms)",
        site_req.method,
        site_req.path,
        site_req.query,
        resp.status,
        start.elapsed().as_millis()
    );
    counters::request(route, resp.status, &cid);
    whole(resp, &cid)
}

/// `resp` as an HTTP response with its whole body.
fn whole(resp: tasks_site::Response, cid: &str) -> Response<Body> {
    let mut builder = Response::builder().status(resp.status);
    for (name, value) in resp.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(resp.body)).boxed_unsync())
        .unwrap_or_else(|e| {
            println!("[{cid}] could not build the response: {e}");
            plain(500, "internal error\n")
        })
}

/// A plain-text response (when the request or response could not be translated).
fn plain(status: u16, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync());
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
