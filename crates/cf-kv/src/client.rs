//! The client: configuration, the request loop, and the single-key and list
//! operations. Bulk operations are in `bulk.rs`.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::envelope::Envelope;
use crate::error::{Error, classify, code, hint};
use crate::http::{Http, HttpRequest, HttpResponse, Method};
use crate::limits::{self, check_key, check_value, encode_component};
use crate::retry::{RetryPolicy, Sleeper};

/// The production API root; a namespace's base adds `/accounts/<account_id>`.
pub const CLOUDFLARE_API: &str = "https://api.cloudflare.com/client/v4";

/// Where the namespace is and how to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Everything before `/storage/kv/namespaces/…`: production
    /// `https://api.cloudflare.com/client/v4/accounts/<account_id>`, miniflare
    /// `http://127.0.0.1:<port>/cdn-cgi/local/explorer/api` (no account part).
    pub base: String,
    /// The namespace id.
    pub namespace_id: String,
    /// The API token, sent as `Authorization: Bearer`; empty sends none
    /// (miniflare has no auth).
    pub api_token: String,
}

impl Config {
    /// A config for any base (production, miniflare, a proxy in front).
    pub fn new(
        base: impl Into<String>,
        namespace_id: impl Into<String>,
        api_token: impl Into<String>,
    ) -> Self {
        Config {
            base: base.into().trim_end_matches('/').to_owned(),
            namespace_id: namespace_id.into(),
            api_token: api_token.into(),
        }
    }

    /// A config for Cloudflare's production API.
    pub fn cloudflare(
        account_id: &str,
        namespace_id: impl Into<String>,
        api_token: impl Into<String>,
    ) -> Result<Self, Error> {
        if account_id.is_empty() || !account_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Invalid(format!(
                "account id {account_id:?} is not an identifier: check the variable {:?}",
                hint::ACCOUNT_ID
            )));
        }
        Ok(Config::new(
            format!("{CLOUDFLARE_API}/accounts/{account_id}"),
            namespace_id,
            api_token,
        ))
    }
}

/// Hand-written so the token never reaches a log.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("base", &self.base)
            .field("namespace_id", &self.namespace_id)
            .field(
                "api_token",
                &if self.api_token.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .finish()
    }
}

/// Batch sizes and retry rounds. Defaults are Cloudflare's limits; smaller
/// values suit slow emulators and tests. Values above the limits are clamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Most pairs per bulk write request.
    pub bulk_write_pairs: usize,
    /// Largest bulk write body, in bytes.
    pub bulk_write_bytes: usize,
    /// Most keys per bulk get request.
    pub bulk_get_keys: usize,
    /// Most keys per bulk delete request.
    pub bulk_delete_keys: usize,
    /// How many times keys reported in `unsuccessful_keys` are sent again.
    pub unsuccessful_rounds: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bulk_write_pairs: limits::MAX_BULK_WRITE_PAIRS,
            bulk_write_bytes: limits::MAX_BULK_WRITE_BYTES,
            bulk_get_keys: limits::MAX_BULK_GET_KEYS,
            bulk_delete_keys: limits::MAX_BULK_DELETE_KEYS,
            unsuccessful_rounds: 3,
        }
    }
}

impl Options {
    fn clamped(self) -> Self {
        Options {
            bulk_write_pairs: self.bulk_write_pairs.clamp(1, limits::MAX_BULK_WRITE_PAIRS),
            bulk_write_bytes: self.bulk_write_bytes.clamp(1, limits::MAX_BULK_WRITE_BYTES),
            bulk_get_keys: self.bulk_get_keys.clamp(1, limits::MAX_BULK_GET_KEYS),
            bulk_delete_keys: self.bulk_delete_keys.clamp(1, limits::MAX_BULK_DELETE_KEYS),
            unsuccessful_rounds: self.unsuccessful_rounds,
        }
    }
}

/// One key from a list call.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct KeyEntry {
    /// The key.
    pub name: String,
    /// Expiry, Unix seconds; absent for keys that never expire.
    #[serde(default)]
    pub expiration: Option<u64>,
    /// The key's metadata, when it has any.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// One page of a list call.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyPage {
    /// The keys, in byte order. May be empty while more pages remain.
    pub keys: Vec<KeyEntry>,
    /// The cursor for the next page; `None` on the last page.
    pub cursor: Option<String>,
}

/// A Workers KV REST v4 client for one namespace.
pub struct Client<H> {
    pub(crate) http: H,
    pub(crate) config: Config,
    pub(crate) options: Options,
    pub(crate) retry: Option<(RetryPolicy, Box<dyn Sleeper + Send + Sync>)>,
}

impl<H> fmt::Debug for Client<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .field("options", &self.options)
            .field("retry", &self.retry.as_ref().map(|(p, _)| p))
            .finish()
    }
}

impl<H: Http> Client<H> {
    /// A client over `http`; checks the config's shape, not the credentials.
    pub fn new(http: H, config: Config) -> Result<Self, Error> {
        let base_ok = (config.base.starts_with("https://") || config.base.starts_with("http://"))
            && !config.base.ends_with('/')
            && !config.base.contains(['?', '#']);
        if !base_ok {
            return Err(Error::Invalid(format!(
                "base {:?} must be an http(s) URL without a trailing '/', query or fragment",
                config.base
            )));
        }
        if config.namespace_id.is_empty() {
            return Err(Error::Invalid(format!(
                "empty namespace id: check the variable {:?}",
                hint::NAMESPACE_ID
            )));
        }
        Ok(Client {
            http,
            config,
            options: Options::default(),
            retry: None,
        })
    }

    /// Replaces the batch sizes and retry rounds (clamped to Cloudflare's limits).
    pub fn with_options(mut self, options: Options) -> Self {
        self.options = options.clamped();
        self
    }

    /// Retries transient failures per `policy`, waiting with `sleeper`.
    pub fn with_retry(
        mut self,
        policy: RetryPolicy,
        sleeper: impl Sleeper + Send + Sync + 'static,
    ) -> Self {
        self.retry = Some((policy, Box::new(sleeper)));
        self
    }

    /// The config in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The HTTP implementation in use.
    pub fn http(&self) -> &H {
        &self.http
    }

    /// Reads a value's raw bytes; `None` when the key does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        check_key(key)?;
        let resp = self.call(Method::Get, &self.value_path(key), None, Vec::new())?;
        if resp.status == 404
            && Envelope::<Value>::parse(&resp.body).and_then(|e| e.code())
                == Some(code::KEY_NOT_FOUND)
        {
            return Ok(None);
        }
        self.ok(resp).map(|r| Some(r.body))
    }

    /// Writes a value (raw bytes, no expiry, no metadata).
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        check_key(key)?;
        check_value(key, value.len())?;
        let resp = self.call(
            Method::Put,
            &self.value_path(key),
            Some("application/octet-stream"),
            value.to_vec(),
        )?;
        self.envelope::<Value>(resp).map(drop)
    }

    /// Deletes a key; deleting a missing key succeeds.
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        check_key(key)?;
        let resp = self.call(Method::Delete, &self.value_path(key), None, Vec::new())?;
        self.envelope::<Value>(resp).map(drop)
    }

    /// One page of keys starting with `prefix` (empty for all). `limit` must be
    /// 10..=1000 (server default 1000); `cursor` comes from the previous page.
    pub fn list(
        &self,
        prefix: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<KeyPage, Error> {
        let mut query = Vec::new();
        if !prefix.is_empty() {
            query.push(format!("prefix={}", encode_component(prefix)));
        }
        if let Some(limit) = limit {
            if !limits::LIST_LIMIT_RANGE.contains(&limit) {
                return Err(Error::Invalid(format!(
                    "list limit {limit} is outside {:?}",
                    limits::LIST_LIMIT_RANGE
                )));
            }
            query.push(format!("limit={limit}"));
        }
        if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
            query.push(format!("cursor={}", encode_component(cursor)));
        }
        let mut path = "keys".to_owned();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let resp = self.call(Method::Get, &path, None, Vec::new())?;
        let env = self.envelope::<Vec<KeyEntry>>(resp)?;
        Ok(KeyPage {
            keys: env.result.unwrap_or_default(),
            cursor: env
                .result_info
                .and_then(|i| i.cursor)
                .filter(|c| !c.is_empty()),
        })
    }

    /// Every key starting with `prefix`, following the cursor until it is
    /// empty; an empty page with a cursor does not end the walk.
    pub fn list_all(&self, prefix: &str) -> Result<Vec<KeyEntry>, Error> {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list(prefix, None, cursor.as_deref())?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    // The cursor is the server's text, which may echo the token.
                    return Err(Error::Api {
                        status: 200,
                        code: None,
                        message: format!("list cursor {next:?} did not advance"),
                    }
                    .redact(&self.config.api_token));
                }
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    fn value_path(&self, key: &str) -> String {
        format!("values/{}", encode_component(key))
    }

    /// Sends one request to `<base>/storage/kv/namespaces/<ns>/<path>`,
    /// retrying transient failures when a sleeper is set. Every answer that
    /// is not transient comes back as `Ok`, whatever its status.
    pub(crate) fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<HttpResponse, Error> {
        let url = format!(
            "{}/storage/kv/namespaces/{}/{path}",
            self.config.base,
            encode_component(&self.config.namespace_id)
        );
        let mut headers = Vec::new();
        if !self.config.api_token.is_empty() {
            headers.push((
                "Authorization".to_owned(),
                format!("Bearer {}", self.config.api_token),
            ));
        }
        if let Some(ct) = content_type {
            headers.push(("Content-Type".to_owned(), ct.to_owned()));
        }
        let req = HttpRequest {
            method,
            url,
            headers,
            body,
        };
        let mut retry = 0;
        loop {
            let err = match self.http.send(req.clone()) {
                Err(e) => Error::Transient {
                    status: None,
                    retry_after: None,
                    message: e.0,
                },
                Ok(resp) if (200..300).contains(&resp.status) => return Ok(resp),
                Ok(resp) => {
                    let err = classify(
                        resp.status,
                        resp.header("retry-after"),
                        &self.scrub(&resp.body),
                        SystemTime::now(),
                    );
                    if !err.is_transient() {
                        return Ok(resp);
                    }
                    err
                }
            };
            let err = err.redact(&self.config.api_token);
            let Some((policy, sleeper)) = &self.retry else {
                return Err(err);
            };
            let Some(wait) = policy.delay_for(&err, retry) else {
                return Err(err);
            };
            sleeper.sleep(wait);
            retry += 1;
        }
    }

    /// Turns a non-2xx answer into its error.
    pub(crate) fn ok(&self, resp: HttpResponse) -> Result<HttpResponse, Error> {
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        Err(self.failure(&resp))
    }

    pub(crate) fn failure(&self, resp: &HttpResponse) -> Error {
        classify(
            resp.status,
            resp.header("retry-after"),
            &self.scrub(&resp.body),
            SystemTime::now(),
        )
        .redact(&self.config.api_token)
    }

    /// `body` with the token replaced, for error messages: they quote only
    /// the body's start, and redacting after the cut would miss a token that
    /// straddles it.
    fn scrub<'a>(&self, body: &'a [u8]) -> Cow<'a, [u8]> {
        let token = self.config.api_token.as_bytes();
        let find = |rest: &[u8]| rest.windows(token.len()).position(|w| w == token);
        if token.is_empty() || find(body).is_none() {
            return Cow::Borrowed(body);
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = body;
        while let Some(at) = find(rest) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(b"[redacted]");
            rest = &rest[at + token.len()..];
        }
        out.extend_from_slice(rest);
        Cow::Owned(out)
    }

    /// Parses a successful envelope; a 2xx saying `success: false` is an error too.
    pub(crate) fn envelope<T: DeserializeOwned>(
        &self,
        resp: HttpResponse,
    ) -> Result<Envelope<T>, Error> {
        let resp = self.ok(resp)?;
        let generic = Envelope::<Value>::parse(&resp.body);
        if generic.as_ref().is_some_and(|e| !e.success) {
            return Err(self.failure(&resp));
        }
        Envelope::<T>::parse(&resp.body).ok_or_else(|| {
            let body = self.scrub(&resp.body);
            Error::Api {
                status: resp.status,
                code: None,
                message: format!(
                    "unexpected response body: {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            }
        })
    }
}
