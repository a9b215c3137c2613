//! The task record and its JSON form.

use serde::{Deserialize, Serialize};

use crate::{Status, Timestamp, ValidationError, validate};

/// One task, as stored and as served by the JSON API.
///
/// JSON is camelCase: `id, title, description, status, createdAt, updatedAt, version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Unique id.
    pub id: String,
    /// Trimmed title.
    pub title: String,
    /// Optional free text (`null` in JSON when absent).
    #[serde(default)]
    pub description: Option<String>,
    /// Current status.
    #[serde(default)]
    pub status: Status,
    /// When first created.
    pub created_at: Timestamp,
    /// When last changed.
    pub updated_at: Timestamp,
    /// 1 on creation, +1 on every change.
    pub version: u64,
    /// The stream sequence of the last event applied to it, when events come
    /// from a JetStream stream: a redelivered event at or below it is not
    /// applied again. Only in the stored document: the reader interface, and
    /// so the API, leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<u64>,
    /// The epoch of the stream `stream_seq` is in (see
    /// [`crate::StreamPos`]); stored documents only, like it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_epoch: Option<u64>,
}

impl Task {
    /// Where the last event applied to it stands in its stream, if known.
    pub fn stream_pos(&self) -> Option<crate::StreamPos> {
        crate::StreamPos::from_parts(self.stream_seq, self.stream_epoch)
    }

    /// Checks every field against the rules in [`validate`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::validate_id(&self.id)?;
        if validate::normalize_title(&self.title)? != self.title {
            return Err(ValidationError {
                field: "title",
                message: "title must not start or end with whitespace".into(),
            });
        }
        if let Some(d) = &self.description {
            validate::validate_description(d)?;
        }
        Ok(())
    }

    /// The stored JSON document.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<Task, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Task {
        Task {
            id: "t-1".into(),
            title: "Buy milk".into(),
            description: Some("2 litres, \"organic\" <b>".into()),
            status: Status::InProgress,
            created_at: Timestamp(1_795_327_314_123),
            updated_at: Timestamp(1_795_327_315_000),
            version: 3,
            stream_seq: None,
            stream_epoch: None,
        }
    }

    #[test]
    fn json_form_is_camel_case_with_rfc3339_times() -> Result<(), serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(&sample().to_json())?;
        assert_eq!(
            value,
            serde_json::json!({
                "id": "t-1",
                "title": "Buy milk",
                "description": "2 litres, \"organic\" <b>",
                "status": "in_progress",
                "createdAt": "2026-11-22T06:01:54.123Z",
                "updatedAt": "2026-11-22T06:01:55.000Z",
                "version": 3
            })
        );
        Ok(())
    }

    #[test]
    fn json_round_trips() -> Result<(), serde_json::Error> {
        let task = sample();
        assert_eq!(Task::from_json(&task.to_json())?, task);
        let bare = Task {
            description: None,
            status: Status::Pending,
            ..sample()
        };
        assert_eq!(Task::from_json(&bare.to_json())?, bare);
        Ok(())
    }

    #[test]
    fn absent_optional_fields_take_defaults() -> Result<(), serde_json::Error> {
        let doc = br#"{"id":"a","title":"b","createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z","version":1}"#;
        let task = Task::from_json(doc)?;
        assert_eq!(task.description, None);
        assert_eq!(task.status, Status::Pending);
        Ok(())
    }

    #[test]
    fn rejects_bad_documents() {
        for doc in [
            &br#"{"id":"a"}"#[..],
            br#"{"id":"a","title":"b","status":"done","createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z","version":1}"#,
            br#"{"id":"a","title":"b","createdAt":"soon","updatedAt":"2026-01-01T00:00:00Z","version":1}"#,
            b"\xff\xfe",
        ] {
            assert!(Task::from_json(doc).is_err(), "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn validate_checks_every_field() {
        assert_eq!(sample().validate(), Ok(()));
        let bad_id = Task {
            id: "a b".into(),
            ..sample()
        };
        assert_eq!(bad_id.validate().map_err(|e| e.field), Err("id"));
        let padded = Task {
            title: " x".into(),
            ..sample()
        };
        assert_eq!(padded.validate().map_err(|e| e.field), Err("title"));
        let long = Task {
            description: Some("d".repeat(4_001)),
            ..sample()
        };
        assert_eq!(long.validate().map_err(|e| e.field), Err("description"));
    }
}
