//! Cloudflare's limits, checked before any request, and key encoding.

use crate::error::Error;

/// Longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value: 25 MiB.
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
/// Most pairs in one bulk write.
pub const MAX_BULK_WRITE_PAIRS: usize = 10_000;
/// Largest bulk write body: 100 MB.
pub const MAX_BULK_WRITE_BYTES: usize = 100_000_000;
/// Most keys in one bulk get.
pub const MAX_BULK_GET_KEYS: usize = 100;
/// Most keys in one bulk delete.
pub const MAX_BULK_DELETE_KEYS: usize = 10_000;
/// Smallest and largest `limit` of a list call.
pub const LIST_LIMIT_RANGE: std::ops::RangeInclusive<u32> = 10..=1000;

/// Refuses keys Cloudflare would: empty, `.`, `..`, or over 512 bytes.
pub fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::Invalid("empty key".to_owned()));
    }
    if key == "." || key == ".." {
        return Err(Error::Invalid(format!("key {key:?} is not allowed")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::Invalid(format!(
            "key of {} bytes is over the {MAX_KEY_BYTES}-byte limit (starts {:?})",
            key.len(),
            key.chars().take(32).collect::<String>()
        )));
    }
    Ok(())
}

/// Refuses values over 25 MiB.
pub fn check_value(key: &str, len: usize) -> Result<(), Error> {
    if len > MAX_VALUE_BYTES {
        return Err(Error::Invalid(format!(
            "value of {len} bytes for key {key:?} is over the {MAX_VALUE_BYTES}-byte limit"
        )));
    }
    Ok(())
}

/// Percent-encodes `s` as one URL path segment or query value: everything but
/// RFC 3986 unreserved characters, so `/`, `%`, `?`, `#`, spaces and
/// non-ASCII all become `%XX` (UTF-8 bytes).
pub fn encode_component(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_table() {
        let cases = [
            ("plain", "plain"),
            ("task:t-1", "task%3At-1"),
            ("a/b", "a%2Fb"),
            ("100%", "100%25"),
            ("what?", "what%3F"),
            ("#tag", "%23tag"),
            ("a b", "a%20b"),
            ("a+b", "a%2Bb"),
            ("a&b=c", "a%26b%3Dc"),
            ("~._-", "~._-"),
            ("ключ/☃", "%D0%BA%D0%BB%D1%8E%D1%87%2F%E2%98%83"),
            ("..", ".."),
            ("%2F", "%252F"),
        ];
        for (raw, want) in cases {
            assert_eq!(encode_component(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn key_rules() {
        let long = "k".repeat(MAX_KEY_BYTES);
        let too_long = "k".repeat(MAX_KEY_BYTES + 1);
        // 171 three-byte characters = 513 bytes though only 171 chars.
        let wide = "☃".repeat(171);
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("a/b", true),
            ("...", true),
            ("./a", true),
            (&long, true),
            ("", false),
            (".", false),
            ("..", false),
            (&too_long, false),
            (&wide, false),
        ];
        for (key, ok) in cases {
            let got = check_key(key);
            assert_eq!(got.is_ok(), *ok, "{:?}: {got:?}", &key[..key.len().min(20)]);
            if let Err(e) = got {
                assert!(matches!(e, Error::Invalid(_)));
            }
        }
    }

    #[test]
    fn value_rule() {
        assert!(check_value("k", MAX_VALUE_BYTES).is_ok());
        assert!(matches!(
            check_value("k", MAX_VALUE_BYTES + 1),
            Err(Error::Invalid(_))
        ));
    }
}
