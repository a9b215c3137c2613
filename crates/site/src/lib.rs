//! The spin-tasks web, independent of Spin: the web component turns a Spin
//! request into a [`Request`], calls [`handle`] with a [`TaskSource`] backed by
//! the `tasks:store/reader` import, and turns the [`Response`] back.

mod admin;
mod api;
mod assets;
pub mod correlation;
pub mod events;
mod http;
pub mod memo;
mod pages;
pub mod paths;
mod query;
pub mod routes;

pub use admin::{Admin, PurgeScope, take_signature_in};
pub use http::{Request, Response};

use tasks_domain::{ListRequest, Page, ReadError, Task};

/// The version reported by `/health`.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where tasks come from. Every call carries the request's correlation id.
pub trait TaskSource {
    /// One task.
    fn get_task(&self, id: &str, correlation_id: &str) -> Result<Task, ReadError>;
    /// One page of tasks.
    fn list_tasks(&self, req: &ListRequest, correlation_id: &str) -> Result<Page, ReadError>;
    /// Whether the store answers.
    fn probe(&self, correlation_id: &str) -> Result<(), ReadError>;

    /// The cached rendering of the first list page named `key`, if the
    /// source keeps one (default: no cache). A `Miss` carries the cache
    /// generation taken *before* the tasks are read, to store the rendering
    /// under with [`TaskSource::store_page`].
    fn cached_page(&self, _key: &str) -> PageLookup {
        PageLookup::Off
    }

    /// Keeps a rendering (with [`CID_SLOT`] where the request's correlation
    /// id goes) for the first list page `key`, built under `generation`.
    fn store_page(&self, _key: &str, _generation: &str, _body: &[u8]) {}
}

/// What [`TaskSource::cached_page`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageLookup {
    /// The source keeps no rendered pages.
    Off,
    /// The cached rendering.
    Hit(Vec<u8>),
    /// Not cached (or stale); render and store under this generation.
    Miss(String),
}

/// Stands for the correlation id in a cached rendering; the last occurrence
/// (the footer, after every task row) is replaced per request.
pub const CID_SLOT: &str = "cid-slot-6e1f0c3a";

/// A 503 saying `what` is unavailable (for a host's own routes).
pub fn unavailable(what: &str) -> Response {
    api::read_error(&ReadError::Unavailable(format!("{what} is unavailable")))
}

/// Serves one request. Every response carries the correlation id and the
/// security headers.
pub fn handle(
    req: &Request,
    correlation_id: &str,
    source: &dyn TaskSource,
    admin: &dyn Admin,
) -> Response {
    let mut resp = routes::dispatch(req, correlation_id, source, admin);
    resp.finish(req, correlation_id);
    resp
}
