//! `events`: the HTTP component behind `GET /api/events` (its own route in
//! spin.toml), the change feed as a Server-Sent Events stream. Apart from
//! web so that an open stream holds a small instance (no templates, no
//! reader composed in): Spin keeps one instance per 16 open streams.
//! Logs one line when a stream opens and one when it closes.
//! Built with the feature `wasi-http-0-2` (`make build-p2`), it exports the
//! WASI 0.2 handler instead, as web does: a stream holds an instance there.

#[cfg(all(feature = "wasi-http-0-2", feature = "wasi-http-0-3"))]
compile_error!(
    "events exports one HTTP handler: build with wasi-http-0-3 (the default) or wasi-http-0-2"
);

mod live;

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tasks_site::{Request as SiteRequest, Response as SiteResponse, correlation, events, paths};
use tasks_spin_kv::counters;

/// A response body: whole (errors, HEAD), or streamed.
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The exported WASI 0.3 HTTP handler: the export macro expands to `unsafe` glue.
#[cfg(feature = "wasi-http-0-3")]
#[allow(unsafe_code)]
mod entry {
    use wasip3::http::types::{ErrorCode, Request, Response};
    use wasip3::http_compat::{http_from_wasi_request, http_into_wasi_response};

    struct Events;

    impl wasip3::exports::http::handler::Guest for Events {
        async fn handle(request: Request) -> Result<Response, ErrorCode> {
            let request = http_from_wasi_request(request)?;
            http_into_wasi_response(super::serve(&request))
        }
    }

    wasip3::http::service::export!(Events with_types_in wasip3);
}

/// The exported WASI 0.2 HTTP handler (spin-sdk 5.2's macro expands to
/// `unsafe` glue); no request body is read.
#[cfg(feature = "wasi-http-0-2")]
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{IncomingRequest, ResponseOutparam};
    use tasks_spin_kv::wasi_http_0_2::{request, send};

    #[spin_sdk::http_component]
    async fn handle(req: IncomingRequest, out: ResponseOutparam) {
        match request(req, |_, _| None).await {
            Ok(request) => send(super::serve(&request), out).await,
            Err(_) => send(super::bad_request(), out).await,
        }
    }
}

/// 400 for a request line or header that is not valid HTTP.
#[cfg(feature = "wasi-http-0-2")]
fn bad_request() -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(
            b"the request line or a header is not valid HTTP\n",
        ))
        .boxed_unsync(),
    );
    *resp.status_mut() = http::StatusCode::BAD_REQUEST;
    resp
}

fn header<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

fn serve<B>(req: &Request<B>) -> Response<Body> {
    let start = Instant::now();
    let cid = correlation::resolve(header(req, correlation::HEADER).as_deref());
    let query = req.uri().query().unwrap_or("").to_owned();
    let sep = if query.is_empty() { "" } else { "?" };
    println!(
        "[{cid}] → {} {}{sep}{query}",
        req.method(),
        req.uri().path()
    );
    let site_req = SiteRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query,
        last_event_id: header(req, "last-event-id"),
        ..SiteRequest::default()
    };
    let done = |mut resp: SiteResponse, body: Option<Body>| {
        resp.finish(&site_req, &cid);
        println!(
            "[{cid}] ← {}{} ({} ms)",
            resp.status,
            if body.is_some() { " stream" } else { "" },
            start.elapsed().as_millis()
        );
        counters::request(paths::API_EVENTS, resp.status, &cid);
        respond(resp, body, &cid)
    };
    let sub = match events::subscribe(&site_req) {
        Ok(sub) => sub,
        Err(resp) => return done(resp, None),
    };
    let after = match live::start(&sub) {
        Ok(after) => after,
        Err(e) => {
            println!("[{cid}] KV GET feed — FAILED: {e}");
            return done(tasks_site::unavailable("the change feed"), None);
        }
    };
    let head = events::response_head();
    if site_req.method == "HEAD" {
        return done(head, None);
    }
    println!(
        "[{cid}] stream after {after}{}",
        sub.status
            .map_or(String::new(), |s| format!(" status={}", s.as_str()))
    );
    let body = StreamBody::new(live::body(sub, after, cid.clone())).boxed_unsync();
    done(head, Some(body))
}

/// `resp`'s status and headers with `body`, or its own body.
fn respond(resp: SiteResponse, body: Option<Body>, cid: &str) -> Response<Body> {
    let mut builder = Response::builder().status(resp.status);
    for (name, value) in resp.headers {
        builder = builder.header(name, value);
    }
    let body = body.unwrap_or_else(|| Full::new(Bytes::from(resp.body)).boxed_unsync());
    builder.body(body).unwrap_or_else(|e| {
        println!("[{cid}] could not build the response: {e}");
        let mut r =
            Response::new(Full::new(Bytes::from_static(b"internal error\n")).boxed_unsync());
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
