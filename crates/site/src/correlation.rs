//! Correlation ids: taken from `X-Correlation-Id` when sane, else generated.

/// The header that carries the id, in and out.
pub use tasks_domain::CORRELATION_HEADER as HEADER;

/// The caller's id when it is 1-128 characters of `A-Z a-z 0-9 . _ : -`
/// (safe to echo and to log: [`tasks_domain::validate::is_id`]), otherwise a
/// fresh UUID v4.
pub fn resolve(header: Option<&str>) -> String {
    match header.map(str::trim) {
        Some(id) if tasks_domain::validate::is_id(id) => id.to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_uuid_v4(s: &str) -> bool {
        uuid::Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 4)
    }

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert_eq!(resolve(Some("req-42")), "req-42");
        assert_eq!(resolve(Some(" abc:1 ")), "abc:1");
        for bad in [
            None,
            Some(""),
            Some("has space"),
            Some("x\r\nSet-Cookie: a"),
            Some(&"a".repeat(129)[..]),
        ] {
            let got = resolve(bad);
            assert!(is_uuid_v4(&got), "{bad:?} -> {got}");
        }
        assert_ne!(resolve(None), resolve(None));
    }
}
