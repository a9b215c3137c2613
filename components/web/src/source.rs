//! [`TaskSource`] over the `tasks:store/reader` import.

use tasks_domain::{self as domain, ListRequest, Page, ReadError, keys};
use tasks_site::{PageLookup, TaskSource};
use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::{self, LOCAL_STORE};
use tasks_storage::KeyValue;

use crate::bindings::tasks::store::reader;
use crate::bindings::tasks::store::types::{Error, Status, Task};

/// Calls the reader component; one call per request, never per task.
pub(crate) struct Reader;

fn error_from_wit(e: Error) -> ReadError {
    match e {
        Error::NotFound(id) => ReadError::NotFound(id),
        Error::Invalid(m) => ReadError::Invalid(m),
        Error::Unavailable(m) => ReadError::Unavailable(m),
        Error::Other(m) => ReadError::Other(m),
    }
}

fn status_to_wit(s: domain::Status) -> Status {
    match s {
        domain::Status::Pending => Status::Pending,
        domain::Status::InProgress => Status::InProgress,
        domain::Status::Completed => Status::Completed,
        domain::Status::Cancelled => Status::Cancelled,
    }
}

fn status_from_wit(s: Status) -> domain::Status {
    match s {
        Status::Pending => domain::Status::Pending,
        Status::InProgress => domain::Status::InProgress,
        Status::Completed => domain::Status::Completed,
        Status::Cancelled => domain::Status::Cancelled,
    }
}

fn task_from_wit(t: Task) -> domain::Task {
    domain::Task {
        id: t.id,
        title: t.title,
        description: t.description,
        status: status_from_wit(t.status),
        created_at: domain::Timestamp(t.created_at),
        updated_at: domain::Timestamp(t.updated_at),
        version: t.version,
    }
}

impl TaskSource for Reader {
    fn get_task(&self, id: &str, correlation_id: &str) -> Result<domain::Task, ReadError> {
        reader::get_task(id, correlation_id)
            .map(task_from_wit)
            .map_err(error_from_wit)
    }

    fn list_tasks(&self, req: &ListRequest, correlation_id: &str) -> Result<Page, ReadError> {
        reader::list_tasks(
            req.cursor.as_deref(),
            req.limit,
            req.status.map(status_to_wit),
            correlation_id,
        )
        .map(|p| Page {
            tasks: p.tasks.into_iter().map(task_from_wit).collect(),
            next_cursor: p.next_cursor,
        })
        .map_err(error_from_wit)
    }

    fn probe(&self, correlation_id: &str) -> Result<(), ReadError> {
        reader::probe(correlation_id).map_err(error_from_wit)
    }

    /// Rendered first pages live in the local store next to kv-read's page
    /// cache and share its generation (`cache:gen`, deleted by every task
    /// write): `<generation>\n<html>`. Any store trouble means "no cache".
    fn cached_page(&self, key: &str) -> PageLookup {
        let Ok(local) = SpinKv::open(LOCAL_STORE) else {
            return PageLookup::Off;
        };
        let wanted = [keys::PAGE_CACHE_GEN.to_owned(), html_key(key)];
        let Ok(found) = local.get_many(&wanted) else {
            return PageLookup::Off;
        };
        let mut found = found.into_iter();
        let generation = found.next().flatten();
        if let (Some(generation), Some(Some(stored))) = (&generation, found.next())
            && let Some(body) = stored
                .strip_prefix(generation.as_slice())
                .and_then(|rest| rest.strip_prefix(b"\n"))
        {
            return PageLookup::Hit(body.to_vec());
        }
        // On Cloudflare other instances write too: the working copy's TTL
        // is the cache there, so nothing is stored (and so nothing is hit:
        // the backend is checked on a miss only, off the hot path).
        if tasks::backend() != Ok(tasks::Backend::Spin) {
            return PageLookup::Off;
        }
        match generation {
            Some(g) => PageLookup::Miss(String::from_utf8_lossy(&g).into_owned()),
            None => {
                let g = tasks_spin_kv::unique();
                let made = local.set_many(vec![(
                    keys::PAGE_CACHE_GEN.to_owned(),
                    g.clone().into_bytes(),
                )]);
                match made {
                    Ok(()) => PageLookup::Miss(g),
                    Err(_) => PageLookup::Off,
                }
            }
        }
    }

    fn store_page(&self, key: &str, generation: &str, body: &[u8]) {
        if let Ok(local) = SpinKv::open(LOCAL_STORE) {
            let mut value = Vec::with_capacity(generation.len() + 1 + body.len());
            value.extend_from_slice(generation.as_bytes());
            value.push(b'\n');
            value.extend_from_slice(body);
            // A cache that cannot be written only costs the next request.
            let _ = local.set_many(vec![(html_key(key), value)]);
        }
    }
}

fn html_key(key: &str) -> String {
    format!("{}{key}", keys::HTML_CACHE_PREFIX)
}
