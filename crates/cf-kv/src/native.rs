//! [`Http`] over `ureq` (blocking, rustls), for native tests and tools.

use std::time::Duration;

use crate::http::{Http, HttpRequest, HttpResponse, Method, TransportError};

/// A pooled blocking HTTP client. Redirects are not followed and every
/// status is returned as a response.
#[derive(Clone, Debug)]
pub struct UreqHttp {
    agent: ureq::Agent,
}

impl Default for UreqHttp {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl UreqHttp {
    /// A client whose calls give up after `timeout` in total.
    pub fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build()
            .into();
        UreqHttp { agent }
    }
}

/// A `ureq` response as status, headers (values as text) and the whole
/// body: what this client returns, and what `cf-fault-proxy` passes on.
pub fn parts(mut resp: ureq::http::Response<ureq::Body>) -> Result<HttpResponse, ureq::Error> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()?;
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn transport(e: impl std::fmt::Display) -> TransportError {
    TransportError(e.to_string())
}

impl Http for UreqHttp {
    fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut builder = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(&req.url);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        // GET and DELETE go without a body; PUT and POST always carry one,
        // even empty, so the length is sent.
        let result = match req.method {
            Method::Get | Method::Delete if req.body.is_empty() => {
                self.agent.run(builder.body(()).map_err(transport)?)
            }
            _ => self.agent.run(builder.body(req.body).map_err(transport)?),
        };
        parts(result.map_err(transport)?).map_err(transport)
    }
}
