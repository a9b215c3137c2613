//! The WASI 0.2 HTTP glue (`wasi:http/incoming-handler@0.2.0`, spin-sdk
//! 5.2's types) that `web` and `events` use when built with their feature
//! `wasi-http-0-2` (`make build-p2`): a request as an `http::Request`, a
//! response written back as its body comes. Each component keeps its own
//! export (`#[spin_sdk::http_component]`).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use spin_sdk::http::{Fields, IncomingRequest, Method, OutgoingResponse, ResponseOutparam};

/// The method's name as HTTP spells it.
fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

/// `req` as an `http::Request`. Its body is read only when `limit` (given
/// the method and path) allows one, and then no more than one byte past
/// the limit: the route sees it is too large without the rest being read.
/// `Err` when the request line or a header is not valid HTTP.
pub async fn request(
    req: IncomingRequest,
    limit: impl Fn(&str, &str) -> Option<usize>,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let method = method_name(&req.method());
    let target = req.path_with_query().unwrap_or_else(|| "/".into());
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let mut builder = http::Request::builder()
        .method(method.as_str())
        .uri(&target);
    for (name, value) in req.headers().entries() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    if let Some(limit) = limit(&method, &path) {
        let mut chunks = req.into_body_stream();
        while let Some(Ok(chunk)) = chunks.next().await {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                break;
            }
        }
    }
    builder.body(Full::new(Bytes::from(body)))
}

/// Writes `response` to `out`: status and headers, then its body as it
/// comes (a stream ends when its body does, or when the client goes).
pub async fn send<B>(response: http::Response<B>, out: ResponseOutparam)
where
    B: Body<Data = Bytes> + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let Ok(fields) = Fields::from_list(&headers) else {
        return;
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(parts.status.as_u16()).is_err() {
        return;
    }
    let mut sink = response.take_body();
    out.set(response);
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data()
            && sink.send(data.to_vec()).await.is_err()
        {
            return;
        }
    }
}
