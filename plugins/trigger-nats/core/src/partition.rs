//! Ordered parallelism by key (`partitions` and `ordering_key` of a
//! JetStream entry).
//!
//! A JetStream entry keeps its messages in stream order by having one pull
//! in flight across all instances. With `partitions = P`, the entry becomes
//! P durable consumers on the same stream (`<consumer>-p<i>of<P>`), each
//! with that rule: every instance pulls from all of them, so up to P pulls
//! run at once, spread over the instances, and each consumer's messages stay
//! in stream order. Every consumer is delivered every message; consumer `i`
//! hands the component only those whose key falls in partition `i`, and
//! acknowledges the others with its pull. So the messages of one key are
//! handled by one consumer at a time, in stream order; messages of
//! different keys may be handled at the same time, by one instance or by
//! several.
//!
//! A key is a field of the JSON payload, a token of the subject, or a
//! header; a message without one (not JSON, the field missing or not a
//! string or number, too few tokens) has the empty key, so all of those are
//! handled in one partition, in order. A key's partition is the FNV-1a
//! 64-bit hash of its bytes modulo P: the same on every instance and every
//! version of the plugin.
//!
//! Within a pull, `concurrency = C` splits the messages handed to the
//! component into up to C calls that run at once ([`calls_of`]): every
//! message of a key goes to the same call, in stream order, so a key's
//! messages are still handled in order, one at a time. A call that fails
//! sends its failed message and its later ones back; the other calls'
//! messages are acknowledged with the pull. With partitions, each
//! partition's share of a pull is split the same way.
//!
//! Changing P makes new consumers, which start at the beginning of the
//! stream: the component must recognise what it applied (by stream
//! sequence), instances with the old and new P must not run at the same
//! time (a key would be in two partitions at once), and the old consumers
//! are left for the operator to remove.

/// Most partitions an entry may have.
pub const MAX_PARTITIONS: u32 = 64;
/// Most guest calls at once per pull (`concurrency`).
pub const MAX_CONCURRENCY: u32 = 16;

/// What a message's key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderingKey {
    /// `payload:<path>[|<path>…]`: a field of the JSON payload, a path of
    /// field names separated by dots; the first path that leads to a
    /// string (its text) or a number (as serde_json prints it) gives the
    /// key. Read as serde_json reads a document: of a field given twice,
    /// the last counts.
    PayloadField(Vec<Vec<String>>),
    /// `subject:<n>`: the n-th token of the subject, counting from 1.
    SubjectToken(usize),
    /// `header:<name>`: a header's first value. Names are compared without
    /// case; when a message has the name in several cases, the one written
    /// exactly as configured counts, else the first in byte order.
    Header(String),
}

impl OrderingKey {
    /// Parses `payload:<path>`, `subject:<n>` or `header:<name>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "ordering_key {s:?} must be payload:<path>[|<path>…] (a path: field names joined by dots), \
                 subject:<n> (n from 1) or header:<name>"
            )
        };
        let (kind, arg) = s.split_once(':').ok_or_else(bad)?;
        if arg.is_empty() || arg.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        match kind {
            "payload" => {
                let paths: Vec<Vec<String>> = arg
                    .split('|')
                    .map(|path| path.split('.').map(str::to_owned).collect())
                    .collect();
                if paths.iter().flatten().any(String::is_empty) {
                    return Err(bad());
                }
                Ok(OrderingKey::PayloadField(paths))
            }
            "subject" => match arg.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(OrderingKey::SubjectToken(n)),
                _ => Err(bad()),
            },
            "header" => Ok(OrderingKey::Header(arg.to_owned())),
            _ => Err(bad()),
        }
    }

    /// The key of a message (empty when it has none). `header` looks a
    /// header up by name.
    pub fn of<'a>(
        &self,
        subject: &'a str,
        header: impl Fn(&str) -> Option<&'a str>,
        payload: &[u8],
    ) -> Vec<u8> {
        match self {
            OrderingKey::PayloadField(paths) => payload_key(payload, paths).unwrap_or_default(),
            OrderingKey::SubjectToken(n) => subject
                .split('.')
                .nth(n - 1)
                .map(|t| t.as_bytes().to_vec())
                .unwrap_or_default(),
            OrderingKey::Header(name) => header(name)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for OrderingKey {
    /// As the manifest writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderingKey::PayloadField(paths) => {
                let paths: Vec<String> = paths.iter().map(|p| p.join(".")).collect();
                write!(f, "payload:{}", paths.join("|"))
            }
            OrderingKey::SubjectToken(n) => write!(f, "subject:{n}"),
            OrderingKey::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// Which of an entry's partitions a consumer handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// This consumer's partition, below `count`.
    pub index: u32,
    /// The entry's `partitions`.
    pub count: u32,
}

impl Partition {
    /// The durable consumer name of partition `index` of `count`.
    pub fn durable(base: &str, index: u32, count: u32) -> String {
        format!("{base}-p{index}of{count}")
    }

    /// Whether a message with this key is this partition's.
    pub fn takes(&self, key: &[u8]) -> bool {
        index_of(key, self.count) == self.index
    }
}

/// The consumers among `names` that split the messages of consumer `base`
/// in another number of partitions than `count` (`None`: not partitioned):
/// `base` itself, or `base-p<i>of<Q>` with another Q. Instances still
/// running with them handle every message a second time.
pub fn other_partitionings<'a>(
    base: &str,
    count: Option<u32>,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let split_in = |name: &str| -> Option<Option<u32>> {
        let rest = name.strip_prefix(base)?;
        if rest.is_empty() {
            return Some(None);
        }
        let (i, q) = rest.strip_prefix("-p")?.split_once("of")?;
        let (i, q) = (i.parse::<u32>().ok()?, q.parse::<u32>().ok()?);
        (i < q).then_some(Some(q))
    };
    names
        .into_iter()
        .filter(|name| split_in(name).is_some_and(|q| q != count))
        .map(str::to_owned)
        .collect()
}

/// Which of at most `calls` guest calls each message of a pull goes to,
/// given the messages' keys in stream order: the keys are dealt to the
/// calls in order of first appearance, one key after another, so each
/// call gets about as many keys and every message of one key goes to the
/// same call. Only the pull's own order matters (each instance splits its
/// pulls on its own), so no hash is needed and small pulls spread evenly.
pub fn calls_of<K: AsRef<[u8]>>(keys: &[K], calls: usize) -> Vec<usize> {
    let calls = calls.max(1);
    let mut dealt: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    keys.iter()
        .map(|key| {
            let next = dealt.len() % calls;
            *dealt.entry(key.as_ref()).or_insert(next)
        })
        .collect()
}

/// The partition of `key` among `count`: FNV-1a 64 modulo `count`.
pub fn index_of(key: &[u8], count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The remainder is below `count`, a u32.
    (hash % u64::from(count.max(1))) as u32
}

/// The key of a JSON payload: the first of `paths` that leads to a string
/// or a number.
fn payload_key(payload: &[u8], paths: &[Vec<String>]) -> Option<Vec<u8>> {
    let doc: serde_json::Value = serde_json::from_slice(payload).ok()?;
    paths.iter().find_map(|path| {
        let found = path.iter().try_fold(&doc, |v, field| v.get(field))?;
        match found {
            serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
            serde_json::Value::Number(n) => Some(n.to_string().into_bytes()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(key: &OrderingKey, body: &str) -> Vec<u8> {
        key.of("tasks.created", |_| None, body.as_bytes())
    }

    #[test]
    fn keys_come_from_a_payload_field_a_subject_token_or_a_header() -> Result<(), String> {
        let id = OrderingKey::parse("payload:id")?;
        assert_eq!(payload(&id, r#"{"title":"x","id":"t-1"}"#), b"t-1");
        assert_eq!(payload(&id, r#"{"id":"t-\u0031"}"#), b"t-1");
        assert_eq!(payload(&id, r#"{"id":42}"#), b"42");
        assert_eq!(payload(&id, r#"{"nested":{"id":"no"},"id":"yes"}"#), b"yes");
        // A field given twice: the last, as serde_json (and so the writer) reads it.
        assert_eq!(payload(&id, r#"{"id":"t-A","id":"t-B"}"#), b"t-B");
        // The writer's envelope: data.id when there is data, else id.
        let task = OrderingKey::parse("payload:data.id|id")?;
        assert_eq!(
            payload(&task, r#"{"data":{"id":"t-1"},"correlationId":"c"}"#),
            b"t-1"
        );
        assert_eq!(
            payload(&task, r#"{"id":"decoy","data":{"id":"t-1"}}"#),
            b"t-1"
        );
        assert_eq!(payload(&task, r#"{"id":"t-2","title":"x"}"#), b"t-2");
        assert_eq!(task.to_string(), "payload:data.id|id");
        // No key: the empty one.
        for body in [
            r#"{"title":"x"}"#,
            r#"{"id":null}"#,
            r#"{"id":{"a":1}}"#,
            r#"{"id":["a"]}"#,
            r#"{"id":true}"#,
            "not json",
            r#"{"id":"t-1""#,
            r#"{"id":"t-1"} trailing"#,
            r#"["t-1"]"#,
            "",
        ] {
            assert_eq!(payload(&id, body), b"", "{body}");
        }
        let token = OrderingKey::parse("subject:2")?;
        assert_eq!(token.of("orders.eu.created", |_| None, b""), b"eu");
        assert_eq!(token.of("orders", |_| None, b""), b"");
        let header = OrderingKey::parse("header:Tenant")?;
        let headers = |name: &str| (name == "Tenant").then_some("acme");
        assert_eq!(header.of("a", headers, b""), b"acme");
        assert_eq!(header.of("a", |_| None, b""), b"");
        for written in ["payload:id", "subject:2", "header:Tenant"] {
            assert_eq!(OrderingKey::parse(written)?.to_string(), written);
        }
        for bad in [
            "",
            "id",
            "payload:",
            "subject:0",
            "subject:x",
            "body:id",
            "header:a b",
        ] {
            assert!(OrderingKey::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn a_pull_s_keys_are_dealt_to_the_calls_in_order_each_key_to_one_call() {
        let keys = ["a", "b", "a", "c", "d", "e", "b", "", "c", ""];
        assert_eq!(calls_of(&keys, 3), [0, 1, 0, 2, 0, 1, 1, 2, 2, 2]);
        assert_eq!(calls_of(&keys, 1), [0; 10]);
        assert_eq!(calls_of(&keys, 0), [0; 10], "no calls is one call");
        // More calls than keys: one call per key.
        assert_eq!(calls_of(&["x", "y", "x"], 16), [0, 1, 0]);
        assert!(calls_of::<&str>(&[], 4).is_empty());
    }

    #[test]
    fn a_key_s_partition_is_fnv1a_modulo_the_count_and_spreads_keys_evenly() {
        // FNV-1a 64 of "" and of "a" (published test vectors).
        assert_eq!(
            index_of(b"", u32::MAX),
            (0xcbf2_9ce4_8422_2325_u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            index_of(b"a", u32::MAX),
            (0xaf63_dc4c_8601_ec8c_u64 % u64::from(u32::MAX)) as u32
        );
        let mut per = [0usize; 4];
        for i in 0..10_000 {
            per[index_of(format!("t-{i}").as_bytes(), 4) as usize] += 1;
        }
        assert!(per.iter().all(|n| (2_200..=2_800).contains(n)), "{per:?}");
        let p = Partition {
            index: index_of(b"t-7", 4),
            count: 4,
        };
        assert!(p.takes(b"t-7"));
        assert_eq!(Partition::durable("writer", 2, 4), "writer-p2of4");
        let names = [
            "w", "w-p0of2", "w-p1of2", "w-p0of4", "w-p9of4", "w-x", "wx-p0of2", "other",
        ];
        assert_eq!(other_partitionings("w", Some(2), names), ["w", "w-p0of4"]);
        assert_eq!(
            other_partitionings("w", None, names),
            ["w-p0of2", "w-p1of2", "w-p0of4"]
        );
        assert_eq!(
            other_partitionings("w", Some(4), names),
            ["w", "w-p0of2", "w-p1of2"]
        );
    }
}
