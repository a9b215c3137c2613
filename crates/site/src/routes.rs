//! Dispatch: which handler answers a method and path (the paths are
//! named in [`crate::paths`]).

use percent_encoding::percent_decode_str;
use tasks_domain::ReadError;

use crate::http::Request;
use crate::paths::{
    API_CACHE_PURGE, API_DEAD_LETTER, API_DEAD_LETTERS, API_TASK, API_TASKS, HEALTH, HOME,
    REPLAY_SUFFIX, TASK_PAGE,
};
use crate::{Admin, Response, TaskSource, admin, api, assets, pages};

enum Route<'a> {
    Home,
    TaskPage(&'a str),
    ApiList,
    ApiTask(&'a str),
    Health,
    DeadLetters,
    Replay(&'a str),
    Purge,
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

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        HOME => Some(Route::Home),
        API_TASKS => Some(Route::ApiList),
        HEALTH => Some(Route::Health),
        API_DEAD_LETTERS => Some(Route::DeadLetters),
        API_CACHE_PURGE => Some(Route::Purge),
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
    path == API_TASKS || path.starts_with("/api/") || path == HEALTH
}

/// Percent-decodes a path segment; ids are checked by the reader.
fn decode_id(raw: &str) -> Result<String, ReadError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ReadError::Invalid("id is not valid UTF-8 once percent-decoded".into()))
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
        Route::Asset(asset) => assets::serve(asset),
    }
}
