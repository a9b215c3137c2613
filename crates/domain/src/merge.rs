//! How an event changes a stored task.

use crate::event::Fields;
use crate::{Status, Task, Timestamp};

/// The task a `tasks.created` event leaves behind.
///
/// A new id starts at version 1 with `createdAt = updatedAt = now` and status
/// `pending` unless given. A create for an existing id overwrites the fields
/// it gives, keeps `createdAt`, and counts as a change (version + 1).
pub fn created(existing: Option<&Task>, id: &str, fields: &Fields, now: Timestamp) -> Task {
    match existing {
        Some(old) => updated(old, fields, now),
        None => Task {
            id: id.to_owned(),
            title: fields.title.clone().unwrap_or_default(),
            description: fields.description.clone().flatten(),
            status: fields.status.unwrap_or(Status::Pending),
            created_at: now,
            updated_at: now,
            version: 1,
            stream_seq: None,
            stream_epoch: None,
        },
    }
}

/// The task a `tasks.updated` event leaves behind: given fields replace the
/// stored ones, `version` grows by one, `updatedAt` becomes `now` (never
/// earlier than the stored time, whatever the clocks say).
pub fn updated(old: &Task, fields: &Fields, now: Timestamp) -> Task {
    Task {
        id: old.id.clone(),
        title: fields.title.clone().unwrap_or_else(|| old.title.clone()),
        description: match &fields.description {
            Some(d) => d.clone(),
            None => old.description.clone(),
        },
        status: fields.status.unwrap_or(old.status),
        created_at: old.created_at,
        updated_at: now.max(old.updated_at),
        version: old.version + 1,
        stream_seq: old.stream_seq,
        stream_epoch: old.stream_epoch,
    }
}
