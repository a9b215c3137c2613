//! Operator routes: the dead letters (`GET /api/dead-letters`, admin
//! token), their signed replay (`POST /api/dead-letters/:id/replay`), the
//! signed cache purge and the counters (`GET /metrics`, admin token).

use serde::Serialize;
use tasks_domain::{ReadError, keys};
use tasks_kv::{AtomicKv, StoreError};
use tasks_outbox::ReplayError;
use tasks_outbox::dead_letters::{DeadLetter, DeadLetterPage};
use tasks_signing::{Purpose, Rejection, Seen, Signed, Taken, valid_until, verify, verify_bearer};

use crate::api::{error_body, read_error, to_json};
use crate::http::{Request, cache, content_type};
use crate::{Response, query};

/// What the operator routes need from the host.
pub trait Admin {
    /// A page of dead letters, oldest first.
    fn dead_letters(&self, cursor: Option<&str>, limit: usize)
    -> Result<DeadLetterPage, ReadError>;
    /// Puts dead letter `id` back into the outbox; returns the outbox key.
    fn replay(&self, id: &str, correlation_id: &str) -> Result<String, ReplayError>;
    /// The key signed requests for `purpose` are checked with, and the
    /// variable it came from; `None` when unset.
    fn signing_key(&self, purpose: Purpose) -> Option<(Vec<u8>, &'static str)>;
    /// How long a signed request stays valid, in seconds.
    fn signature_ttl_secs(&self) -> u64;
    /// The current Unix time in seconds.
    fn now_secs(&self) -> i64;
    /// Drops cached copies: of these tasks, or of everything. Returns how
    /// many entries were dropped.
    fn purge(&self, scope: &PurgeScope, correlation_id: &str) -> Result<usize, ReadError>;
    /// The token operator reads (dead letters, metrics) need; `None` when unset.
    fn admin_token(&self) -> Option<Vec<u8>>;
    /// The counters in Prometheus text.
    fn metrics(&self) -> Result<String, ReadError>;
    /// Takes a verified signature, valid until `valid_until` (Unix
    /// seconds), once: `Taken::Replayed` when it was taken before (see
    /// [`take_signature_in`], which hosts with a store use).
    fn take_signature(&self, signature: &str, valid_until: i64) -> Result<Taken, ReadError>;
}

/// How many times [`take_signature_in`] reads the record again when
/// another request changed it in between.
const TAKE_ATTEMPTS: usize = 8;

/// [`Admin::take_signature`] over a store with compare-and-swap: the
/// signatures taken are one record ([`keys::SIGNED_SEEN`], a
/// [`Seen`]), changed by compare-and-swap, so two copies of one request
/// arriving together at two instances are taken once between them.
pub fn take_signature_in<K: AtomicKv>(
    kv: &K,
    signature: &str,
    valid_until: i64,
    now: i64,
) -> Result<Taken, StoreError> {
    for _ in 0..TAKE_ATTEMPTS {
        let (cas, current) = kv.cas_read(keys::SIGNED_SEEN)?;
        let mut seen = Seen::decode(current.as_deref());
        let taken = seen.take(signature, valid_until, now);
        if taken != Taken::Fresh || kv.cas_write(cas, seen.encode())? {
            return Ok(taken);
        }
    }
    Err(StoreError::Other(format!(
        "the record of signed requests changed under each of {TAKE_ATTEMPTS} attempts"
    )))
}

/// What `POST /api/cache/purge` drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeScope {
    /// The cached copies of these tasks (and every cached page).
    Tasks(Vec<String>),
    /// Every cached copy.
    All,
}

/// The purge body: `{"taskIds":[…]}` or `{"all":true}`, with an optional
/// `nonce` that only makes the signature its own: a signature is taken
/// once, so two purges of the same tasks signed in the same second need
/// different bodies.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    task_ids: Option<Vec<String>>,
    #[serde(default)]
    all: Option<bool>,
    #[serde(default)]
    nonce: Option<String>,
}

/// The longest purge `nonce`, in bytes.
const MAX_NONCE_BYTES: usize = 128;

use tasks_domain::validate::MAX_PURGE_IDS;

fn purge_scope(body: &[u8]) -> Result<PurgeScope, String> {
    let parsed: PurgeBody = serde_json::from_slice(body)
        .map_err(|e| format!("body must be {{\"taskIds\":[…]}} or {{\"all\":true}}: {e}"))?;
    if parsed
        .nonce
        .as_ref()
        .is_some_and(|n| n.len() > MAX_NONCE_BYTES)
    {
        return Err(format!("nonce may be at most {MAX_NONCE_BYTES} bytes"));
    }
    match (parsed.task_ids, parsed.all) {
        (None, Some(true)) => Ok(PurgeScope::All),
        (Some(ids), None | Some(false)) if !ids.is_empty() && ids.len() <= MAX_PURGE_IDS => {
            for id in &ids {
                tasks_domain::validate::validate_id(id).map_err(|e| format!("taskIds: {e}"))?;
            }
            Ok(PurgeScope::Tasks(ids))
        }
        (Some(ids), _) if ids.len() > MAX_PURGE_IDS => {
            Err(format!("taskIds may name at most {MAX_PURGE_IDS} tasks"))
        }
        _ => Err("body must be {\"taskIds\":[…]} (1 or more ids) or {\"all\":true}".into()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Purged {
    purged: usize,
}

/// `POST /api/cache/purge`, signed.
pub(crate) fn purge(req: &Request, cid: &str, admin: &dyn Admin) -> Response {
    if let Err(resp) = check_signature(req, admin, Purpose::Purge) {
        return resp;
    }
    let scope = match purge_scope(&req.body) {
        Ok(s) => s,
        Err(m) => return error_body(400, "invalid_request", &m),
    };
    match admin.purge(&scope, cid) {
        Ok(purged) => Response::new(
            200,
            content_type::JSON,
            cache::NEVER,
            to_json(&Purged { purged }),
        ),
        Err(e) => read_error(&e),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Item<'a> {
    id: &'a str,
    #[serde(flatten)]
    record: &'a DeadLetter,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    dead_letters: Vec<Item<'a>>,
    next_cursor: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Replayed<'a> {
    replayed: &'a str,
    outbox_key: &'a str,
}

/// `GET /metrics`, admin token.
pub(crate) fn metrics(req: &Request, admin: &dyn Admin) -> Response {
    if let Err(resp) = check_token(req, admin) {
        return resp;
    }
    match admin.metrics() {
        Ok(text) => Response::new(
            200,
            content_type::PROMETHEUS,
            cache::NEVER,
            text.into_bytes(),
        ),
        Err(e) => read_error(&e),
    }
}

/// 503 while no admin token is configured, or one shorter than
/// [`tasks_signing::MIN_SECRET_BYTES`]; 401 with a reason code unless
/// the request carries it as `Authorization: Bearer <token>`.
pub(crate) fn check_token(req: &Request, admin: &dyn Admin) -> Result<(), Response> {
    let Some(token) = admin.admin_token() else {
        return Err(error_body(
            503,
            "admin_disabled",
            "operator routes are off: set the admin_token variable (SPIN_VARIABLE_ADMIN_TOKEN)",
        ));
    };
    if let Err(why) = tasks_signing::strong_enough("admin_token", &token) {
        return Err(error_body(
            503,
            "admin_weak_token",
            &format!("operator routes are off: {why}"),
        ));
    }
    verify_bearer(&token, req.authorization.as_deref()).map_err(|r| {
        error_body(401, r.code(), r.message())
            .with_header("www-authenticate", "Bearer realm=\"spin-tasks operator\"")
    })
}

/// `GET /api/dead-letters?cursor=&limit=`, admin token.
pub(crate) fn list(req: &Request, admin: &dyn Admin) -> Response {
    if let Err(resp) = check_token(req, admin) {
        return resp;
    }
    let page = query::list_request(&req.query).and_then(|lr| {
        let limit = lr.resolved_limit()?;
        admin.dead_letters(lr.cursor.as_deref(), limit)
    });
    let page = match page {
        Ok(p) => p,
        Err(e) => return read_error(&e),
    };
    let body = to_json(&ListBody {
        dead_letters: page
            .items
            .iter()
            .map(|(id, record)| Item { id, record })
            .collect(),
        next_cursor: page.next_cursor.as_deref(),
    });
    // Operator data changes with every failure: never stored by caches.
    Response::new(200, content_type::JSON, cache::NEVER, body)
}

/// `POST /api/dead-letters/:id/replay`, signed.
pub(crate) fn replay(req: &Request, id: &str, cid: &str, admin: &dyn Admin) -> Response {
    if let Err(resp) = check_signature(req, admin, Purpose::Replay) {
        return resp;
    }
    match admin.replay(id, cid) {
        Ok(outbox_key) => Response::new(
            202,
            content_type::JSON,
            cache::NEVER,
            to_json(&Replayed {
                replayed: id,
                outbox_key: &outbox_key,
            }),
        ),
        Err(ReplayError::NotFound(_)) => {
            error_body(404, "not_found", &format!("no dead letter {id:?}"))
        }
        Err(ReplayError::Conflict(m)) => error_body(409, "conflict", &m),
        Err(ReplayError::Store(e)) => read_error(&ReadError::Unavailable(e.to_string())),
    }
}

/// 503 when no key for `purpose` is configured (its own variable, else
/// `hmac_key`), or one shorter than [`tasks_signing::MIN_SECRET_BYTES`];
/// 401 with a reason code when the request is not signed correctly; 409
/// when its signature was taken already (a copy sent again), 429 when too
/// many were taken within one window.
pub(crate) fn check_signature(
    req: &Request,
    admin: &dyn Admin,
    purpose: Purpose,
) -> Result<(), Response> {
    let Some((key, name)) = admin.signing_key(purpose) else {
        return Err(error_body(
            503,
            "signing_disabled",
            &format!(
                "this signed route is off: set the {} variable (SPIN_VARIABLE_{}), or {} (SPIN_VARIABLE_{}) for every signed route",
                purpose.variable(),
                purpose.variable().to_ascii_uppercase(),
                Purpose::SHARED,
                Purpose::SHARED.to_ascii_uppercase()
            ),
        ));
    };
    if let Err(why) = tasks_signing::strong_enough(name, &key) {
        return Err(error_body(
            503,
            "signing_weak_key",
            &format!("signed admin routes are off: {why}"),
        ));
    }
    let signed = Signed {
        timestamp: req.timestamp.as_deref(),
        signature: req.signature.as_deref(),
        method: &req.method,
        path: &req.path,
        body: &req.body,
    };
    let ttl = admin.signature_ttl_secs();
    verify(&key, &signed, admin.now_secs(), ttl).map_err(unauthorized)?;
    let (timestamp, signature) = (
        signed.timestamp.unwrap_or(""),
        signed.signature.unwrap_or(""),
    );
    match admin.take_signature(signature, valid_until(timestamp, ttl)) {
        Ok(Taken::Fresh) => Ok(()),
        Ok(Taken::Replayed) => Err(error_body(
            409,
            "replayed",
            "this signed request was taken already: sign each request anew (a fresh X-Timestamp)",
        )),
        Ok(Taken::Full) => Err(error_body(
            429,
            "too_many_signed_requests",
            &format!(
                "more than {} signed requests within {ttl} s: try again in {ttl} s",
                tasks_signing::MAX_SEEN
            ),
        )
        .with_header("retry-after", ttl.to_string())),
        Err(e) => Err(read_error(&e)),
    }
}

fn unauthorized(r: Rejection) -> Response {
    error_body(401, r.code(), r.message()).with_header(
        "www-authenticate",
        "HMAC-SHA256 headers=\"x-timestamp x-signature\"",
    )
}
