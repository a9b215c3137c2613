//! Just enough HTTP/1.1 server side: read one request (Content-Length or
//! chunked body), write one response with a Content-Length.

use std::io::{self, BufRead, Write};

/// Largest request head and body this proxy accepts.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 128 * 1024 * 1024;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `PUT`, …
    pub method: String,
    /// The request target: path and query, as sent.
    pub target: String,
    /// Header pairs as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the client asked to close the connection afterwards.
    pub close: bool,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads the next request; `None` when the client closed the connection
/// between requests. `interim` receives a `100 Continue` when asked for.
pub fn read_request(
    reader: &mut impl BufRead,
    interim: &mut impl Write,
) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = io::Read::take(&mut *reader, (MAX_HEAD - before) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(bad("connection closed mid-request"))
            };
        }
        if head.len() >= MAX_HEAD {
            return Err(bad("request head too large"));
        }
        // Leading blank lines between requests are allowed (RFC 9112 §2.2).
        if head == b"\r\n" || head == b"\n" {
            head.clear();
            continue;
        }
        if head[before..] == *b"\r\n" || head[before..] == *b"\n" {
            break;
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Request::new(&mut slots);
    parsed
        .parse(&head)
        .map_err(|e| bad(format!("bad request head: {e}")))?;
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default().to_owned();
    let http10 = parsed.version == Some(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
        close: false,
    };
    let connection = req
        .header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    req.close = connection.contains("close") || (http10 && !connection.contains("keep-alive"));
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        interim.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        interim.flush()?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(reader)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.trim().parse().map_err(|_| bad("bad content-length"))?;
        if len > MAX_BODY {
            return Err(bad("request body too large"));
        }
        req.body = vec![0; len];
        reader.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        io::Read::take(&mut *reader, 1024).read_line(&mut line)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                line.clear();
                io::Read::take(&mut *reader, 8192).read_line(&mut line)?;
                if line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("request body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// Writes a whole response. Framing headers in `headers` are replaced.
pub fn write_response(
    out: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        if !is_hop_by_hop(k) && !k.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("content-length: {}\r\n", body.len()));
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// Headers that describe one connection, never forwarded.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "host",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &[u8]) -> io::Result<Option<Request>> {
        let mut interim = Vec::new();
        read_request(&mut io::BufReader::new(raw), &mut interim)
    }

    #[test]
    fn reads_content_length_and_chunked_bodies() {
        let req = read(b"PUT /a/b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcNEXT")
            .expect("read")
            .expect("request");
        assert_eq!(
            (req.method.as_str(), req.target.as_str(), req.path()),
            ("PUT", "/a/b?x=1", "/a/b")
        );
        assert_eq!(req.body, b"abc");
        assert!(!req.close);
        let req = read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
            .expect("read")
            .expect("request");
        assert_eq!(req.body, b"abcde");
        assert!(req.close);
    }

    #[test]
    fn eof_between_requests_is_none_and_mid_request_is_an_error() {
        assert!(read(b"").expect("eof").is_none());
        assert!(read(b"GET / HTTP/1.1\r\nHost").is_err());
        assert!(read(b"GET / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc").is_err());
    }

    #[test]
    fn writes_framed_responses() {
        let mut out = Vec::new();
        let headers = vec![
            ("Content-Length".to_owned(), "999".to_owned()),
            ("Transfer-Encoding".to_owned(), "chunked".to_owned()),
            ("retry-after".to_owned(), "2".to_owned()),
        ];
        write_response(&mut out, 429, &headers, b"body", true).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbody"
        );
    }
}
