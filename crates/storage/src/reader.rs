//! Task lookups and paged listings.

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
}

/// Reads tasks from the `tasks` store, keeping derived data in the `local` store.
pub struct TaskReader<'a> {
    tasks: &'a dyn KeyValue,
    local: &'a dyn KeyValue,
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
        TaskReader { tasks, local }
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
        })
    }
}
