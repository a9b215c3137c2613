//! Route paths: the one place each URL of the site is named.

/// The task list page.
pub const HOME: &str = "/";
/// A task's page is this prefix plus the id.
pub const TASK_PAGE: &str = "/tasks/";
/// The JSON listing.
pub const API_TASKS: &str = "/api/tasks";
/// One task as JSON is this prefix plus the id.
pub const API_TASK: &str = "/api/tasks/";
/// Dead letters as JSON.
pub const API_DEAD_LETTERS: &str = "/api/dead-letters";
/// A dead letter's replay is this prefix, the id, then [`REPLAY_SUFFIX`].
pub const API_DEAD_LETTER: &str = "/api/dead-letters/";
/// See [`API_DEAD_LETTER`].
pub const REPLAY_SUFFIX: &str = "/replay";
/// Signed cache purge.
pub const API_CACHE_PURGE: &str = "/api/cache/purge";
/// Health and version.
pub const HEALTH: &str = "/health";
/// The stylesheet.
pub const STYLESHEET: &str = "/static/app.css";
/// The icon.
pub const FAVICON: &str = "/static/favicon.svg";
/// The change stream (Server-Sent Events).
pub const API_EVENTS: &str = "/api/events";
/// Prometheus text exposition (admin token).
pub const METRICS: &str = "/metrics";
/// The OpenAPI document of every route.
pub const OPENAPI: &str = "/api/openapi.json";
/// One list row, rendered: this prefix plus the id (live pages).
pub const ROW_FRAGMENT: &str = "/fragments/row/";
/// One task's detail card, rendered: this prefix plus the id (live pages).
pub const CARD_FRAGMENT: &str = "/fragments/task/";
/// The live pages' script.
pub const LIVE_SCRIPT: &str = "/static/live.js";
