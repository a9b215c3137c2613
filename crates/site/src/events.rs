//! `GET /api/events`: the change feed as Server-Sent Events. The web
//! component streams the body; this module checks the request and frames
//! what it sends, so both are tested natively.
//!
//! - `id:` is the change's sequence number, `event:` its kind
//!   (`created`, `updated`, `deleted`), `data:` the change as JSON;
//! - a `Last-Event-ID` header (what `EventSource` sends when it reconnects)
//!   or `?after=` resumes after that number; without either the stream
//!   starts from now;
//! - `event: reset` tells a client that what it missed is gone (it was more
//!   than the feed keeps behind): reload;
//! - a comment every [`HEARTBEAT_SECS`] keeps proxies from closing an idle
//!   stream and lets the server notice a client that left;
//! - `?status=` sends only changes that concern that status (the task has
//!   it, or had it before) and every delete.

use tasks_domain::{Status, Timestamp};
use tasks_feed::{ChangeKind, Entry};

use crate::api::error_body;
use crate::http::{Request, cache, content_type};
use crate::{Response, api};

/// Seconds between heartbeats on an idle stream.
pub const HEARTBEAT_SECS: u64 = 15;

/// The reconnection delay suggested to clients, in milliseconds.
pub const RETRY_MILLIS: u64 = 2_000;

/// How long a stream stays open when the `stream_max_seconds` variable
/// does not say: then it ends with [`closing`], and the client's
/// `EventSource` reconnects from where it was (`Last-Event-ID`). No stream
/// holds an instance and its store reads for good.
pub const DEFAULT_STREAM_SECS: u64 = 1_800;

/// The most changes a reconnecting client is caught up with one by one: a
/// client further behind the head gets [`reset`] at once (reload), instead
/// of up to the whole feed read for it alone. What one instance's shared
/// follower keeps.
pub const MAX_CATCH_UP: u64 = tasks_feed::Follower::KEEP as u64;

/// A stream's lifetime from the `stream_max_seconds` variable: whole
/// seconds from 1 to a day; [`DEFAULT_STREAM_SECS`] when unset or not one.
pub fn stream_secs(variable: Option<&str>) -> u64 {
    variable
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=86_400).contains(s))
        .unwrap_or(DEFAULT_STREAM_SECS)
}

/// Whether a client after `after` is too far behind `head` to be caught
/// up change by change ([`MAX_CATCH_UP`]).
pub fn too_far_behind(after: u64, head: u64) -> bool {
    head.saturating_sub(after) > MAX_CATCH_UP
}

/// The last bytes of a stream that reached its lifetime: a comment saying
/// where the client goes on from.
pub fn closing(after: u64, secs: u64) -> String {
    format!(": closing after {secs} s; reconnect with Last-Event-ID {after}\n\n")
}

/// What a client asked to follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Resume after this sequence number; `None`: from now.
    pub after: Option<u64>,
    /// Only changes that concern this status.
    pub status: Option<Status>,
}

impl Subscription {
    /// Whether `entry` goes to this client.
    pub fn wants(&self, entry: &Entry) -> bool {
        let Some(wanted) = self.status else {
            return true;
        };
        let c = &entry.change;
        c.status.is_none() || c.status == Some(wanted) || c.previous_status == Some(wanted)
    }
}

/// Checks a request for the change stream: GET or HEAD, `?status=` and
/// `?after=` valid, `Last-Event-ID` a sequence number. The error is the
/// response to send (once [`Response::finish`]ed).
pub fn subscribe(req: &Request) -> Result<Subscription, Response> {
    if req.method != "GET" && req.method != "HEAD" {
        let message = format!("{} is not allowed here; use GET, HEAD", req.method);
        return Err(
            error_body(405, "method_not_allowed", &message).with_header("allow", "GET, HEAD")
        );
    }
    let invalid = |message: String| error_body(400, "invalid_request", &message);
    let mut sub = Subscription::default();
    for (name, value) in form_urlencoded::parse(req.query.as_bytes()) {
        if value.is_empty() {
            continue;
        }
        match &*name {
            "status" => {
                sub.status = Some(
                    value
                        .parse::<Status>()
                        .map_err(|e| invalid(e.to_string()))?,
                )
            }
            "after" => {
                sub.after = Some(value.parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "after must be a change sequence number (got {value:?})"
                    ))
                })?)
            }
            _ => {}
        }
    }
    if let Some(id) = req
        .last_event_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        // The header wins over ?after=: it is where the client really is.
        sub.after = Some(id.parse::<u64>().map_err(|_| {
            invalid(format!(
                "Last-Event-ID must be a change sequence number (got {id:?})"
            ))
        })?);
    }
    Ok(sub)
}

/// The response head of an accepted stream (its body is the frames), to
/// [`Response::finish`] like any other.
pub fn response_head() -> Response {
    Response::new(200, content_type::EVENT_STREAM, cache::NEVER, Vec::new())
        // Proxies that buffer (nginx) would hold the events back.
        .with_header("x-accel-buffering", "no")
}

/// The first bytes of a stream: the reconnection delay, and a comment
/// naming where it starts.
pub fn opening(after: u64) -> String {
    format!("retry: {RETRY_MILLIS}\n: spin-tasks changes after {after}\n\n")
}

/// What a frame tells whoever opens the stream (it is public): the change
/// without the producer's correlation id, which is the operators' to
/// follow through the logs.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PublicChange<'a> {
    seq: u64,
    kind: ChangeKind,
    id: &'a str,
    version: Option<u64>,
    status: Option<Status>,
    previous_status: Option<Status>,
    at: &'a Timestamp,
}

/// One change.
pub fn frame(entry: &Entry) -> String {
    let c = &entry.change;
    let data = api::to_json(&PublicChange {
        seq: entry.seq,
        kind: c.kind,
        id: &c.id,
        version: c.version,
        status: c.status,
        previous_status: c.previous_status,
        at: &c.at,
    });
    let data = String::from_utf8_lossy(&data);
    let mut out = format!("id: {}\nevent: {}\n", entry.seq, entry.change.kind.as_str());
    // JSON from serde has no raw newlines, but a data field must never
    // carry one: each line gets its own `data:` (clients join them with \n).
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// A heartbeat comment.
pub fn heartbeat() -> &'static str {
    ": heartbeat\n\n"
}

/// Tells the client it missed changes the feed no longer has; `head` is
/// where it goes on from.
pub fn reset(head: u64) -> String {
    format!(
        "id: {head}\nevent: reset\ndata: {{\"reason\":\"missed changes are no longer kept; reload\",\"head\":{head}}}\n\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use tasks_feed::Change;

    fn entry(seq: u64, status: Option<Status>, previous: Option<Status>) -> Entry {
        Entry {
            seq,
            change: Change {
                kind: if status.is_some() {
                    ChangeKind::Updated
                } else {
                    ChangeKind::Deleted
                },
                id: "t-1".into(),
                version: status.map(|_| 2),
                status,
                previous_status: previous,
                at: Timestamp(1_795_327_314_123),
                correlation_id: "c-1".into(),
            },
        }
    }

    fn req(query: &str, last: Option<&str>, method: &str) -> Request {
        Request {
            method: method.into(),
            path: "/api/events".into(),
            query: query.into(),
            last_event_id: last.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn frames_carry_id_event_and_json_data() {
        let f = frame(&entry(42, Some(Status::Completed), Some(Status::Pending)));
        assert!(
            f.starts_with("id: 42\nevent: updated\ndata: {\"seq\":42,"),
            "{f}"
        );
        assert!(f.ends_with("}\n\n"), "{f}");
        assert_eq!(
            f.matches('\n').count(),
            4,
            "one data line, then a blank line"
        );
        let data = f.lines().nth(2).and_then(|l| l.strip_prefix("data: "));
        let v: serde_json::Value = data
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        assert_eq!(v["id"], "t-1", "{f}");
        assert!(
            v.get("correlationId").is_none() && !f.contains("c-1"),
            "a public frame carries no correlation id: {f}"
        );
        assert_eq!(heartbeat(), ": heartbeat\n\n");
        assert!(opening(7).starts_with("retry: 2000\n"));
        let r = reset(99);
        assert!(r.starts_with("id: 99\nevent: reset\ndata: {"), "{r}");
        let data = r.lines().nth(2).and_then(|l| l.strip_prefix("data: "));
        let v: Option<serde_json::Value> = data.and_then(|d| serde_json::from_str(d).ok());
        assert_eq!(v.map(|v| v["head"].clone()), Some(99.into()), "{r}");
    }

    #[test]
    fn streams_have_a_lifetime_and_a_far_behind_client_is_reset_not_replayed() {
        assert_eq!(stream_secs(None), DEFAULT_STREAM_SECS);
        assert_eq!(stream_secs(Some(" 4 ")), 4);
        for bad in ["0", "-1", "x", "86401", ""] {
            assert_eq!(stream_secs(Some(bad)), DEFAULT_STREAM_SECS, "{bad:?}");
        }
        assert!(!too_far_behind(10, 10));
        assert!(!too_far_behind(0, MAX_CATCH_UP));
        assert!(too_far_behind(0, MAX_CATCH_UP + 1));
        assert!(too_far_behind(5, 10_000));
        assert!(!too_far_behind(20, 10), "ahead of the head is not behind");
        let c = closing(42, 4);
        assert!(
            c.starts_with(": ") && c.ends_with("\n\n") && c.contains("42"),
            "{c}"
        );
    }

    #[test]
    fn subscriptions_resume_from_the_header_or_the_query() {
        assert_eq!(
            subscribe(&req("", None, "GET")).ok(),
            Some(Subscription::default())
        );
        let s = subscribe(&req("after=5&status=completed", Some(" 9 "), "GET")).ok();
        assert_eq!(
            s.map(|s| (s.after, s.status)),
            Some((Some(9), Some(Status::Completed))),
            "the header wins"
        );
        assert_eq!(
            subscribe(&req("after=5", None, "GET"))
                .ok()
                .map(|s| s.after),
            Some(Some(5))
        );
        for (query, last, method, status) in [
            ("", Some("x"), "GET", 400),
            ("after=-1", None, "GET", 400),
            ("status=nope", None, "GET", 400),
            ("", None, "POST", 405),
        ] {
            let resp = subscribe(&req(query, last, method)).err();
            assert_eq!(
                resp.as_ref().map(|r| r.status),
                Some(status),
                "{query} {last:?} {method}"
            );
            assert!(resp.is_some_and(|r| String::from_utf8_lossy(&r.body).contains("\"code\"")));
        }
    }

    #[test]
    fn a_status_filter_keeps_what_concerns_it() {
        let sub = Subscription {
            after: None,
            status: Some(Status::Pending),
        };
        assert!(sub.wants(&entry(1, Some(Status::Pending), None)));
        assert!(
            sub.wants(&entry(2, Some(Status::Completed), Some(Status::Pending))),
            "left the filter"
        );
        assert!(!sub.wants(&entry(3, Some(Status::Completed), Some(Status::InProgress))));
        assert!(sub.wants(&entry(4, None, None)), "deletes always");
        assert!(Subscription::default().wants(&entry(5, Some(Status::Completed), None)));
    }

    #[test]
    fn the_stream_head_is_an_event_stream_never_stored() {
        let mut head = response_head();
        head.finish(&req("", None, "GET"), "c-9");
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert_eq!(head.header("cache-control"), Some("no-store"));
        assert_eq!(head.header("x-correlation-id"), Some("c-9"));
        assert!(head.header("content-security-policy").is_some());
    }
}
