//! Task events as producers publish them on NATS, parsed and validated.
//!
//! Two payload shapes are accepted on `tasks.created`, `tasks.updated` and
//! `tasks.deleted`:
//! - flat: `{"id","title","description"?,"status"?,"correlationId"?}`
//! - envelope: `{"correlationId"?, "data": {"id", …}}` (other top-level
//!   metadata keys are ignored).
//!
//! Inside the task object unknown fields are rejected, so a typo such as
//! `titel` is reported instead of silently dropped; `createdAt`, `updatedAt`
//! and `version` are accepted and ignored (the writer owns them).

use serde_json::{Map, Value};

use crate::{Status, validate};

/// Largest payload accepted, in bytes (NATS' default maximum).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// What happened to a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `tasks.created`.
    Created,
    /// `tasks.updated`.
    Updated,
    /// `tasks.deleted`.
    Deleted,
}

impl EventKind {
    /// The kind published on `subject`, if it is one of ours.
    pub fn from_subject(subject: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.subject() == subject)
    }

    /// Every kind, in subject order.
    pub const ALL: [EventKind; 3] = [EventKind::Created, EventKind::Updated, EventKind::Deleted];

    /// The subject it is published on (`tasks.created`, …).
    pub fn subject(self) -> &'static str {
        match self {
            EventKind::Created => "tasks.created",
            EventKind::Updated => "tasks.updated",
            EventKind::Deleted => "tasks.deleted",
        }
    }

    /// `created`, `updated`, `deleted`: the change feed's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
        }
    }

    /// `CREATE`, `UPDATE`, `DELETE`, for logs.
    pub fn verb(self) -> &'static str {
        match self {
            EventKind::Created => "CREATE",
            EventKind::Updated => "UPDATE",
            EventKind::Deleted => "DELETE",
        }
    }
}

/// The fields an event sets. `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// New title (trimmed, validated).
    pub title: Option<String>,
    /// New description; `Some(None)` clears it (JSON `null` or `""`).
    pub description: Option<Option<String>>,
    /// New status.
    pub status: Option<Status>,
}

impl Fields {
    /// True when the event sets nothing.
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.description.is_none() && self.status.is_none()
    }
}

/// A valid event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Created, updated or deleted.
    pub kind: EventKind,
    /// The task's id.
    pub id: String,
    /// What it sets (empty for deletes).
    pub fields: Fields,
    /// The payload's correlation id, when it carries a usable one.
    pub correlation_id: Option<String>,
}

/// Why an event was refused. Permanent: the same payload fails the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// A sentence for the log and the dead-letter record.
    pub reason: String,
    /// The payload's correlation id, when it could be read.
    pub correlation_id: Option<String>,
    /// The task id, when it could be read.
    pub task_id: Option<String>,
}

/// A correlation id safe to log and echo: 1-128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn usable_correlation_id(s: &str) -> bool {
    crate::validate::is_id(s)
}

/// The fields a task object may carry; any other is refused by name.
pub const TASK_FIELDS: [&str; 8] = [
    "id",
    "title",
    "description",
    "status",
    "correlationId",
    "createdAt",
    "updatedAt",
    "version",
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{name} must be a string, not {}", type_name(other))),
    }
}

/// Parses and validates one event.
pub fn parse(subject: &str, payload: &[u8]) -> Result<Event, Rejection> {
    let reject = |reason: String, cid: Option<String>, id: Option<String>| Rejection {
        reason,
        correlation_id: cid,
        task_id: id,
    };
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(reject(
            format!(
                "payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            ),
            None,
            None,
        ));
    }
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| reject(format!("payload is not valid JSON: {e}"), None, None))?;
    let Value::Object(top) = value else {
        return Err(reject(
            format!("payload must be a JSON object, not {}", type_name(&value)),
            None,
            None,
        ));
    };
    let cid_of = |obj: &Map<String, Value>| match obj.get("correlationId") {
        Some(Value::String(s)) if usable_correlation_id(s) => Some(s.clone()),
        _ => None,
    };
    let mut cid = cid_of(&top);
    let task = match top.get("data") {
        Some(Value::Object(data)) => data,
        Some(other) => {
            return Err(reject(
                format!("data must be a JSON object, not {}", type_name(other)),
                cid,
                None,
            ));
        }
        None => &top,
    };
    if cid.is_none() {
        cid = cid_of(task);
    }
    // Kept with a rejection (the dead letter's task) only when it is an id:
    // a line break or a megabyte in it would reach logs and listings.
    let id_hint = task
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| crate::validate::is_id(id))
        .map(str::to_owned);
    let Some(kind) = EventKind::from_subject(subject) else {
        return Err(reject(
            format!(
                "unknown subject {subject:?}: expected tasks.created, tasks.updated or tasks.deleted"
            ),
            cid,
            id_hint,
        ));
    };
    // An envelope's own correlation id must be a string too (a flat
    // payload's is checked with the task's fields).
    if top.contains_key("data")
        && let Err(reason) = string_field(&top, "correlationId")
    {
        return Err(reject(reason, cid, id_hint));
    }
    task_event(kind, task, cid.clone()).map_err(|reason| reject(reason, cid, id_hint))
}

fn task_event(
    kind: EventKind,
    task: &Map<String, Value>,
    cid: Option<String>,
) -> Result<Event, String> {
    if let Some(unknown) = task.keys().find(|k| !TASK_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?}: expected id, title, description, status or correlationId"
        ));
    }
    // Known fields the writer ignores must still have their JSON type.
    for name in ["correlationId", "createdAt", "updatedAt"] {
        string_field(task, name)?;
    }
    match task.get("version") {
        None | Some(Value::Number(_)) => {}
        Some(other) => {
            return Err(format!(
                "version must be a number, not {}",
                type_name(other)
            ));
        }
    }
    let id = string_field(task, "id")?.ok_or("id is required")?;
    validate::validate_id(id).map_err(|e| e.to_string())?;

    let mut fields = Fields::default();
    if kind != EventKind::Deleted {
        if let Some(title) = string_field(task, "title")? {
            fields.title = Some(validate::normalize_title(title).map_err(|e| e.to_string())?);
        }
        fields.description = match task.get("description") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(d)) => {
                validate::validate_description(d).map_err(|e| e.to_string())?;
                Some((!d.trim().is_empty()).then(|| d.clone()))
            }
            Some(other) => {
                return Err(format!(
                    "description must be a string or null, not {}",
                    type_name(other)
                ));
            }
        };
        if let Some(status) = string_field(task, "status")? {
            fields.status = Some(status.parse::<Status>().map_err(|e| e.to_string())?);
        }
    }
    match kind {
        EventKind::Created if fields.title.is_none() => Err("title is required".into()),
        EventKind::Updated if fields.is_empty() => {
            Err("an update must set at least one of title, description or status".into())
        }
        _ => Ok(Event {
            kind,
            id: id.to_owned(),
            fields,
            correlation_id: cid,
        }),
    }
}
