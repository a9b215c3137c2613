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
//! Changing P makes new consumers, which start at the beginning of the
//! stream: the component must recognise what it applied (by stream
//! sequence), instances with the old and new P must not run at the same
//! time (a key would be in two partitions at once), and the old consumers
//! are left for the operator to remove.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Most partitions an entry may have.
pub const MAX_PARTITIONS: u32 = 64;

/// What a message's key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderingKey {
    /// `payload:<field>`: a top-level field of the JSON payload (a string,
    /// as its text; a number, as written).
    PayloadField(String),
    /// `subject:<n>`: the n-th token of the subject, counting from 1.
    SubjectToken(usize),
    /// `header:<name>`: a header's first value (names compared without case).
    Header(String),
}

impl OrderingKey {
    /// Parses `payload:<field>`, `subject:<n>` or `header:<name>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "ordering_key {s:?} must be payload:<field>, subject:<n> (n from 1) or header:<name>"
            )
        };
        let (kind, arg) = s.split_once(':').ok_or_else(bad)?;
        if arg.is_empty() || arg.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        match kind {
            "payload" => Ok(OrderingKey::PayloadField(arg.to_owned())),
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
            OrderingKey::PayloadField(field) => payload_field(payload, field).unwrap_or_default(),
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

/// Which of an entry's partitions a consumer handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// How keys are found.
    pub key: OrderingKey,
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

/// A top-level string or number field of a JSON object, read without
/// building the rest of the document.
fn payload_field(payload: &[u8], field: &str) -> Option<Vec<u8>> {
    struct Find<'f>(&'f str);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<Vec<u8>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if name == self.0 && found.is_none() {
                    found = map.next_value::<Scalar>()?.0;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let found = de.deserialize_map(Find(field)).ok()?;
    de.end().ok()?;
    found
}

/// A string (its text) or a number (as written); anything else is none.
struct Scalar(Option<Vec<u8>>);

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.as_bytes().to_vec())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string().into_bytes())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string().into_bytes())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string().into_bytes())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
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
            key: OrderingKey::SubjectToken(1),
            index: index_of(b"t-7", 4),
            count: 4,
        };
        assert!(p.takes(b"t-7"));
        assert_eq!(Partition::durable("writer", 2, 4), "writer-p2of4");
    }
}
