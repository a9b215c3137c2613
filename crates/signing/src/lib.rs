//! Signed admin requests (dead-letter replay, cache purge).
//!
//! The signature is HMAC-SHA256, keyed with the shared secret, over
//!
//! ```text
//! <timestamp>\n<METHOD>\n<path>\n<hex sha256 of the body>
//! ```
//!
//! sent as lowercase hex in `X-Signature`, with the Unix time in seconds in
//! `X-Timestamp`. A request is accepted for `ttl` seconds after its
//! timestamp, and from at most [`MAX_AHEAD_SECS`] before it (clock skew):
//! a signature lives `ttl` + 2 seconds, whatever timestamp it names.
//! Within that window a host takes each signature once ([`Seen`]): a copy
//! sent again is refused. Comparison is constant-time (the `hmac` crate's
//! `verify_slice`). Rejections carry a reason code and nothing that helps
//! forge a signature.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Header carrying the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// Header carrying the hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// Default acceptance window, in seconds.
pub const DEFAULT_TTL_SECS: u64 = 5;
/// How far ahead of the receiver's clock a timestamp may be, in seconds
/// (the sender's clock running fast).
pub const MAX_AHEAD_SECS: u64 = 2;

/// Why a signed request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `X-Timestamp` or `X-Signature` is absent or empty.
    MissingSignature,
    /// The timestamp is outside the window (too old or in the future).
    Expired,
    /// The signature does not match (or is not hex, or the timestamp is
    /// not a number).
    BadSignature,
}

impl Rejection {
    /// `missing_signature`, `expired` or `bad_signature`.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::MissingSignature => "missing_signature",
            Rejection::Expired => "expired",
            Rejection::BadSignature => "bad_signature",
        }
    }

    /// A message for the client: says what to fix, reveals nothing else.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::MissingSignature => "this route needs X-Timestamp and X-Signature headers",
            Rejection::Expired => "the request timestamp is outside the accepted window",
            Rejection::BadSignature => "the signature does not match",
        }
    }
}

/// What a signed request is for: each purpose has a key of its own, so a
/// host that only takes purges (a read side on a public host) holds no key
/// that signs dead-letter replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `POST /api/cache/purge`.
    Purge,
    /// `POST /api/dead-letters/:id/replay`.
    Replay,
}

impl Purpose {
    /// The variable holding its key: `purge_key` or `replay_key`.
    pub fn variable(self) -> &'static str {
        match self {
            Purpose::Purge => "purge_key",
            Purpose::Replay => "replay_key",
        }
    }

    /// The variable both purposes fall back to when theirs is unset: one
    /// key for a single host that does both (`make up`).
    pub const SHARED: &'static str = "hmac_key";

    /// Its key as `get` (a Spin variable, an environment variable) finds
    /// it: its own variable, else [`Purpose::SHARED`]; with the name it
    /// came from.
    pub fn key(self, get: impl Fn(&str) -> Option<String>) -> Option<(String, &'static str)> {
        [self.variable(), Purpose::SHARED]
            .into_iter()
            .find_map(|name| get(name).map(|key| (key, name)))
    }

    /// The purpose of a signed request to `path`.
    pub fn of_path(path: &str) -> Purpose {
        if path.ends_with("/replay") {
            Purpose::Replay
        } else {
            Purpose::Purge
        }
    }
}

/// The shortest secret (`hmac_key`, `admin_token`) accepted, in bytes: a
/// shorter one can be guessed offline from one signed request, or online.
pub const MIN_SECRET_BYTES: usize = 32;

/// `Err` with what to do when `secret` (the variable `name`) is shorter
/// than [`MIN_SECRET_BYTES`]: the routes it guards stay off.
pub fn strong_enough(name: &str, secret: &[u8]) -> Result<(), String> {
    if secret.len() >= MIN_SECRET_BYTES {
        return Ok(());
    }
    Err(format!(
        "{name} is {} bytes, fewer than {MIN_SECRET_BYTES}: set a longer one (openssl rand -hex 32)",
        secret.len()
    ))
}

/// Whether signed requests may be sent to `url`: over `https://`, or plain
/// `http://` to a loopback host (`localhost`, `127.x.x.x`, `[::1]`). A
/// signed request sent in the clear can be read on the way and sent again
/// within its window. `Err` says why not.
pub fn may_send_signed_to(url: &str) -> Result<(), String> {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "signed requests go over https:// only (plain http:// to a loopback host aside); {url:?} would send them in the clear"
        ))
    }
}

/// What is signed, as the documentation says it (`crates/site/openapi.json`
/// quotes it): [`canonical`] builds it.
pub const SIGNED_STRING: &str =
    "<X-Timestamp>\\n<METHOD>\\n<path>\\n<lowercase hex SHA-256 of the body>";

/// What is signed, one line per part.
fn canonical(timestamp: &str, method: &str, path: &str, body: &[u8]) -> String {
    let body_hash = hex::encode(Sha256::digest(body));
    format!(
        "{timestamp}\n{}\n{path}\n{body_hash}",
        method.to_ascii_uppercase()
    )
}

fn mac(key: &[u8], timestamp: &str, method: &str, path: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(canonical(timestamp, method, path, body).as_bytes());
    mac
}

/// The `X-Signature` value for a request signed at `timestamp` (Unix
/// seconds).
pub fn sign(key: &[u8], timestamp: i64, method: &str, path: &str, body: &[u8]) -> String {
    hex::encode(
        mac(key, &timestamp.to_string(), method, path, body)
            .finalize()
            .into_bytes(),
    )
}

/// A request as far as its signature goes.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    /// The `X-Timestamp` header.
    pub timestamp: Option<&'a str>,
    /// The `X-Signature` header.
    pub signature: Option<&'a str>,
    /// `POST`, …
    pub method: &'a str,
    /// The path as sent (percent-encoded, no query).
    pub path: &'a str,
    /// The body bytes.
    pub body: &'a [u8],
}

/// Checks a request's signature at time `now` (Unix seconds).
pub fn verify(key: &[u8], req: &Signed, now: i64, ttl_secs: u64) -> Result<(), Rejection> {
    let Signed {
        timestamp,
        signature,
        method,
        path,
        body,
    } = *req;
    let (Some(ts), Some(sig)) = (
        timestamp.map(str::trim).filter(|t| !t.is_empty()),
        signature.map(str::trim).filter(|s| !s.is_empty()),
    ) else {
        return Err(Rejection::MissingSignature);
    };
    let signed_at: i64 = ts.parse().map_err(|_| Rejection::BadSignature)?;
    // In 128 bits: the difference of two i64 times does not fit in one.
    let age = i128::from(now) - i128::from(signed_at);
    if age > i128::from(ttl_secs) || -age > i128::from(MAX_AHEAD_SECS) {
        return Err(Rejection::Expired);
    }
    let given = hex::decode(sig).map_err(|_| Rejection::BadSignature)?;
    mac(key, ts, method, path, body)
        .verify_slice(&given)
        .map_err(|_| Rejection::BadSignature)
}

/// Most signatures [`Seen`] keeps at once (each until its window ends): a
/// host asked to take more signed requests than this within one window
/// refuses the rest ([`Taken::Full`]) rather than forget one it took.
pub const MAX_SEEN: usize = 1_000;

/// Hex digits of a signature [`Seen`] keeps (128 bits).
const SEEN_DIGITS: usize = 32;

/// What [`Seen::take`] made of a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// First seen: the request may proceed.
    Fresh,
    /// Taken before, within its window: a copy sent again.
    Replayed,
    /// [`MAX_SEEN`] signatures are still within their windows.
    Full,
}

/// The signatures a host has taken and whose windows have not ended, so a
/// signed request is acted on once: a copy captured on the way and sent
/// again inside the window is refused. Stored as one record (a line per
/// signature: its first 32 hex digits and the Unix second its window ends)
/// that the host updates by compare-and-swap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen(Vec<(String, i64)>);

impl Seen {
    /// The record as stored (`None`: nothing taken yet). Lines that do not
    /// parse are dropped.
    pub fn decode(bytes: Option<&[u8]>) -> Seen {
        let text = bytes.map(String::from_utf8_lossy).unwrap_or_default();
        Seen(
            text.lines()
                .filter_map(|line| {
                    let (sig, until) = line.split_once(' ')?;
                    Some((sig.to_owned(), until.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The record to store.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.0.len() * (SEEN_DIGITS + 12));
        for (sig, until) in &self.0 {
            out.push_str(sig);
            out.push(' ');
            out.push_str(&until.to_string());
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Takes `signature`, valid until `until`, at `now` (Unix seconds):
    /// forgets the signatures whose windows ended, then says whether this
    /// one is new (and keeps it), taken already, or one too many.
    pub fn take(&mut self, signature: &str, until: i64, now: i64) -> Taken {
        self.0.retain(|(_, u)| *u >= now);
        let sig = signature.trim().to_ascii_lowercase();
        let sig = &sig[..sig.len().min(SEEN_DIGITS)];
        if self.0.iter().any(|(s, _)| s == sig) {
            return Taken::Replayed;
        }
        if self.0.len() >= MAX_SEEN {
            return Taken::Full;
        }
        self.0.push((sig.to_owned(), until));
        Taken::Fresh
    }

    /// Signatures kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The last Unix second a request signed at `timestamp` (its `X-Timestamp`)
/// is accepted with a window of `ttl_secs`: what [`Seen`] keeps it until.
pub fn valid_until(timestamp: &str, ttl_secs: u64) -> i64 {
    timestamp
        .trim()
        .parse::<i64>()
        .unwrap_or(i64::MAX)
        .saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX))
}

/// Why a bearer credential was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerRejection {
    /// No `Authorization` header.
    Missing,
    /// The header is not `Bearer <token>`.
    Malformed,
    /// The token is not the configured one.
    Wrong,
}

impl BearerRejection {
    /// The reason code sent to clients.
    pub fn code(self) -> &'static str {
        match self {
            BearerRejection::Missing => "missing_token",
            BearerRejection::Malformed => "malformed_authorization",
            BearerRejection::Wrong => "bad_token",
        }
    }

    /// A readable explanation.
    pub fn message(self) -> &'static str {
        match self {
            BearerRejection::Missing => "send the admin token as Authorization: Bearer <token>",
            BearerRejection::Malformed => {
                "the Authorization header must be \"Bearer <token>\" (one space, a non-empty token)"
            }
            BearerRejection::Wrong => "the token does not match the admin_token variable",
        }
    }
}

/// Checks an `Authorization` header against `token`: `Bearer <token>`
/// (scheme case-insensitive), compared in constant time (the digests of
/// both, so neither the content nor the length leaks through timing).
pub fn verify_bearer(token: &[u8], header: Option<&str>) -> Result<(), BearerRejection> {
    let header = header.ok_or(BearerRejection::Missing)?;
    let (scheme, given) = header.split_once(' ').ok_or(BearerRejection::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || given.is_empty() || given.contains(' ') {
        return Err(BearerRejection::Malformed);
    }
    let want = Sha256::digest(token);
    let got = Sha256::digest(given.as_bytes());
    let diff = want
        .iter()
        .zip(got.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(BearerRejection::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_go_over_https_or_to_loopback_only() {
        for ok in [
            "https://tasks.example.com/api/cache/purge",
            "HTTPS://tasks.example.com/x",
            "http://127.0.0.1:3000/api/cache/purge",
            "http://127.9.9.9/x",
            "http://localhost:3000/api/cache/purge",
            "http://[::1]:3000/api/cache/purge",
        ] {
            assert_eq!(may_send_signed_to(ok), Ok(()), "{ok}");
        }
        for refused in [
            "http://tasks.example.com/api/cache/purge",
            "http://127.0.0.1.example.com/x",
            "http://localhost.example.com/x",
            "http://10.0.0.1/x",
            "http://user@evil.example/@127.0.0.1/x",
            "ftp://127.0.0.1/x",
            "tasks.example.com/x",
        ] {
            assert!(may_send_signed_to(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_documented_signed_string_is_the_one_signed() {
        let body = br#"{"all":true}"#;
        let documented = SIGNED_STRING
            .replace("\\n", "\n")
            .replace("<X-Timestamp>", "1700000000")
            .replace("<METHOD>", "POST")
            .replace("<path>", "/api/cache/purge")
            .replace(
                "<lowercase hex SHA-256 of the body>",
                &hex::encode(Sha256::digest(body)),
            );
        assert_eq!(
            canonical("1700000000", "post", "/api/cache/purge", body),
            documented
        );
    }

    #[test]
    fn bearer_tokens_are_checked_whole() {
        let t = b"s3cret";
        assert_eq!(verify_bearer(t, Some("Bearer s3cret")), Ok(()));
        assert_eq!(verify_bearer(t, Some("bearer s3cret")), Ok(()));
        for (header, want) in [
            (None, BearerRejection::Missing),
            (Some("s3cret"), BearerRejection::Malformed),
            (Some("Basic s3cret"), BearerRejection::Malformed),
            (Some("Bearer "), BearerRejection::Malformed),
            (Some("Bearer s3cret extra"), BearerRejection::Malformed),
            (Some("Bearer s3cre"), BearerRejection::Wrong),
            (Some("Bearer s3crett"), BearerRejection::Wrong),
        ] {
            assert_eq!(verify_bearer(t, header), Err(want), "{header:?}");
        }
    }

    const KEY: &[u8] = b"test-key";
    const NOW: i64 = 1_795_327_314;
    const PATH: &str = "/api/cache/purge";
    const BODY: &[u8] = br#"{"all":true}"#;

    type Outcome = Result<(), Rejection>;

    fn check(ts: Option<String>, sig: Option<String>, path: &str, body: &[u8]) -> Outcome {
        let req = Signed {
            timestamp: ts.as_deref(),
            signature: sig.as_deref(),
            method: "POST",
            path,
            body,
        };
        verify(KEY, &req, NOW, DEFAULT_TTL_SECS)
    }

    #[test]
    fn matches_an_independent_implementation() {
        // printf '1795327314\nPOST\n/api/cache/purge\n%s' \
        //   "$(printf '{"all":true}' | sha256sum | cut -d' ' -f1)" \
        //   | openssl dgst -sha256 -hmac test-key
        assert_eq!(
            sign(KEY, NOW, "post", PATH, BODY),
            "21b3cf7a7330cd3ef899785c280899b1fe844575e3d356e606b497606b61abe6"
        );
    }

    #[test]
    fn the_rejection_table() {
        let good = || Some(sign(KEY, NOW, "POST", PATH, BODY));
        let ts = |t: i64| Some(t.to_string());
        let cases: Vec<(&str, Outcome, Outcome)> = vec![
            ("good", check(ts(NOW), good(), PATH, BODY), Ok(())),
            (
                "edge of window, past",
                check(
                    ts(NOW - 5),
                    Some(sign(KEY, NOW - 5, "POST", PATH, BODY)),
                    PATH,
                    BODY,
                ),
                Ok(()),
            ),
            (
                "no signature",
                check(ts(NOW), None, PATH, BODY),
                Err(Rejection::MissingSignature),
            ),
            (
                "no timestamp",
                check(None, good(), PATH, BODY),
                Err(Rejection::MissingSignature),
            ),
            (
                "empty signature",
                check(ts(NOW), Some(" ".into()), PATH, BODY),
                Err(Rejection::MissingSignature),
            ),
            (
                "expired",
                check(
                    ts(NOW - 6),
                    Some(sign(KEY, NOW - 6, "POST", PATH, BODY)),
                    PATH,
                    BODY,
                ),
                Err(Rejection::Expired),
            ),
            (
                "ahead by the skew allowed",
                check(
                    ts(NOW + 2),
                    Some(sign(KEY, NOW + 2, "POST", PATH, BODY)),
                    PATH,
                    BODY,
                ),
                Ok(()),
            ),
            (
                "ahead by more than the skew allowed (it would live past the window)",
                check(
                    ts(NOW + 3),
                    Some(sign(KEY, NOW + 3, "POST", PATH, BODY)),
                    PATH,
                    BODY,
                ),
                Err(Rejection::Expired),
            ),
            (
                "future",
                check(
                    ts(NOW + 60),
                    Some(sign(KEY, NOW + 60, "POST", PATH, BODY)),
                    PATH,
                    BODY,
                ),
                Err(Rejection::Expired),
            ),
            (
                "tampered body",
                check(ts(NOW), good(), PATH, br#"{"all":false}"#),
                Err(Rejection::BadSignature),
            ),
            (
                "wrong path",
                check(ts(NOW), good(), "/api/dead-letters/x/replay", BODY),
                Err(Rejection::BadSignature),
            ),
            (
                "wrong key",
                check(
                    ts(NOW),
                    Some(sign(b"other", NOW, "POST", PATH, BODY)),
                    PATH,
                    BODY,
                ),
                Err(Rejection::BadSignature),
            ),
            (
                "timestamp not signed",
                check(ts(NOW - 1), good(), PATH, BODY),
                Err(Rejection::BadSignature),
            ),
            (
                "not hex",
                check(ts(NOW), Some("zz".into()), PATH, BODY),
                Err(Rejection::BadSignature),
            ),
            (
                "truncated",
                check(ts(NOW), good().map(|s| s[..62].to_owned()), PATH, BODY),
                Err(Rejection::BadSignature),
            ),
            (
                "timestamp not a number",
                check(Some("soon".into()), good(), PATH, BODY),
                Err(Rejection::BadSignature),
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
        let (t, g) = (ts(NOW), good());
        let as_get = Signed {
            timestamp: t.as_deref(),
            signature: g.as_deref(),
            method: "GET",
            path: PATH,
            body: BODY,
        };
        assert_eq!(
            verify(KEY, &as_get, NOW, 5),
            Err(Rejection::BadSignature),
            "method is signed"
        );
    }

    #[test]
    fn a_signature_is_taken_once_within_its_window_and_forgotten_after() {
        let mut seen = Seen::default();
        let sig = sign(KEY, NOW, "POST", PATH, BODY);
        let until = valid_until(&NOW.to_string(), 5);
        assert_eq!(until, NOW + 5);
        assert_eq!(seen.take(&sig, until, NOW), Taken::Fresh);
        // Stored and read back, as a host does between requests.
        let mut seen = Seen::decode(Some(&seen.encode()));
        assert_eq!(seen.take(&sig, until, NOW + 1), Taken::Replayed);
        assert_eq!(
            seen.take(&sig.to_ascii_uppercase(), until, NOW + 5),
            Taken::Replayed,
            "hex in either case is the same signature"
        );
        // Past its window it is forgotten (verify refuses it as expired).
        assert_eq!(seen.take(&sig, until, NOW + 6), Taken::Fresh);
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_full_set_refuses_new_signatures_rather_than_forget_one() {
        let mut seen = Seen::default();
        for n in 0..MAX_SEEN {
            assert_eq!(
                seen.take(&format!("{n:032x}{n:032x}"), NOW + 5, NOW),
                Taken::Fresh
            );
        }
        assert_eq!(
            seen.take(&format!("{MAX_SEEN:032x}{MAX_SEEN:032x}"), NOW + 5, NOW),
            Taken::Full
        );
        assert_eq!(
            seen.take(&format!("{:064x}", 0), NOW + 5, NOW),
            Taken::Replayed
        );
        assert_eq!(
            seen.take(&format!("{MAX_SEEN:032x}{MAX_SEEN:032x}"), NOW + 6, NOW + 6),
            Taken::Fresh,
            "room again once the others' windows end"
        );
        assert!(Seen::decode(Some(b"garbage\nab 12\n")).len() == 1);
        assert!(Seen::decode(None).is_empty());
    }

    #[test]
    fn a_window_between_times_far_apart_is_measured_without_overflow() {
        // Found by the properties: the age of this signature (about 1.0e19 s) does not fit in
        // an i64; saturated, it read as i64::MAX and passed a window of i64::MAX seconds.
        let (signed_at, now, ttl) = (
            -5_883_678_907_843_949_028_i64,
            4_305_603_707_423_379_784,
            i64::MAX as u64,
        );
        let (ts, sig) = (
            signed_at.to_string(),
            sign(KEY, signed_at, "POST", PATH, BODY),
        );
        let req = Signed {
            timestamp: Some(&ts),
            signature: Some(&sig),
            method: "POST",
            path: PATH,
            body: BODY,
        };
        assert_eq!(verify(KEY, &req, now, ttl), Err(Rejection::Expired));
        assert_eq!(verify(KEY, &req, signed_at, ttl), Ok(()));
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(Rejection::MissingSignature.code(), "missing_signature");
        assert_eq!(Rejection::Expired.code(), "expired");
        assert_eq!(Rejection::BadSignature.code(), "bad_signature");
    }
}
