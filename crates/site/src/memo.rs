//! The first list pages one web instance rendered lately, kept in its
//! memory and served for up to [`MEMO_MILLIS`] without asking the store.
//!
//! A product decision (the read side's ceiling): the first page may be up to
//! 250 ms stale within an instance. Open pages update live from
//! `/api/events`, and the page's `Cache-Control` has browsers revalidate.
//! A purge through the instance empties it at once.

/// How long a remembered page is served, in milliseconds.
pub const MEMO_MILLIS: u64 = 250;

/// Pages remembered at most (one per status filter and limit asked for).
const MAX_PAGES: usize = 16;

/// The remembered pages: (key, when rendered or read in ms, body).
#[derive(Debug, Default)]
pub struct Memo {
    pages: Vec<(String, u64, Vec<u8>)>,
}

impl Memo {
    /// The page under `key` if it was remembered less than [`MEMO_MILLIS`]
    /// before `now_ms` (a clock that only goes forward).
    pub fn get(&self, key: &str, now_ms: u64) -> Option<&[u8]> {
        self.pages
            .iter()
            .find(|(k, at, _)| k == key && now_ms.saturating_sub(*at) < MEMO_MILLIS)
            .map(|(_, _, body)| body.as_slice())
    }

    /// Remembers `body` under `key` as of `now_ms`; the oldest page goes
    /// when [`MAX_PAGES`] are kept.
    pub fn put(&mut self, key: &str, now_ms: u64, body: Vec<u8>) {
        self.pages.retain(|(k, _, _)| k != key);
        if self.pages.len() >= MAX_PAGES {
            self.pages.remove(0);
        }
        self.pages.push((key.to_owned(), now_ms, body));
    }

    /// Forgets every page (a purge).
    pub fn clear(&mut self) {
        self.pages.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_served_for_250_ms_then_read_again_and_a_purge_forgets_it() {
        let mut memo = Memo::default();
        memo.put("all:50", 1_000, b"page".to_vec());
        assert_eq!(memo.get("all:50", 1_000), Some(&b"page"[..]));
        assert_eq!(memo.get("all:50", 1_249), Some(&b"page"[..]));
        assert_eq!(memo.get("all:50", 1_250), None, "stale");
        assert_eq!(memo.get("pending:50", 1_000), None, "another key");
        memo.put("all:50", 1_300, b"newer".to_vec());
        assert_eq!(memo.get("all:50", 1_301), Some(&b"newer"[..]));
        for i in 0..MAX_PAGES {
            memo.put(&format!("k{i}"), 1_400, Vec::new());
        }
        assert_eq!(memo.pages.len(), MAX_PAGES, "bounded");
        assert_eq!(memo.get("all:50", 1_401), None, "the oldest went first");
        memo.clear();
        assert_eq!(memo.get("k3", 1_401), None);
    }
}
