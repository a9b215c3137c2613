//! Plain request and response types, the headers every response carries,
//! and entity tags.

use sha2::{Digest, Sha256};

use crate::correlation;

/// What the site needs of an HTTP request.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// The `X-Timestamp` header (signed routes).
    pub timestamp: Option<String>,
    /// The `X-Signature` header (signed routes).
    pub signature: Option<String>,
    /// The `Authorization` header (operator routes).
    pub authorization: Option<String>,
    /// The `Last-Event-ID` header (the change stream).
    pub last_event_id: Option<String>,
    /// The body (signed routes read it; others ignore it).
    pub body: Vec<u8>,
}

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// `Content-Type` values.
pub(crate) mod content_type {
    pub const HTML: &str = "text/html; charset=utf-8";
    pub const JSON: &str = "application/json";
    pub const CSS: &str = "text/css; charset=utf-8";
    pub const SVG: &str = "image/svg+xml";
    pub const JS: &str = "text/javascript; charset=utf-8";
    pub const EVENT_STREAM: &str = "text/event-stream";
    pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
    pub const TEXT: &str = "text/plain; charset=utf-8";
}

/// `Cache-Control` values, one per kind of response.
pub(crate) mod cache {
    /// Live data: may be stored, must be revalidated (cheap with an ETag).
    pub const REVALIDATE: &str = "no-cache";
    /// Errors and health: a 404 may turn into a 200 with the next event.
    pub const NEVER: &str = "no-store";
    /// Assets compiled into the component; they change only with a release.
    pub const ASSET: &str = "public, max-age=3600";
}

/// Sent on every response.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

impl Response {
    pub(crate) fn new(status: u16, content_type: &str, cache_control: &str, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("cache-control".into(), cache_control.into()),
            ],
            body,
        }
    }

    pub(crate) fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of a header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Adds the headers every response carries; drops the body of a HEAD.
    pub fn finish(&mut self, req: &Request, correlation_id: &str) {
        for (name, value) in SECURITY_HEADERS {
            self.headers.push((name.into(), value.into()));
        }
        self.headers
            .push((correlation::HEADER.into(), correlation_id.into()));
        if req.method == "HEAD" {
            self.body.clear();
        }
    }

    /// A 200 with an ETag, or a bodiless 304 when the client's copy matches.
    pub(crate) fn cacheable(req: &Request, content_type: &str, body: Vec<u8>) -> Self {
        let tag = etag(&body);
        if req
            .if_none_match
            .as_deref()
            .is_some_and(|h| etag_matches(h, &tag))
        {
            return Response::new(304, content_type, cache::REVALIDATE, Vec::new())
                .with_header("etag", tag);
        }
        Response::new(200, content_type, cache::REVALIDATE, body).with_header("etag", tag)
    }
}

/// A strong entity tag from the body's SHA-256.
pub(crate) fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `If-None-Match` uses weak comparison: `W/` prefixes are ignored; `*` matches.
pub(crate) fn etag_matches(header: &str, tag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == tag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_stable_quoted_and_content_bound() {
        let a = etag(b"hello");
        assert_eq!(a, etag(b"hello"));
        assert_ne!(a, etag(b"hello!"));
        assert!(
            a.starts_with('"') && a.ends_with('"') && a.len() == 34,
            "{a}"
        );
    }

    #[test]
    fn if_none_match_forms() {
        let tag = etag(b"x");
        let weak = format!("W/{tag}");
        let listed = format!("\"nope\", {tag}");
        for (header, want) in [
            (&tag[..], true),
            (&weak[..], true),
            (&listed[..], true),
            ("*", true),
            ("\"nope\"", false),
            ("", false),
        ] {
            assert_eq!(etag_matches(header, &tag), want, "{header}");
        }
    }

    #[test]
    fn head_requests_lose_the_body_but_keep_headers() {
        let req = Request {
            method: "HEAD".into(),
            ..Default::default()
        };
        let mut resp = Response::new(200, content_type::HTML, cache::REVALIDATE, b"<p>".to_vec());
        resp.finish(&req, "cid-1");
        assert!(resp.body.is_empty());
        assert_eq!(resp.header("x-correlation-id"), Some("cid-1"));
        assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    }
}
