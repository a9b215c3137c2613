//! The spin-tasks web, independent of Spin: the web component turns a Spin
//! request into a [`Request`], calls [`handle`] with a [`TaskSource`] backed by
//! the `tasks:store/reader` import, and turns the [`Response`] back.

mod admin;
mod api;
mod assets;
pub mod correlation;
mod http;
mod pages;
mod query;
pub mod routes;

pub use admin::Admin;
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
