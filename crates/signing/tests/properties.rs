//! Properties of `verify`, which reads headers and bodies from anyone: what
//! `sign` makes verifies, any single change is refused with the right reason,
//! expired requests are refused whatever they carry, and nothing panics.
//!
//! Each property runs proptest's default number of cases (256), or
//! `PROPTEST_CASES`; `tests/properties-long.sh` runs a million of each.

use proptest::prelude::*;
use tasks_signing::{MAX_AHEAD_SECS, Rejection, Signed, sign};

use tasks_proptest_kit::{Edit, check, edits, fed, mutate, mutate_str};

type Outcome = Result<(), Rejection>;

/// Whether a request signed at `signed_at` is outside its window at `now`:
/// more than `ttl` seconds old, or more than [`MAX_AHEAD_SECS`] ahead (in
/// 128 bits: no overflow to reason about).
fn outside(now: i64, signed_at: i64, ttl: u64) -> bool {
    let age = i128::from(now) - i128::from(signed_at);
    age > i128::from(ttl) || -age > i128::from(MAX_AHEAD_SECS)
}

/// A request as it arrives, owning its parts.
#[derive(Clone, Debug)]
struct Request {
    key: Vec<u8>,
    timestamp: Option<String>,
    signature: Option<String>,
    method: String,
    path: String,
    body: Vec<u8>,
    now: i64,
    ttl: u64,
}

impl Request {
    fn verify(&self) -> Outcome {
        fed();
        let signed = Signed {
            timestamp: self.timestamp.as_deref(),
            signature: self.signature.as_deref(),
            method: &self.method,
            path: &self.path,
            body: &self.body,
        };
        tasks_signing::verify(&self.key, &signed, self.now, self.ttl)
    }
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["POST", "post", "GET", "DELETE", "PuT"][..]).prop_map(str::to_owned),
        "[A-Za-z]{1,10}",
        any::<String>(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["/api/cache/purge", "/api/dead-letters/x/replay", "/"][..])
            .prop_map(str::to_owned),
        "/[a-z0-9%/._-]{0,40}",
        any::<String>(),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(br#"{"all":true}"#.to_vec()),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Header padding the server trims.
fn padding() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&[' ', '\t'][..]), 0..3).prop_map(String::from_iter)
}

/// A request signed with its key at `timestamp`, arriving within `ttl`
/// seconds after it or up to [`MAX_AHEAD_SECS`] before it (the sender's
/// clock fast), as a client following the README sends it.
fn signed_request() -> impl Strategy<Value = Request> {
    (
        prop::collection::vec(any::<u8>(), 0..80),
        any::<i64>(),
        prop_oneof![0..=300u64, Just(u64::MAX)],
        any::<u64>(),
        any::<bool>(),
        (method(), path(), body()),
    )
        .prop_map(|(key, ts, ttl, skew, behind, (method, path, body))| {
            let most = if behind { ttl.min(MAX_AHEAD_SECS) } else { ttl };
            let skew = i64::try_from(skew % most.saturating_add(1)).unwrap_or(i64::MAX);
            let now = if behind {
                ts.saturating_sub(skew)
            } else {
                ts.saturating_add(skew)
            };
            let signature = sign(&key, ts, &method, &path, &body);
            Request {
                key,
                timestamp: Some(ts.to_string()),
                signature: Some(signature),
                method,
                path,
                body,
                now,
                ttl,
            }
        })
}

#[test]
fn what_sign_makes_verifies() {
    let request = (
        signed_request(),
        padding(),
        padding(),
        any::<bool>(),
        any::<bool>(),
    );
    check(
        "signed request verifies",
        request,
        |(mut req, pad_ts, pad_sig, shout_sig, shout_method)| {
            let sig = req.signature.clone().unwrap_or_default();
            prop_assert_eq!(sig.len(), 64);
            prop_assert!(
                sig.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            let signed_at: i64 = req.timestamp.as_deref().unwrap_or("0").parse().unwrap_or(0);
            let again = sign(
                &req.key,
                signed_at,
                &req.method.to_ascii_lowercase(),
                &req.path,
                &req.body,
            );
            prop_assert_eq!(
                &again,
                &sig,
                "sign is deterministic and ignores the method's case"
            );
            prop_assert_eq!(req.verify(), Ok(()));
            // Header whitespace, the hex digits' case and the method's case
            // are not part of what is signed.
            req.timestamp = req.timestamp.map(|t| format!("{pad_ts}{t}{pad_ts}"));
            req.signature = Some(if shout_sig {
                sig.to_ascii_uppercase()
            } else {
                sig
            });
            req.signature = req.signature.map(|s| format!("{pad_sig}{s}{pad_sig}"));
            if shout_method {
                req.method = req.method.to_ascii_lowercase();
            }
            prop_assert_eq!(req.verify(), Ok(()));
            Ok(())
        },
    );
}

/// One part of a signed request changed.
#[derive(Clone, Debug)]
enum Change {
    Method(Vec<Edit>),
    Path(Vec<Edit>),
    Body(Vec<Edit>),
    Key(Vec<Edit>),
    /// Another timestamp, written as a client would write it.
    SignedAt(i64),
    /// The timestamp header's text edited.
    TimestampText(Vec<Edit>),
    Signature(Vec<Edit>),
    NoTimestamp,
    NoSignature,
}

fn change() -> impl Strategy<Value = Change> {
    let text_edits = || {
        edits(
            b" \t+-0123456789aAfFgxX\x00\xff",
            &["0", "+", "-", " ", "e3", "\u{e9}"],
        )
    };
    prop_oneof![
        text_edits().prop_map(Change::Method),
        text_edits().prop_map(Change::Path),
        text_edits().prop_map(Change::Body),
        text_edits().prop_map(Change::Key),
        prop_oneof![1..=10i64, -10..=-1i64, any::<i64>().prop_map(|d| d | 1)]
            .prop_map(Change::SignedAt),
        text_edits().prop_map(Change::TimestampText),
        text_edits().prop_map(Change::Signature),
        Just(Change::NoTimestamp),
        Just(Change::NoSignature),
    ]
}

/// HMAC pads short keys with zero bytes (RFC 2104), so `k` and `k\0` are the
/// same key; compare keys the way HMAC sees them.
fn same_hmac_key(a: &[u8], b: &[u8]) -> bool {
    let trim = |k: &[u8]| k.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    a == b || (a.len() <= 64 && b.len() <= 64 && a[..trim(a)] == b[..trim(b)])
}

#[test]
fn any_single_change_is_refused_with_its_reason() {
    check(
        "changed request refused",
        (signed_request(), change()),
        |(req, change)| {
            let mut bad = req.clone();
            let text = |r: &Option<String>| r.clone().unwrap_or_default();
            let want: Outcome = match &change {
                Change::Method(e) => {
                    bad.method = mutate_str(&req.method, e);
                    if bad.method.eq_ignore_ascii_case(&req.method) {
                        bad.method.push('X');
                    }
                    Err(Rejection::BadSignature)
                }
                Change::Path(e) => {
                    bad.path = mutate_str(&req.path, e);
                    if bad.path == req.path {
                        bad.path.push('/');
                    }
                    Err(Rejection::BadSignature)
                }
                Change::Body(e) => {
                    bad.body = mutate(req.body.clone(), e);
                    if bad.body == req.body {
                        bad.body.push(b' ');
                    }
                    Err(Rejection::BadSignature)
                }
                Change::Key(e) => {
                    bad.key = mutate(req.key.clone(), e);
                    if same_hmac_key(&bad.key, &req.key) {
                        bad.key.push(1);
                    }
                    Err(Rejection::BadSignature)
                }
                Change::SignedAt(delta) => {
                    let signed_at: i64 = text(&req.timestamp).parse().unwrap_or_default();
                    let other = signed_at.wrapping_add(*delta);
                    bad.timestamp = Some(other.to_string());
                    if outside(req.now, other, req.ttl) {
                        Err(Rejection::Expired)
                    } else {
                        Err(Rejection::BadSignature)
                    }
                }
                Change::TimestampText(e) => {
                    let sent = mutate_str(&text(&req.timestamp), e);
                    bad.timestamp = Some(sent.clone());
                    let sent = sent.trim();
                    match sent.parse::<i64>() {
                        _ if sent.is_empty() => Err(Rejection::MissingSignature),
                        Err(_) => Err(Rejection::BadSignature),
                        Ok(t) if outside(req.now, t, req.ttl) => Err(Rejection::Expired),
                        // The exact text is signed, so `+5` or `05` for `5` fails.
                        Ok(_) if sent == text(&req.timestamp) => Ok(()),
                        Ok(_) => Err(Rejection::BadSignature),
                    }
                }
                Change::Signature(e) => {
                    let sent = mutate_str(&text(&req.signature), e);
                    bad.signature = Some(sent.clone());
                    match sent.trim() {
                        "" => Err(Rejection::MissingSignature),
                        // Hex digits are read in either case.
                        s if s.eq_ignore_ascii_case(&text(&req.signature)) => Ok(()),
                        _ => Err(Rejection::BadSignature),
                    }
                }
                Change::NoTimestamp => {
                    bad.timestamp = None;
                    Err(Rejection::MissingSignature)
                }
                Change::NoSignature => {
                    bad.signature = None;
                    Err(Rejection::MissingSignature)
                }
            };
            prop_assert_eq!(req.verify(), Ok(()));
            prop_assert_eq!(bad.verify(), want, "{:?}", bad);
            Ok(())
        },
    );
}

#[test]
fn expired_requests_are_refused_whatever_they_carry() {
    let request = (
        signed_request(),
        0..=3_600u64,
        1..=1_000_000_000u64,
        any::<bool>(),
        prop_oneof![
            Just(None),
            "[0-9a-f]{64}".prop_map(Some),
            "\\PC{1,80}".prop_map(Some)
        ],
    );
    check(
        "expired request refused",
        request,
        |(mut req, ttl, beyond, behind, signature)| {
            let signed_at: i64 = req.timestamp.as_deref().unwrap_or("0").parse().unwrap_or(0);
            // Older than the window, or further ahead than the skew allowed.
            let gap = i64::try_from(if behind { ttl } else { MAX_AHEAD_SECS } + beyond)
                .unwrap_or(i64::MAX);
            req.ttl = ttl;
            // Where `now` would overflow, move the signing time instead.
            let (signed_at, now) = match signed_at.checked_add(if behind { gap } else { -gap }) {
                Some(now) => (signed_at, now),
                None => (0, if behind { gap } else { -gap }),
            };
            req.now = now;
            req.timestamp = Some(signed_at.to_string());
            if signature.as_deref().is_some_and(|s| !s.trim().is_empty()) {
                req.signature = signature;
            } else {
                req.signature = Some(sign(&req.key, signed_at, &req.method, &req.path, &req.body));
            }
            prop_assert_eq!(req.verify(), Err(Rejection::Expired));
            Ok(())
        },
    );
}

/// The documented checks in order, with `sign` standing in for the MAC.
fn model(req: &Request) -> Outcome {
    let present = |h: &Option<String>| {
        h.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (Some(ts), Some(sig)) = (present(&req.timestamp), present(&req.signature)) else {
        return Err(Rejection::MissingSignature);
    };
    let signed_at: i64 = ts.parse().map_err(|_| Rejection::BadSignature)?;
    if outside(req.now, signed_at, req.ttl) {
        return Err(Rejection::Expired);
    }
    let expected = sign(&req.key, signed_at, &req.method, &req.path, &req.body);
    // A timestamp written any other way (`+5`, `05`) signs other text; no
    // generated signature matches that but by a 2^-256 chance.
    if ts == signed_at.to_string() && sig.eq_ignore_ascii_case(&expected) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

/// How the arbitrary request's `X-Timestamp` is written.
#[derive(Clone, Debug)]
enum Stamp {
    /// As signed.
    Kept,
    Absent,
    Text(String),
    /// Some seconds off `now`, maybe padded.
    Near(i64, String),
    /// Digits with a sign or leading zeros.
    Digits(String),
}

fn stamp() -> impl Strategy<Value = Stamp> {
    prop_oneof![
        Just(Stamp::Kept),
        Just(Stamp::Absent),
        any::<String>().prop_map(Stamp::Text),
        (-10..=10i64, padding()).prop_map(|(d, p)| Stamp::Near(d, p)),
        "[+-]?0*[0-9]{1,20}".prop_map(Stamp::Digits),
    ]
}

#[test]
fn any_request_is_answered_as_documented() {
    let request = (
        signed_request(),
        prop_oneof![Just(None), any::<i64>().prop_map(Some)],
        prop_oneof![Just(None), any::<u64>().prop_map(Some)],
        stamp(),
        prop_oneof![Just(None), any::<Option<String>>().prop_map(Some)],
    );
    check(
        "arbitrary request",
        request,
        |(mut req, now, ttl, stamp, signature)| {
            req.now = now.unwrap_or(req.now);
            req.ttl = ttl.unwrap_or(req.ttl);
            match stamp {
                Stamp::Kept => {}
                Stamp::Absent => req.timestamp = None,
                Stamp::Text(t) | Stamp::Digits(t) => req.timestamp = Some(t),
                Stamp::Near(d, p) => {
                    req.timestamp = Some(format!("{p}{}{p}", req.now.wrapping_add(d)));
                }
            }
            if let Some(signature) = signature {
                req.signature = signature;
            }
            prop_assert_eq!(req.verify(), model(&req));
            Ok(())
        },
    );
}
