//! Signature verification: whatever the headers, method, path and body, a
//! verdict and never a panic; a request signed with the key within the
//! window is accepted, and the same request with any byte of its body
//! changed is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasks_signing::{MAX_AHEAD_SECS, Rejection, Signed, sign, verify};

const KEY: &[u8] = b"fuzz-key-of-at-least-thirty-two-bytes";
const NOW: i64 = 1_800_000_000;
const TTL: u64 = 5;

fuzz_target!(|data: &[u8]| {
    // timestamp \0 signature \0 method \0 path \0 body
    let mut parts = data.splitn(5, |&b| b == 0);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (ts, sig, method, path) = (text(), text(), text(), text());
    let body = parts.next().unwrap_or_default();
    let given = Signed {
        timestamp: Some(&ts),
        signature: Some(&sig),
        method: &method,
        path: &path,
        body,
    };
    if verify(KEY, &given, NOW, TTL).is_ok() {
        let at: i64 = ts
            .trim()
            .parse()
            .expect("an accepted timestamp is a number");
        assert!(NOW - at <= TTL as i64 && at - NOW <= MAX_AHEAD_SECS as i64);
    }
    // Signed by the key, at a time inside the window: accepted.
    let span = TTL + MAX_AHEAD_SECS + 1;
    let at =
        NOW - (u64::from(data.first().copied().unwrap_or(0)) % span) as i64 + MAX_AHEAD_SECS as i64;
    let good = sign(KEY, at, &method, &path, body);
    let at_text = at.to_string();
    let signed = Signed {
        timestamp: Some(&at_text),
        signature: Some(&good),
        method: &method,
        path: &path,
        body,
    };
    assert_eq!(verify(KEY, &signed, NOW, TTL), Ok(()));
    // Any byte of the body changed: refused.
    if let Some(first) = body.first() {
        let mut changed = body.to_vec();
        changed[0] = first.wrapping_add(1);
        let tampered = Signed {
            body: &changed,
            ..signed
        };
        assert_eq!(
            verify(KEY, &tampered, NOW, TTL),
            Err(Rejection::BadSignature)
        );
    }
});
