//! Every key-value key spin-tasks writes is built here, prefixed by purpose,
//! so each job enumerates exactly its own keys.
//!
//! Store `tasks` (the backend chosen by runtime config) holds task documents
//! and the membership stamp. Store `default` (always local) holds derived data
//! such as the listing index.

/// Prefix of task documents in the `tasks` store.
pub const TASK_PREFIX: &str = "task:";

/// Key in the `tasks` store that changes whenever a task is added or removed.
///
/// Its value is opaque; readers compare it to the stamp their listing index
/// was built from. Every path that adds or deletes a task document must
/// rewrite it (after the document write), or listings will not see the change.
pub const TASKS_STAMP: &str = "meta:tasks-stamp";

/// Key in the `default` store of the listing index head.
pub const INDEX_HEAD: &str = "idx:tasks:head";

/// Prefix of listing index chunks in the `default` store.
pub const INDEX_CHUNK_PREFIX: &str = "idx:tasks:chunk:";

/// Prefix of dead-letter records in the `default` store.
pub const DLQ_PREFIX: &str = "dlq:";

/// Prefix of deferred events (the outbox) in the `default` store.
pub const OUTBOX_PREFIX: &str = "outbox:";

/// `task:<id>`.
pub fn task(id: &str) -> String {
    format!("{TASK_PREFIX}{id}")
}

/// The id in a `task:<id>` key, or `None` for any other key.
pub fn task_id(key: &str) -> Option<&str> {
    key.strip_prefix(TASK_PREFIX).filter(|id| !id.is_empty())
}

/// `idx:tasks:chunk:<build>:<n>`: chunk `n` of the index built as `build`.
pub fn index_chunk(build: &str, n: usize) -> String {
    format!("{INDEX_CHUNK_PREFIX}{build}:{n}")
}

/// `<millis, 13 digits>-<unique>`: sorts by time, then by the unique part.
fn timed(prefix: &str, at_millis: i64, unique: &str) -> String {
    format!("{prefix}{:013}-{unique}", at_millis.max(0))
}

/// `dlq:<millis>-<unique>`: one dead letter.
pub fn dead_letter(at_millis: i64, unique: &str) -> String {
    timed(DLQ_PREFIX, at_millis, unique)
}

/// `outbox:<millis>-<unique>`: one deferred event.
pub fn outbox(at_millis: i64, unique: &str) -> String {
    timed(OUTBOX_PREFIX, at_millis, unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_keys_round_trip() {
        assert_eq!(task("t-1"), "task:t-1");
        assert_eq!(task_id("task:t-1"), Some("t-1"));
        assert_eq!(task_id("task:"), None);
        assert_eq!(task_id(TASKS_STAMP), None);
        assert_eq!(task_id("idx:tasks:head"), None);
    }

    #[test]
    fn prefixes_do_not_overlap() {
        let keys = [
            TASKS_STAMP,
            INDEX_HEAD,
            &index_chunk("b", 0),
            &task("x"),
            &dead_letter(1, "u"),
            &outbox(1, "u"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert!(!a.starts_with(b) && !b.starts_with(a), "{a} / {b}");
            }
        }
        assert_eq!(index_chunk("5f3a", 2), "idx:tasks:chunk:5f3a:2");
        assert_eq!(dead_letter(1_795_327_314_123, "ab"), "dlq:1795327314123-ab");
        assert_eq!(outbox(42, "x"), "outbox:0000000000042-x");
        assert!(outbox(999, "z") < outbox(1_000, "a"), "time orders first");
    }
}
