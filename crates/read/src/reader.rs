//! Task lookups and paged listings.

use serde::{Deserialize, Serialize};
use tasks_domain::{ListRequest, Page, ReadError, Status, Task, cursor, keys, validate};

use crate::index::{self, Index, WalkError, Walker};
use crate::page_cache::{Lookup, PageCache};
use tasks_kv::{KeyValue, StoreError};

/// Ids fetched per batch while filtering by status: most pages fill in one.
const FILTER_BATCH: usize = 200;

/// The most ids one filtered listing request looks at (five batches; on
/// Cloudflare, ten bulk reads). A page that has not filled by then ends
/// short, with a cursor after the last id looked at: the next request goes
/// on from there, so a rare status never makes one request walk the whole
/// index.
pub const MAX_SCANNED: usize = 5 * FILTER_BATCH;

/// A listing and what an operator should hear about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOutcome {
    /// The page.
    pub page: Page,
    /// Stored documents that could not be read, as `key: reason`; left out of the page.
    pub skipped: Vec<String>,
    /// When this call rebuilt the listing index, how many ids it holds.
    pub index_rebuilt: Option<usize>,
    /// Whether the page came from the first-page cache.
    pub cached: bool,
}

/// A first page as the page cache keeps it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedPage {
    tasks: Vec<Task>,
    next_cursor: Option<String>,
}

/// Reads tasks from the `tasks` store, keeping derived data in the `local` store.
pub struct TaskReader<'a> {
    tasks: &'a dyn KeyValue,
    local: &'a dyn KeyValue,
    /// The first-page cache, if on.
    page_cache: Option<PageCache<'a>>,
}

fn store_error(e: StoreError) -> ReadError {
    match e {
        StoreError::Unavailable(m) => ReadError::Unavailable(m),
        StoreError::Other(m) => ReadError::Other(m),
    }
}

impl<'a> TaskReader<'a> {
    /// A reader over the two stores.
    pub fn new(tasks: &'a dyn KeyValue, local: &'a dyn KeyValue) -> Self {
        TaskReader {
            tasks,
            local,
            page_cache: None,
        }
    }

    /// The same reader with the first-page cache on: first pages (no
    /// cursor) are served from `cache` until a task write invalidates it
    /// (see [`crate::page_cache`]).
    pub fn with_page_cache(mut self, cache: PageCache<'a>) -> Self {
        self.page_cache = Some(cache);
        self
    }

    /// One task by id.
    pub fn get_task(&self, id: &str) -> Result<Task, ReadError> {
        validate::validate_id(id).map_err(|e| ReadError::Invalid(e.to_string()))?;
        let bytes = self
            .tasks
            .get(&keys::task(id))
            .map_err(store_error)?
            .ok_or_else(|| ReadError::NotFound(id.to_owned()))?;
        Task::from_json(&bytes)
            .map_err(|e| ReadError::Other(format!("stored task {id:?} is unreadable: {e}")))
    }

    /// Checks the task store answers.
    pub fn probe(&self) -> Result<(), ReadError> {
        self.tasks
            .get(keys::TASKS_STAMP)
            .map(|_| ())
            .map_err(store_error)
    }

    /// One page of tasks ordered by id.
    pub fn list_tasks(&self, req: &ListRequest) -> Result<ListOutcome, ReadError> {
        let limit = req.resolved_limit()?;
        let Some(cache) = self.page_cache.as_ref().filter(|_| req.cursor.is_none()) else {
            return self.list_uncached(req, limit);
        };
        let key = keys::page_cache(req.status.map(Status::as_str), limit);
        let generation = match cache.lookup(&key).map_err(store_error)? {
            Lookup::Hit(bytes) => match serde_json::from_slice::<CachedPage>(&bytes) {
                Ok(page) => {
                    return Ok(ListOutcome {
                        page: Page {
                            tasks: page.tasks,
                            next_cursor: page.next_cursor,
                        },
                        cached: true,
                        ..ListOutcome::default()
                    });
                }
                // Unreadable (never written so): served uncached until a write.
                Err(_) => return self.list_uncached(req, limit),
            },
            Lookup::Miss(generation) => generation,
            Lookup::Off => return self.list_uncached(req, limit),
        };
        let outcome = self.list_uncached(req, limit)?;
        if outcome.skipped.is_empty() {
            let cached = CachedPage {
                tasks: outcome.page.tasks.clone(),
                next_cursor: outcome.page.next_cursor.clone(),
            };
            if let Ok(bytes) = serde_json::to_vec(&cached) {
                cache.store(&key, &generation, &bytes);
            }
        }
        Ok(outcome)
    }

    fn list_uncached(&self, req: &ListRequest, limit: usize) -> Result<ListOutcome, ReadError> {
        let after = req.cursor.as_deref().map(cursor::decode).transpose()?;
        let (index, mut rebuilt) = index::load(self.tasks, self.local).map_err(store_error)?;
        let mut outcome = match self.collect(index, after.clone(), limit, req.status) {
            Ok(o) => o,
            Err(WalkError::ChunkMissing) => {
                // A concurrent rebuild replaced the chunks this head named.
                let ids = index::rebuild_now(self.tasks, self.local).map_err(store_error)?;
                rebuilt = Some(ids.len());
                self.collect(Index::Memory(ids), after, limit, req.status)
                    .map_err(|e| match e {
                        WalkError::Store(e) => store_error(e),
                        WalkError::ChunkMissing => {
                            ReadError::Other("listing index vanished".into())
                        }
                    })?
            }
            Err(WalkError::Store(e)) => return Err(store_error(e)),
        };
        outcome.index_rebuilt = rebuilt;
        Ok(outcome)
    }

    fn collect(
        &self,
        index: Index,
        after: Option<String>,
        limit: usize,
        status: Option<Status>,
    ) -> Result<ListOutcome, WalkError> {
        let mut walker = Walker::new(self.local, index, after);
        // One task beyond the page tells whether a next page exists.
        let need = limit + 1;
        let mut found: Vec<Task> = Vec::with_capacity(need);
        let mut skipped = Vec::new();
        let mut scanned = 0usize;
        let mut last_looked_at: Option<String> = None;
        // The last id looked at when the scan stopped at MAX_SCANNED.
        let mut stopped_at: Option<String> = None;
        while found.len() < need {
            let want = match status {
                Some(_) if scanned >= MAX_SCANNED => {
                    stopped_at = last_looked_at.take();
                    break;
                }
                Some(_) => FILTER_BATCH.max(need - found.len()),
                None => need - found.len(),
            };
            let ids = walker.next_batch(want)?;
            if ids.is_empty() {
                break;
            }
            scanned += ids.len();
            last_looked_at = ids.last().cloned();
            let task_keys: Vec<String> = ids.iter().map(|id| keys::task(id)).collect();
            let values = self.tasks.get_many(&task_keys)?;
            for (key, value) in task_keys.into_iter().zip(values) {
                // Absent: deleted since the index was built.
                let Some(bytes) = value else { continue };
                match Task::from_json(&bytes) {
                    Ok(t) if status.is_none_or(|s| t.status == s) => found.push(t),
                    Ok(_) => {}
                    Err(e) => skipped.push(format!("{key}: {e}")),
                }
            }
        }
        let next_cursor = if found.len() > limit {
            found.truncate(limit);
            found.last().map(|t| cursor::encode(&t.id))
        } else {
            stopped_at.map(|id| cursor::encode(&id))
        };
        Ok(ListOutcome {
            page: Page {
                tasks: found,
                next_cursor,
            },
            skipped,
            index_rebuilt: None,
            cached: false,
        })
    }
}
