//! Task status and its spellings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Status {
    /// Created, not started.
    #[default]
    Pending,
    /// Being worked on.
    InProgress,
    /// Done.
    Completed,
    /// Abandoned.
    Cancelled,
}

impl Status {
    /// Every status, in display order.
    pub const ALL: [Status; 4] = [
        Status::Pending,
        Status::InProgress,
        Status::Completed,
        Status::Cancelled,
    ];

    /// The canonical spelling used in JSON and query strings (`in_progress`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }

    /// A label for people (`In progress`).
    pub fn label(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::InProgress => "In progress",
            Status::Completed => "Completed",
            Status::Cancelled => "Cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string that is none of the known spellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}: expected pending, in_progress, completed or cancelled")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    /// Accepts the canonical spelling and the WIT/kebab one (`in-progress`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Status::Pending),
            "in_progress" | "in-progress" => Ok(Status::InProgress),
            "completed" => Ok(Status::Completed),
            "cancelled" => Ok(Status::Cancelled),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let table = [
            ("pending", Status::Pending),
            ("in_progress", Status::InProgress),
            ("in-progress", Status::InProgress),
            ("completed", Status::Completed),
            ("cancelled", Status::Cancelled),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Status>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_unknown_spellings_with_a_readable_message() {
        for bad in ["", "done", "Pending", "in progress", "canceled"] {
            let err = bad.parse::<Status>().expect_err(bad);
            assert!(err.to_string().contains("expected pending"), "{err}");
        }
    }

    #[test]
    fn serializes_canonically() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::to_string(&Status::InProgress)?,
            "\"in_progress\""
        );
        let back: Status = serde_json::from_str("\"in-progress\"")?;
        assert_eq!(back, Status::InProgress);
        Ok(())
    }
}
