//! Query-string parameters of the listing routes.

use tasks_domain::{ListRequest, MAX_LIMIT, ReadError, Status};

/// Reads `cursor`, `limit` and `status`; other parameters are ignored.
/// Empty values count as absent (a filter form may send `status=`).
pub(crate) fn list_request(query: &str) -> Result<ListRequest, ReadError> {
    let mut req = ListRequest::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if value.is_empty() {
            continue;
        }
        match &*name {
            "cursor" => req.cursor = Some(value.into_owned()),
            "limit" => {
                req.limit = Some(value.parse::<u32>().map_err(|_| {
                    ReadError::Invalid(format!(
                        "limit must be a whole number between 1 and {MAX_LIMIT} (got {value:?})"
                    ))
                })?)
            }
            "status" => {
                req.status = Some(
                    value
                        .parse::<Status>()
                        .map_err(|e| ReadError::Invalid(e.to_string()))?,
                )
            }
            _ => {}
        }
    }
    Ok(req)
}

/// A query string for a listing link (`?status=…&cursor=…`), or "" when empty.
pub(crate) fn list_link(
    base: &str,
    status: Option<Status>,
    cursor: Option<&str>,
    limit: Option<u32>,
) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    if let Some(st) = status {
        s.append_pair("status", st.as_str());
    }
    if let Some(l) = limit {
        s.append_pair("limit", &l.to_string());
    }
    if let Some(c) = cursor {
        s.append_pair("cursor", c);
    }
    let q = s.finish();
    if q.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{q}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_parameters() -> Result<(), ReadError> {
        let r = list_request("cursor=abc&limit=10&status=in-progress&utm=x")?;
        assert_eq!(r.cursor.as_deref(), Some("abc"));
        assert_eq!(r.limit, Some(10));
        assert_eq!(r.status, Some(Status::InProgress));
        assert_eq!(list_request("status=&limit=")?, ListRequest::default());
        assert_eq!(list_request("")?, ListRequest::default());
        Ok(())
    }

    #[test]
    fn rejects_bad_values_readably() {
        for (q, needle) in [
            ("limit=ten", "whole number"),
            ("limit=-1", "whole number"),
            ("status=done", "unknown status"),
        ] {
            match list_request(q) {
                Err(ReadError::Invalid(m)) => assert!(m.contains(needle), "{q}: {m}"),
                other => unreachable!("{q}: {other:?}"),
            }
        }
    }

    #[test]
    fn links_round_trip() {
        assert_eq!(list_link("/", None, None, None), "/");
        assert_eq!(
            list_link("/", Some(Status::InProgress), Some("c+/="), Some(5)),
            "/?status=in_progress&limit=5&cursor=c%2B%2F%3D"
        );
    }
}
