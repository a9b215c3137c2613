//! Dispatch: which handler answers a method and path (the paths are
//! named in [`crate::paths`]).

use percent_encoding::percent_decode_str;
use tasks_domain::ReadError;

use crate::http::Request;
use crate::paths::{
    API_CACHE_PURGE, API_DEAD_LETTER, API_DEAD_LETTERS, API_EVENTS, API_TASK, API_TASKS,
    CARD_FRAGMENT, HEALTH, HOME, METRICS, REPLAY_SUFFIX, ROW_FRAGMENT, TASK_PAGE,
};
use crate::{Admin, Response, TaskSource, admin, api, assets, events, pages};

enum Route<'a> {
    Home,
    TaskPage(&'a str),
    ApiList,
    ApiTask(&'a str),
    Health,
    DeadLetters,
    Replay(&'a str),
    Purge,
    Metrics,
    Events,
    Row(&'a str),
    Card(&'a str),
    Asset(&'static assets::Asset),
}

impl Route<'_> {
    /// The methods the route answers.
    fn allow(&self) -> &'static str {
        match self {
            Route::Replay(_) | Route::Purge => "POST",
            _ => "GET, HEAD",
        }
    }
}

/// The id after `prefix` in `path`: one non-empty segment.
fn id_after<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        HOME => Some(Route::Home),
        API_TASKS => Some(Route::ApiList),
        HEALTH => Some(Route::Health),
        API_DEAD_LETTERS => Some(Route::DeadLetters),
        API_CACHE_PURGE => Some(Route::Purge),
        METRICS => Some(Route::Metrics),
        API_EVENTS => Some(Route::Events),
        p if id_after(p, ROW_FRAGMENT).is_some() => id_after(p, ROW_FRAGMENT).map(Route::Row),
        p if id_after(p, CARD_FRAGMENT).is_some() => id_after(p, CARD_FRAGMENT).map(Route::Card),
        p => {
            if let Some(id) = p
                .strip_prefix(API_DEAD_LETTER)
                .and_then(|rest| rest.strip_suffix(REPLAY_SUFFIX))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(Route::Replay(id))
            } else if let Some(id) = p
                .strip_prefix(API_TASK)
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(Route::ApiTask(id))
            } else if let Some(id) = p
                .strip_prefix(TASK_PAGE)
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(Route::TaskPage(id))
            } else {
                assets::find(p).map(Route::Asset)
            }
        }
    }
}

fn is_api(path: &str) -> bool {
    path == API_TASKS || path.starts_with("/api/") || path == HEALTH || path == METRICS
}

/// The route's template for `path` (`/tasks/:id`, …), `other` when none
/// matches: the `route` label of the request counter, bounded whatever
/// paths clients send.
pub fn name(path: &str) -> &'static str {
    match route(path) {
        None => "other",
        Some(r) => match r {
            Route::Home => HOME,
            Route::TaskPage(_) => "/tasks/:id",
            Route::ApiList => API_TASKS,
            Route::ApiTask(_) => "/api/tasks/:id",
            Route::Health => HEALTH,
            Route::DeadLetters => API_DEAD_LETTERS,
            Route::Replay(_) => "/api/dead-letters/:id/replay",
            Route::Purge => API_CACHE_PURGE,
            Route::Metrics => METRICS,
            Route::Events => API_EVENTS,
            Route::Row(_) => "/fragments/row/:id",
            Route::Card(_) => "/fragments/task/:id",
            Route::Asset(_) => "/static/*",
        },
    }
}

/// The most a request body may hold: a purge naming
/// [`tasks_domain::validate::MAX_PURGE_IDS`] of the longest ids fits.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How much of a request's body is read: up to [`MAX_BODY_BYTES`] for the
/// routes that take one (`POST` to the signed admin routes), none of it for
/// every other request (answered without reading it).
pub fn body_limit(method: &str, path: &str) -> Option<usize> {
    match route(path) {
        Some(r) if method == "POST" && r.allow() == "POST" => Some(MAX_BODY_BYTES),
        _ => None,
    }
}

/// The answer to a body over [`body_limit`].
pub fn body_too_large() -> Response {
    api::error_body(
        413,
        "payload_too_large",
        &format!("the request body is over {MAX_BODY_BYTES} bytes"),
    )
}

/// The answer to a body that could not be read.
pub fn body_unreadable() -> Response {
    api::error_body(400, "bad_request", "could not read the request body")
}

/// Percent-decodes a path segment and checks it is an id
/// ([`tasks_domain::validate::validate_id`]) before anything uses or logs
/// it: a decoded line break or escape would otherwise reach the logs.
fn decode_id(raw: &str) -> Result<String, ReadError> {
    let id = percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ReadError::Invalid("id is not valid UTF-8 once percent-decoded".into()))?;
    tasks_domain::validate::validate_id(&id).map_err(|e| ReadError::Invalid(e.to_string()))?;
    Ok(id)
}

pub(crate) fn dispatch(
    req: &Request,
    cid: &str,
    source: &dyn TaskSource,
    admin: &dyn Admin,
) -> Response {
    let api = is_api(&req.path);
    let Some(route) = route(&req.path) else {
        let message = format!("nothing here: {}", req.path);
        return if api {
            api::error_body(404, "not_found", &message)
        } else {
            pages::error_page(404, "Page not found", &message, cid)
        };
    };
    let allow = route.allow();
    if !allow.split(", ").any(|m| m == req.method) {
        let message = format!("{} is not allowed here; use {allow}", req.method);
        let resp = if api {
            api::error_body(405, "method_not_allowed", &message)
        } else {
            pages::error_page(405, "Method not allowed", &message, cid)
        };
        return resp.with_header("allow", allow);
    }
    match route {
        Route::Home => pages::list(req, cid, source),
        Route::TaskPage(raw) => match decode_id(raw) {
            Ok(id) => pages::task(&id, cid, source),
            Err(e) => pages::read_error(&e, cid),
        },
        Route::ApiList => api::list(req, cid, source),
        Route::ApiTask(raw) => match decode_id(raw) {
            Ok(id) => api::task(req, &id, cid, source),
            Err(e) => api::read_error(&e),
        },
        Route::Health => api::health(cid, source),
        Route::DeadLetters => admin::list(req, admin),
        Route::Replay(raw) => match decode_id(raw) {
            Ok(id) => admin::replay(req, &id, cid, admin),
            Err(e) => api::read_error(&e),
        },
        Route::Purge => admin::purge(req, cid, admin),
        Route::Metrics => admin::metrics(req, admin),
        // The web component streams this route itself; here (a host that
        // cannot stream) the stream opens and ends at once.
        Route::Events => match events::subscribe(req) {
            Ok(sub) => {
                let mut head = events::response_head();
                head.body = events::opening(sub.after.unwrap_or(0)).into_bytes();
                head
            }
            Err(resp) => resp,
        },
        Route::Row(raw) => match decode_id(raw) {
            Ok(id) => pages::row_fragment(&id, cid, source),
            Err(e) => pages::fragment_error(&e),
        },
        Route::Card(raw) => match decode_id(raw) {
            Ok(id) => pages::card_fragment(&id, cid, source),
            Err(e) => pages::fragment_error(&e),
        },
        Route::Asset(asset) => assets::serve(asset),
    }
}
