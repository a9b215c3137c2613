//! The HTML routes, rendered with askama (HTML-escaped by default).

use askama::Template;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tasks_domain::{ReadError, Status, Task};

use crate::api::{public_message, status_of};
use crate::http::{Request, cache, content_type};
use crate::paths::{API_TASK, HOME, TASK_PAGE};
use crate::{APP_VERSION, CID_SLOT, PageLookup, Response, TaskSource, query};

struct FilterLink {
    label: &'static str,
    href: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    cid: String,
    version: &'static str,
    heading: String,
    filters: Vec<FilterLink>,
    filtered: bool,
    filter_label: &'static str,
    paged: bool,
    tasks: Vec<Task>,
    first_href: Option<String>,
    next_href: Option<String>,
    /// The filter's status (`""`: all), for the live script.
    filter_status: &'static str,
    /// The page size, for the live script.
    limit: usize,
}

/// One list row, alone (`/fragments/row/:id`): what live pages put in place.
#[derive(Template)]
#[template(path = "row.html")]
struct RowFragment {
    t: Task,
}

/// One task's card, alone (`/fragments/task/:id`).
#[derive(Template)]
#[template(path = "card.html")]
struct CardFragment {
    card: Card,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    cid: String,
    version: &'static str,
    card: Card,
}

/// What card.html shows of a task (the task page and its fragment).
struct Card {
    id: String,
    title: String,
    description: Option<String>,
    status_class: &'static str,
    status_label: &'static str,
    created_iso: String,
    created_display: String,
    updated_iso: String,
    updated_display: String,
    task_version: u64,
    json_href: String,
}

impl Card {
    fn of(t: Task) -> Self {
        Card {
            json_href: task_href(API_TASK, &t.id),
            status_class: t.status.as_str(),
            status_label: t.status.label(),
            created_iso: t.created_at.to_rfc3339(),
            created_display: t.created_at.to_display(),
            updated_iso: t.updated_at.to_rfc3339(),
            updated_display: t.updated_at.to_display(),
            task_version: t.version,
            id: t.id,
            title: t.title,
            description: t.description,
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    cid: &'a str,
    version: &'static str,
    status: u16,
    heading: &'a str,
    message: &'a str,
}

/// Everything but the characters valid ids are made of is encoded, so a link
/// is always one path segment and valid ids stay readable.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b':');

fn task_href(prefix: &str, id: &str) -> String {
    format!("{prefix}{}", segment(id))
}

/// `id` as one URL path segment, written without allocating.
fn segment(id: &str) -> impl std::fmt::Display + '_ {
    utf8_percent_encode(id, SEGMENT)
}

/// The link to a task's page, written without allocating.
fn page_href(id: &str) -> impl std::fmt::Display + '_ {
    struct Href<'a>(&'a str);
    impl std::fmt::Display for Href<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{TASK_PAGE}{}", segment(self.0))
        }
    }
    Href(id)
}

impl ListPage {
    /// The link to a task's page (used by row.html).
    fn href<'a>(&self, id: &'a str) -> impl std::fmt::Display + 'a {
        page_href(id)
    }
}

impl RowFragment {
    /// The link to a task's page (used by row.html).
    fn href<'a>(&self, id: &'a str) -> impl std::fmt::Display + 'a {
        page_href(id)
    }
}

fn html(status: u16, cache_control: &str, rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(body) => Response::new(status, content_type::HTML, cache_control, body.into_bytes()),
        Err(e) => Response::new(
            500,
            "text/plain; charset=utf-8",
            cache::NEVER,
            format!("template error: {e}").into_bytes(),
        ),
    }
}

/// An error page in the site's layout.
pub(crate) fn error_page(status: u16, heading: &str, message: &str, cid: &str) -> Response {
    let page = ErrorPage {
        cid,
        version: APP_VERSION,
        status,
        heading,
        message,
    };
    html(status, cache::NEVER, page.render())
}

pub(crate) fn read_error(e: &ReadError, cid: &str) -> Response {
    let heading = match e {
        ReadError::NotFound(_) => "Task not found",
        ReadError::Invalid(_) => "Bad request",
        ReadError::Unavailable(_) => "Store unavailable",
        ReadError::Other(_) => "Something went wrong",
    };
    error_page(status_of(e), heading, &public_message(e), cid)
}

pub(crate) fn list(req: &Request, cid: &str, source: &dyn TaskSource) -> Response {
    let lr = match query::list_request(&req.query) {
        Ok(lr) => lr,
        Err(e) => return read_error(&e, cid),
    };
    // First pages (no cursor, a valid limit) are kept rendered when the
    // source can: a hit costs no read of the tasks.
    let cache_key = (lr.cursor.is_none() && lr.resolved_limit().is_ok()).then(|| {
        format!(
            "{}:{}",
            lr.status.map_or("all", Status::as_str),
            lr.resolved_limit().unwrap_or_default()
        )
    });
    let mut generation = None;
    if let Some(key) = &cache_key {
        match source.cached_page(key) {
            PageLookup::Hit(body) => {
                return Response::new(
                    200,
                    content_type::HTML,
                    cache::REVALIDATE,
                    fill_cid(body, cid),
                );
            }
            PageLookup::Miss(g) => generation = Some(g),
            PageLookup::Off => {}
        }
    }
    let page = match source.list_tasks(&lr, cid) {
        Ok(p) => p,
        Err(e) => return read_error(&e, cid),
    };
    let status = lr.status;
    let mut filters = vec![FilterLink {
        label: "All",
        href: HOME.into(),
        active: status.is_none(),
    }];
    filters.extend(Status::ALL.iter().map(|&s| FilterLink {
        label: s.label(),
        href: query::list_link(HOME, Some(s), None, lr.limit),
        active: status == Some(s),
    }));
    let paged = lr.cursor.is_some();
    let heading = status.map_or_else(
        || "All tasks".to_owned(),
        |s| format!("{} tasks", s.label()),
    );
    let out = ListPage {
        cid: CID_SLOT.to_owned(),
        version: APP_VERSION,
        heading,
        filters,
        filtered: status.is_some(),
        filter_label: status.map_or("", |s| s.label()),
        paged,
        tasks: page.tasks,
        first_href: paged.then(|| query::list_link(HOME, status, None, lr.limit)),
        next_href: page
            .next_cursor
            .as_deref()
            .map(|c| query::list_link(HOME, status, Some(c), lr.limit)),
        filter_status: status.map_or("", Status::as_str),
        limit: lr
            .resolved_limit()
            .unwrap_or(tasks_domain::DEFAULT_LIMIT as usize),
    };
    let body = match out.render() {
        Ok(body) => body.into_bytes(),
        Err(e) => return html(200, cache::REVALIDATE, Err(e)),
    };
    if let (Some(key), Some(generation)) = (&cache_key, &generation) {
        source.store_page(key, generation, &body);
    }
    Response::new(
        200,
        content_type::HTML,
        cache::REVALIDATE,
        fill_cid(body, cid),
    )
}

/// Puts `cid` in place of the last [`CID_SLOT`] (the footer's): a task
/// title containing the slot text comes earlier and stays as it is.
fn fill_cid(mut body: Vec<u8>, cid: &str) -> Vec<u8> {
    let slot = CID_SLOT.as_bytes();
    if let Some(at) = body.windows(slot.len()).rposition(|w| w == slot) {
        body.splice(at..at + slot.len(), cid.bytes());
    }
    body
}

pub(crate) fn task(id: &str, cid: &str, source: &dyn TaskSource) -> Response {
    let t = match source.get_task(id, cid) {
        Ok(t) => t,
        Err(e) => return read_error(&e, cid),
    };
    let page = TaskPage {
        cid: cid.to_owned(),
        version: APP_VERSION,
        card: Card::of(t),
    };
    html(200, cache::REVALIDATE, page.render())
}

/// A fragment's answer to a read error: the status and a plain-text
/// reason (the live script removes a row or card that is gone).
pub(crate) fn fragment_error(e: &ReadError) -> Response {
    Response::new(
        status_of(e),
        content_type::TEXT,
        cache::NEVER,
        public_message(e).into_bytes(),
    )
}

/// `/fragments/row/:id`: the task's list row, as the list page renders it.
pub(crate) fn row_fragment(id: &str, cid: &str, source: &dyn TaskSource) -> Response {
    match source.get_task(id, cid) {
        Ok(t) => html(200, cache::NEVER, RowFragment { t }.render()),
        Err(e) => fragment_error(&e),
    }
}

/// `/fragments/task/:id`: the task's card, as its page renders it.
pub(crate) fn card_fragment(id: &str, cid: &str, source: &dyn TaskSource) -> Response {
    match source.get_task(id, cid) {
        Ok(t) => html(
            200,
            cache::NEVER,
            CardFragment { card: Card::of(t) }.render(),
        ),
        Err(e) => fragment_error(&e),
    }
}
