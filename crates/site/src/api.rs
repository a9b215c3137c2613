//! The JSON routes.

use serde::Serialize;
use tasks_domain::{ReadError, Task};

use crate::http::{Request, cache, content_type};
use crate::{APP_VERSION, Response, TaskSource, query};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    tasks: &'a [Task],
    next_cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct HealthBody<'a> {
    status: &'a str,
    store: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Every body here is plain strings and numbers: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `{"error":{"code":…,"message":…}}` with the given status.
pub(crate) fn error_body(status: u16, code: &str, message: &str) -> Response {
    let body = to_json(&ErrorBody {
        error: ErrorDetail { code, message },
    });
    Response::new(status, content_type::JSON, cache::NEVER, body)
}

/// The HTTP status for a read error.
pub(crate) fn status_of(e: &ReadError) -> u16 {
    match e {
        ReadError::NotFound(_) => 404,
        ReadError::Invalid(_) => 400,
        ReadError::Unavailable(_) => 503,
        ReadError::Other(_) => 500,
    }
}

/// What a client may be told about a read error. Internal details stay in
/// the logs, found by the correlation id.
pub(crate) fn public_message(e: &ReadError) -> String {
    match e {
        ReadError::Other(_) => {
            "internal error; quote the X-Correlation-Id when reporting it".into()
        }
        ReadError::Unavailable(_) => "the task store is unavailable; try again shortly".into(),
        other => other.to_string(),
    }
}

pub(crate) fn read_error(e: &ReadError) -> Response {
    let resp = error_body(status_of(e), e.code(), &public_message(e));
    if matches!(e, ReadError::Unavailable(_)) {
        resp.with_header("retry-after", "5")
    } else {
        resp
    }
}

pub(crate) fn list(req: &Request, cid: &str, source: &dyn TaskSource) -> Response {
    let page = match query::list_request(&req.query).and_then(|lr| source.list_tasks(&lr, cid)) {
        Ok(p) => p,
        Err(e) => return read_error(&e),
    };
    let body = to_json(&ListBody {
        tasks: &page.tasks,
        next_cursor: page.next_cursor.as_deref(),
    });
    Response::cacheable(req, content_type::JSON, body)
}

pub(crate) fn task(req: &Request, id: &str, cid: &str, source: &dyn TaskSource) -> Response {
    match source.get_task(id, cid) {
        Ok(t) => Response::cacheable(req, content_type::JSON, t.to_json()),
        Err(e) => read_error(&e),
    }
}

pub(crate) fn health(cid: &str, source: &dyn TaskSource) -> Response {
    let (status, body) = match source.probe(cid) {
        Ok(()) => (
            200,
            HealthBody {
                status: "ok",
                store: "reachable",
                version: APP_VERSION,
                error: None,
            },
        ),
        Err(e) => (
            503,
            HealthBody {
                status: "unavailable",
                store: "unreachable",
                version: APP_VERSION,
                error: Some(public_message(&e)),
            },
        ),
    };
    Response::new(status, content_type::JSON, cache::NEVER, to_json(&body))
}
