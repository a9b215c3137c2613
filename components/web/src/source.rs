//! [`TaskSource`] over the `tasks:store/reader` import.

use std::cell::RefCell;
use std::time::Instant;
use tasks_domain::{self as domain, ListRequest, Page, ReadError, keys};

use tasks_read::page_cache::{Lookup, PageCache};
use tasks_site::memo::Memo;
use tasks_site::{PageLookup, TaskSource};
use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::{self, LOCAL_STORE};

use crate::bindings::tasks::store::reader;
use crate::bindings::tasks::store::types::{Error, Status, Task};

/// Calls the reader component; one call per request, never per task.
pub(crate) struct Reader;

thread_local! {
    /// First pages this instance served lately (see [`tasks_site::memo`]).
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
    /// When this instance started: the memo's clock counts from it.
    static STARTED: Instant = Instant::now();
}

/// Milliseconds since this instance started.
fn now_ms() -> u64 {
    STARTED.with(|s| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// Forgets the first pages this instance remembers (a purge came).
pub(crate) fn forget_pages() {
    MEMO.with(|m| m.borrow_mut().clear());
}

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
        stream_seq: None,
        stream_epoch: None,
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

    /// Rendered first pages: this instance's memory for 250 ms
    /// ([`tasks_site::memo`]), then the local store next to kv-read's data
    /// pages, under the same generation (see
    /// `tasks_read::page_cache`). Any store trouble means "no cache".
    fn cached_page(&self, key: &str) -> PageLookup {
        let now = now_ms();
        if let Some(body) = MEMO.with(|m| m.borrow().get(key, now).map(<[u8]>::to_vec)) {
            tasks_spin_kv::counters::page_cache(true);
            return PageLookup::Hit(body);
        }
        let Ok(local) = SpinKv::open(LOCAL_STORE) else {
            return PageLookup::Off;
        };
        let cache = PageCache::new(&local, &tasks_spin_kv::unique, &tasks::sees_every_write);
        match cache.lookup(&keys::html_cache(key)) {
            Ok(Lookup::Hit(body)) => {
                tasks_spin_kv::counters::page_cache(true);
                MEMO.with(|m| m.borrow_mut().put(key, now, body.clone()));
                PageLookup::Hit(body)
            }
            Ok(Lookup::Miss(generation)) => {
                tasks_spin_kv::counters::page_cache(false);
                PageLookup::Miss(generation)
            }
            Ok(Lookup::Off) | Err(_) => PageLookup::Off,
        }
    }

    fn store_page(&self, key: &str, generation: &str, body: &[u8]) {
        MEMO.with(|m| m.borrow_mut().put(key, now_ms(), body.to_vec()));
        if let Ok(local) = SpinKv::open(LOCAL_STORE) {
            PageCache::new(&local, &tasks_spin_kv::unique, &tasks::sees_every_write).store(
                &keys::html_cache(key),
                generation,
                body,
            );
        }
    }
}
