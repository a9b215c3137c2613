//! A Cloudflare Workers KV REST API v4 client over a small synchronous
//! [`Http`] trait, so the same code runs in a Spin component (outbound HTTP)
//! and natively (feature `native`, over `ureq`).
//!
//! ```no_run
//! # #[cfg(feature = "native")]
//! # fn demo() -> Result<(), tasks_cf_kv::Error> {
//! use tasks_cf_kv::{Client, Config, native::UreqHttp};
//! let config = Config::cloudflare("0123abcd", "89efab01", "token")?;
//! let kv = Client::new(UreqHttp::default(), config)?;
//! kv.put("task:t-1", b"{}")?;
//! assert_eq!(kv.get("task:t-1")?, Some(b"{}".to_vec()));
//! # Ok(()) }
//! ```
//!
//! The base URL is everything before `/storage/kv/namespaces/…`, so the
//! client also talks to miniflare's Local Explorer
//! (`http://127.0.0.1:<port>/cdn-cgi/local/explorer/api`) or to a proxy.
//! Transient failures come back as [`Error::Transient`] with the server's
//! `Retry-After`; the client waits and retries only when given a [`Sleeper`].

mod bulk;
mod client;
mod envelope;
mod error;
mod http;
mod limits;
mod retry;

#[cfg(feature = "native")]
pub mod native;

#[cfg(test)]
mod tests;

pub use client::{CLOUDFLARE_API, Client, Config, KeyEntry, KeyPage, Options};
pub use envelope::{Envelope, Message, ResultInfo};
pub use error::{Error, classify, code, hint, parse_retry_after};
pub use http::{Http, HttpRequest, HttpResponse, Method, TransportError};
pub use limits::{
    LIST_LIMIT_RANGE, MAX_BULK_DELETE_KEYS, MAX_BULK_GET_KEYS, MAX_BULK_WRITE_BYTES,
    MAX_BULK_WRITE_PAIRS, MAX_KEY_BYTES, MAX_VALUE_BYTES, check_key, check_value, encode_component,
};
pub use retry::{RetryPolicy, Sleeper, ThreadSleeper};
