//! Domain types to WIT types and back.

use tasks_domain as domain;

use crate::bindings::tasks::store::types::{Error, Page, Status, Task};

pub(crate) fn status_to_wit(s: domain::Status) -> Status {
    match s {
        domain::Status::Pending => Status::Pending,
        domain::Status::InProgress => Status::InProgress,
        domain::Status::Completed => Status::Completed,
        domain::Status::Cancelled => Status::Cancelled,
    }
}

pub(crate) fn status_from_wit(s: Status) -> domain::Status {
    match s {
        Status::Pending => domain::Status::Pending,
        Status::InProgress => domain::Status::InProgress,
        Status::Completed => domain::Status::Completed,
        Status::Cancelled => domain::Status::Cancelled,
    }
}

pub(crate) fn task_to_wit(t: domain::Task) -> Task {
    Task {
        id: t.id,
        title: t.title,
        description: t.description,
        status: status_to_wit(t.status),
        created_at: t.created_at.millis(),
        updated_at: t.updated_at.millis(),
        version: t.version,
    }
}

pub(crate) fn page_to_wit(p: domain::Page) -> Page {
    Page {
        tasks: p.tasks.into_iter().map(task_to_wit).collect(),
        next_cursor: p.next_cursor,
    }
}

pub(crate) fn error_to_wit(e: domain::ReadError) -> Error {
    match e {
        domain::ReadError::NotFound(id) => Error::NotFound(id),
        domain::ReadError::Invalid(m) => Error::Invalid(m),
        domain::ReadError::Unavailable(m) => Error::Unavailable(m),
        domain::ReadError::Other(m) => Error::Other(m),
    }
}
