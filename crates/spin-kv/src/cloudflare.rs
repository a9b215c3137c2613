//! Cloudflare Workers KV from inside a component: [`tasks_cf_kv::Http`] over
//! Spin's outbound HTTP, and the storage logic's [`Remote`] over the client.

use spin_sdk::http::{Method as SpinMethod, Request, Response};
use tasks_cf_kv::{Client, Config, Error, Http, HttpRequest, HttpResponse, Method, TransportError};
use tasks_cloud::Remote;
use tasks_kv::StoreError;

/// Outbound HTTP through Spin (the host must allow the API's origin in
/// `allowed_outbound_hosts`).
pub struct SpinHttp;

impl Http for SpinHttp {
    fn send(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let method = match req.method {
            Method::Get => SpinMethod::Get,
            Method::Put => SpinMethod::Put,
            Method::Post => SpinMethod::Post,
            Method::Delete => SpinMethod::Delete,
        };
        let mut builder = Request::builder();
        builder.method(method).uri(req.url);
        for (name, value) in req.headers {
            builder.header(name, value);
        }
        let request = builder.body(req.body).build();
        crate::write_held();
        let response: Response = spin_sdk::http::run(spin_sdk::http::send(request))
            .map_err(|e| TransportError(e.to_string()))?;
        Ok(HttpResponse {
            status: *response.status(),
            headers: response
                .headers()
                .map(|(name, value)| {
                    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.to_owned(), text)
                })
                .collect(),
            body: response.into_body(),
        })
    }
}

/// The `tasks` namespace on Cloudflare.
pub struct CfRemote {
    client: Client<SpinHttp>,
}

impl CfRemote {
    /// A client for `config`.
    pub fn new(config: Config) -> Result<Self, StoreError> {
        Client::new(SpinHttp, config)
            .map(|client| CfRemote { client })
            .map_err(store_error)
    }
}

/// Transient answers (429, 5xx, transport) are `Unavailable`; the rest
/// (auth, limits, API errors) are `Other`, with Cloudflare's code and, for
/// auth errors, the variable to fix.
fn store_error(e: Error) -> StoreError {
    if e.is_transient() {
        StoreError::Unavailable(format!("Cloudflare KV: {e}"))
    } else {
        StoreError::Other(format!("Cloudflare KV: {e}"))
    }
}

impl Remote for CfRemote {
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.client.get_many(keys).map_err(store_error)
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.client
            .list_all(prefix)
            .map(|entries| entries.into_iter().map(|e| e.name).collect())
            .map_err(store_error)
    }

    fn write_many(
        &self,
        puts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    ) -> Result<(), StoreError> {
        if !puts.is_empty() {
            self.client.bulk_write(&puts).map_err(store_error)?;
        }
        if !deletes.is_empty() {
            self.client.bulk_delete(&deletes).map_err(store_error)?;
        }
        Ok(())
    }
}
