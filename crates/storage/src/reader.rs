//! Task lookups and paged listings.

use serde::{Deserialize, Serialize};
use tasks_domain::{ListRequest, Page, ReadError, Status, Task, cursor, keys, validate};

use crate::index::{self, Index, WalkError, Walker};
use crate::{KeyValue, StoreError};

/// Ids fetched per batch while filtering by status: most pages fill in one.
const FILTER_BATCH: usize = 200;

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

/// A first page as the cache keeps it, with the generation it was built under.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedPage {
    generation: String,
    tasks: Vec<Task>,
    next_cursor: Option<String>,
}

/// Reads tasks from the `tasks` store, keeping derived data in the `local` store.
pub struct TaskReader<'a> {
    tasks: &'a dyn KeyValue,
    local: &'a dyn KeyValue,
    /// Makes page-cache generations; `None` leaves the cache off.
    generation: Option<&'a dyn Fn() -> String>,
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
            generation: None,
        }
    }

    /// The same reader with the first-page cache on: first pages (no
    /// cursor) are kept in the local store and served from there until a
    /// task write deletes the generation key ([`keys::PAGE_CACHE_GEN`]).
    /// `generation` makes a fresh unique value when there is none.
    ///
    /// Safe against a concurrent write because the order is fixed on both
    /// sides: the reader reads (or creates) the generation *before* it reads
    /// the documents, the writer deletes it *after* its write commits. A page
    /// built from documents older than a write therefore always carries a
    /// generation that write deleted.
    pub fn with_page_cache(mut self, generation: &'a dyn Fn() -> String) -> Self {
        self.generation = Some(generation);
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
        let Some(make_generation) = self.generation.filter(|_| req.cursor.is_none()) else {
            return self.list_uncached(req, limit);
        };
        let key = keys::page_cache(req.status.map(Status::as_str), limit);
        let wanted = [keys::PAGE_CACHE_GEN.to_owned(), key.clone()];
        let mut found = self
            .local
            .get_many(&wanted)
            .map_err(store_error)?
            .into_iter();
        let generation = found
            .next()
            .flatten()
            .map(|g| String::from_utf8_lossy(&g).into_owned());
        if let (Some(generation), Some(Some(bytes))) = (&generation, found.next())
            && let Ok(page) = serde_json::from_slice::<CachedPage>(&bytes)
            && &page.generation == generation
        {
            return Ok(ListOutcome {
                page: Page {
                    tasks: page.tasks,
                    next_cursor: page.next_cursor,
                },
                cached: true,
                ..ListOutcome::default()
            });
        }
        let generation = match generation {
            Some(g) => g,
            None => {
                let g = make_generation();
                self.local
                    .set_many(vec![(
                        keys::PAGE_CACHE_GEN.to_owned(),
                        g.clone().into_bytes(),
                    )])
                    .map_err(store_error)?;
                g
            }
        };
        let outcome = self.list_uncached(req, limit)?;
        if outcome.skipped.is_empty() {
            let cached = CachedPage {
                generation,
                tasks: outcome.page.tasks.clone(),
                next_cursor: outcome.page.next_cursor.clone(),
            };
            // A cache that cannot be written only costs the next reader.
            if let Ok(bytes) = serde_json::to_vec(&cached) {
                let _ = self.local.set_many(vec![(key, bytes)]);
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
        while found.len() < need {
            let want = match status {
                Some(_) => FILTER_BATCH.max(need - found.len()),
                None => need - found.len(),
            };
            let ids = walker.next_batch(want)?;
            if ids.is_empty() {
                break;
            }
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
            None
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
