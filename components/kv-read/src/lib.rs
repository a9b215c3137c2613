//! `kv-read`: exports `tasks:store/reader` over Spin's key-value API.
//!
//! A thin adapter: WIT types in, [`tasks_read::TaskReader`] does the work
//! over the `tasks` store (task documents) and the local `default` store
//! (listing index, first-page cache), WIT types out. A call that went as
//! expected logs nothing (web logs each request in one line, correlation id
//! first); a line comes only for what an operator acts on: a store error,
//! and a listing that rebuilt its index or skipped unreadable tasks.

mod convert;

use std::time::Instant;

use tasks_domain::{ListRequest, ReadError};
use tasks_kv::StoreError;
use tasks_read::TaskReader;
use tasks_read::page_cache::PageCache;
use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::{self, LOCAL_STORE, TasksStore};

/// Generated bindings: the only code here that needs `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "reader-provider",
        path: "../../wit/tasks-store",
    });

    use super::KvRead;
    export!(KvRead);
}

use bindings::exports::tasks::store::reader::Guest;
use bindings::tasks::store::types::{Error, Page, Status, Task};

fn open(label: &'static str) -> Result<SpinKv, ReadError> {
    SpinKv::open(label).map_err(|e| match e {
        StoreError::Unavailable(m) => ReadError::Unavailable(m),
        StoreError::Other(m) => ReadError::Other(m),
    })
}

struct KvRead;

fn elapsed_ms(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

/// What an operator should see of a call's result, if anything: `ok`'s
/// note for a success (`None`: nothing worth a line), the error for a
/// failure; a task not found is an answer, not a failure.
fn noteworthy<T>(
    r: &Result<T, ReadError>,
    ok: impl FnOnce(&T) -> Option<String>,
) -> Option<String> {
    match r {
        Ok(v) => ok(v),
        Err(ReadError::NotFound(_)) => None,
        Err(e) => Some(format!("error {}: {e}", e.code())),
    }
}

impl Guest for KvRead {
    fn get_task(id: String, correlation_id: String) -> Result<Task, Error> {
        let start = Instant::now();
        // Lookups never touch the local store; the reader needs one, so
        // hand it the same store.
        let tasks = TasksStore::from_config();
        let result = TaskReader::new(&tasks, &tasks).get_task(&id);
        if let Some(note) = noteworthy(&result, |_| None) {
            println!(
                "[{correlation_id}] RPC getTask({}) → {note} ({} ms)",
                tasks_domain::validate::loggable(&id),
                elapsed_ms(start)
            );
        }
        result
            .map(convert::task_to_wit)
            .map_err(convert::error_to_wit)
    }

    fn list_tasks(
        cursor: Option<String>,
        limit: Option<u32>,
        status: Option<Status>,
        correlation_id: String,
    ) -> Result<Page, Error> {
        let start = Instant::now();
        let req = ListRequest {
            cursor,
            limit,
            status: status.map(convert::status_from_wit),
        };
        // The tasks store opens only if the page is not cached.
        let tasks = TasksStore::from_config();
        let result = open(LOCAL_STORE).and_then(|local| {
            let cache = PageCache::new(&local, &tasks_spin_kv::unique, &tasks::sees_every_write);
            TaskReader::new(&tasks, &local)
                .with_page_cache(cache)
                .list_tasks(&req)
        });
        let shown_limit = req.limit.unwrap_or(tasks_domain::DEFAULT_LIMIT);
        let filter = req
            .status
            .map(|s| format!(", status={s}"))
            .unwrap_or_default();
        let note = noteworthy(&result, |o| {
            if o.index_rebuilt.is_none() && o.skipped.is_empty() {
                return None;
            }
            let mut s = format!("{} tasks", o.page.tasks.len());
            if let Some(n) = o.index_rebuilt {
                s.push_str(&format!(", index rebuilt ({n} ids)"));
            }
            if !o.skipped.is_empty() {
                s.push_str(&format!(
                    ", {} unreadable skipped: {}",
                    o.skipped.len(),
                    o.skipped.join("; ")
                ));
            }
            Some(s)
        });
        if let Some(note) = note {
            println!(
                "[{correlation_id}] RPC listTasks(limit={shown_limit}{filter}) → {note} ({} ms)",
                elapsed_ms(start)
            );
        }
        result
            .map(|o| convert::page_to_wit(o.page))
            .map_err(convert::error_to_wit)
    }

    fn probe(correlation_id: String) -> Result<(), Error> {
        let start = Instant::now();
        let tasks = TasksStore::from_config();
        let result = TaskReader::new(&tasks, &tasks).probe();
        if let Some(note) = noteworthy(&result, |_| None) {
            println!(
                "[{correlation_id}] RPC probe → {note} ({} ms)",
                elapsed_ms(start)
            );
        }
        result.map_err(convert::error_to_wit)
    }
}
