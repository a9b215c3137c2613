//! Request counters per KV REST endpoint class.

use serde::Serialize;

/// Counts of requests received (faulted ones included), by endpoint class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Every request except the proxy's own `/__proxy/` ones.
    pub total: u64,
    /// `GET …/values/{key}`.
    pub get: u64,
    /// `PUT …/values/{key}`.
    pub put: u64,
    /// `DELETE …/values/{key}`.
    pub delete: u64,
    /// `GET …/keys`.
    pub list: u64,
    /// `PUT …/bulk`.
    pub bulk_write: u64,
    /// `POST …/bulk/get`.
    pub bulk_get: u64,
    /// `POST …/bulk/delete` and the deprecated `DELETE …/bulk`.
    pub bulk_delete: u64,
    /// Anything else.
    pub other: u64,
    /// Requests answered by a fault rule (status or drop) instead of forwarded.
    pub faulted: u64,
}

/// An endpoint class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Read one value.
    Get,
    /// Write one value.
    Put,
    /// Delete one value.
    Delete,
    /// List keys.
    List,
    /// Bulk write.
    BulkWrite,
    /// Bulk get.
    BulkGet,
    /// Bulk delete.
    BulkDelete,
    /// Anything else.
    Other,
}

/// Classifies a request by method and path (`…/storage/kv/namespaces/{ns}/…`).
pub fn classify(method: &str, path: &str) -> Endpoint {
    const MARK: &str = "/storage/kv/namespaces/";
    let Some(at) = path.find(MARK) else {
        return Endpoint::Other;
    };
    let Some((_ns, tail)) = path[at + MARK.len()..].split_once('/') else {
        return Endpoint::Other;
    };
    let tail = tail.trim_end_matches('/');
    match (method, tail) {
        ("GET", t) if t.starts_with("values/") => Endpoint::Get,
        ("PUT", t) if t.starts_with("values/") => Endpoint::Put,
        ("DELETE", t) if t.starts_with("values/") => Endpoint::Delete,
        ("GET", "keys") => Endpoint::List,
        ("PUT", "bulk") => Endpoint::BulkWrite,
        ("POST", "bulk/get") => Endpoint::BulkGet,
        ("POST", "bulk/delete") | ("DELETE", "bulk") => Endpoint::BulkDelete,
        _ => Endpoint::Other,
    }
}

impl Stats {
    /// Counts one request.
    pub fn count(&mut self, endpoint: Endpoint) {
        self.total += 1;
        let slot = match endpoint {
            Endpoint::Get => &mut self.get,
            Endpoint::Put => &mut self.put,
            Endpoint::Delete => &mut self.delete,
            Endpoint::List => &mut self.list,
            Endpoint::BulkWrite => &mut self.bulk_write,
            Endpoint::BulkGet => &mut self.bulk_get,
            Endpoint::BulkDelete => &mut self.bulk_delete,
            Endpoint::Other => &mut self.other,
        };
        *slot += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let ns = "/cdn-cgi/local/explorer/api/storage/kv/namespaces/abc";
        let prod = "/client/v4/accounts/a1/storage/kv/namespaces/abc";
        let cases = [
            ("GET", format!("{ns}/values/a%2Fb"), Endpoint::Get),
            ("PUT", format!("{prod}/values/k"), Endpoint::Put),
            ("DELETE", format!("{ns}/values/k"), Endpoint::Delete),
            ("GET", format!("{ns}/keys"), Endpoint::List),
            ("PUT", format!("{ns}/bulk"), Endpoint::BulkWrite),
            ("POST", format!("{ns}/bulk/get"), Endpoint::BulkGet),
            ("POST", format!("{ns}/bulk/delete"), Endpoint::BulkDelete),
            ("DELETE", format!("{prod}/bulk"), Endpoint::BulkDelete),
            ("GET", format!("{ns}/metadata/k"), Endpoint::Other),
            ("POST", format!("{ns}/values/k"), Endpoint::Other),
            (
                "GET",
                "/cdn-cgi/local/explorer/api/storage/kv/namespaces".to_owned(),
                Endpoint::Other,
            ),
            ("GET", "/".to_owned(), Endpoint::Other),
        ];
        for (method, path, want) in cases {
            assert_eq!(classify(method, &path), want, "{method} {path}");
        }
    }

    #[test]
    fn counting() {
        let mut s = Stats::default();
        s.count(Endpoint::Get);
        s.count(Endpoint::Get);
        s.count(Endpoint::BulkDelete);
        assert_eq!((s.total, s.get, s.bulk_delete, s.put), (3, 2, 1, 0));
    }
}
