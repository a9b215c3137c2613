//! The listing index: every task id, sorted, in chunks in the local store.
//!
//! Spin's key-value listing returns every key of a store in one call, in no
//! order. Listing 10,000 keys and sorting them on every page view costs more
//! than the page itself, so the sorted ids are kept in the local `default`
//! store and rebuilt only when the `tasks` store's membership stamp
//! ([`keys::TASKS_STAMP`]) differs from the stamp the index was built from.

use serde::{Deserialize, Serialize};
use tasks_domain::keys;

use tasks_kv::{KeyValue, StoreError};

/// Ids per index chunk: a 50-task page reads one chunk, rarely two.
pub const CHUNK_IDS: usize = 1_000;

/// The index head: which build is current and where each chunk starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    /// The membership stamp the index was built from.
    stamp: String,
    /// Names this build's chunk keys.
    build: String,
    /// The first id of each chunk.
    firsts: Vec<String>,
}

/// Where the ids of a listing come from.
pub(crate) enum Index {
    /// A stored index, read chunk by chunk.
    Stored(Head),
    /// Ids listed and sorted during this call.
    Memory(Vec<String>),
}

/// A chunk named by the head is gone (a concurrent rebuild replaced it).
#[derive(Debug)]
pub(crate) enum WalkError {
    ChunkMissing,
    Store(StoreError),
}

impl From<StoreError> for WalkError {
    fn from(e: StoreError) -> Self {
        WalkError::Store(e)
    }
}

fn read_stamp(tasks: &dyn KeyValue) -> Result<String, StoreError> {
    Ok(tasks
        .get(keys::TASKS_STAMP)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default())
}

/// The stored index head, if readable. The local store only caches: a
/// failure there must not fail the read, so it counts as no head.
fn read_head(local: &dyn KeyValue) -> Option<Head> {
    local
        .get(keys::INDEX_HEAD)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The current index: the stored one when its stamp matches, else a rebuild.
/// Returns the index and, after a rebuild, how many ids it holds.
pub(crate) fn load(
    tasks: &dyn KeyValue,
    local: &dyn KeyValue,
) -> Result<(Index, Option<usize>), StoreError> {
    // The stamp is read before the keys are listed, so an index never claims a
    // newer stamp than the keys it holds.
    let stamp = read_stamp(tasks)?;
    match read_head(local) {
        Some(head) if head.stamp == stamp => Ok((Index::Stored(head), None)),
        old => {
            let ids = rebuild(tasks, local, stamp, old)?;
            let n = ids.len();
            Ok((Index::Memory(ids), Some(n)))
        }
    }
}

/// Lists and sorts every task id, stores the index, and returns the ids.
pub(crate) fn rebuild_now(
    tasks: &dyn KeyValue,
    local: &dyn KeyValue,
) -> Result<Vec<String>, StoreError> {
    let stamp = read_stamp(tasks)?;
    rebuild(tasks, local, stamp, read_head(local))
}

fn rebuild(
    tasks: &dyn KeyValue,
    local: &dyn KeyValue,
    stamp: String,
    old: Option<Head>,
) -> Result<Vec<String>, StoreError> {
    let mut ids: Vec<String> = tasks
        .list_keys()?
        .iter()
        .filter_map(|k| keys::task_id(k).map(str::to_owned))
        .collect();
    ids.sort_unstable();
    ids.dedup();

    let build = build_name(&stamp);
    let head = Head {
        stamp,
        build: build.clone(),
        firsts: ids.chunks(CHUNK_IDS).map(|c| c[0].clone()).collect(),
    };
    let mut pairs: Vec<(String, Vec<u8>)> = ids
        .chunks(CHUNK_IDS)
        .enumerate()
        .map(|(n, c)| (keys::index_chunk(&build, n), c.join("\n").into_bytes()))
        .collect();
    let stale: Vec<String> = old
        .map(|o| {
            (0..o.firsts.len())
                .filter(|&n| o.build != build || n >= head.firsts.len())
                .map(|n| keys::index_chunk(&o.build, n))
                .collect()
        })
        .unwrap_or_default();
    // Serialising a struct of strings cannot fail.
    pairs.push((
        keys::INDEX_HEAD.to_owned(),
        serde_json::to_vec(&head).unwrap_or_default(),
    ));
    // Storing the index is an optimisation: this call serves from memory either way.
    if local.set_many(pairs).is_ok() && !stale.is_empty() {
        let _ = local.delete_many(stale);
    }
    Ok(ids)
}

/// FNV-1a of the stamp: chunk keys of different builds never collide.
fn build_name(stamp: &str) -> String {
    let hash = stamp.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Yields the ids after a position, loading chunks as needed. Chunk text is
/// scanned in place: only the ids handed out are allocated.
pub(crate) struct Walker<'a> {
    local: &'a dyn KeyValue,
    source: Source,
    after: Option<String>,
}

enum Source {
    Chunks {
        build: String,
        firsts: Vec<String>,
        next_chunk: usize,
        text: String,
        pos: usize,
    },
    Memory {
        ids: Vec<String>,
        pos: usize,
    },
}

impl<'a> Walker<'a> {
    /// Starts after `after` (exclusive), or at the first id.
    pub(crate) fn new(local: &'a dyn KeyValue, index: Index, after: Option<String>) -> Self {
        let source = match index {
            Index::Stored(head) => Source::Chunks {
                next_chunk: after
                    .as_deref()
                    .map(|a| {
                        head.firsts
                            .partition_point(|f| f.as_str() <= a)
                            .saturating_sub(1)
                    })
                    .unwrap_or(0),
                build: head.build,
                firsts: head.firsts,
                text: String::new(),
                pos: 0,
            },
            Index::Memory(ids) => Source::Memory {
                pos: after
                    .as_deref()
                    .map(|a| ids.partition_point(|id| id.as_str() <= a))
                    .unwrap_or(0),
                ids,
            },
        };
        Walker {
            local,
            source,
            after,
        }
    }

    /// Up to `n` more ids; fewer only at the end.
    pub(crate) fn next_batch(&mut self, n: usize) -> Result<Vec<String>, WalkError> {
        let mut out = Vec::with_capacity(n);
        match &mut self.source {
            Source::Memory { ids, pos } => {
                let end = (*pos + n).min(ids.len());
                out.extend(ids[*pos..end].iter().cloned());
                *pos = end;
            }
            Source::Chunks {
                build,
                firsts,
                next_chunk,
                text,
                pos,
            } => {
                while out.len() < n {
                    if *pos >= text.len() {
                        if *next_chunk >= firsts.len() {
                            break;
                        }
                        let key = keys::index_chunk(build, *next_chunk);
                        let bytes = self.local.get(&key)?.ok_or(WalkError::ChunkMissing)?;
                        *text = String::from_utf8(bytes).map_err(|_| WalkError::ChunkMissing)?;
                        *next_chunk += 1;
                        *pos = 0;
                        continue;
                    }
                    let rest = &text[*pos..];
                    let id = rest.split('\n').next().unwrap_or_default();
                    *pos += id.len() + 1;
                    if !id.is_empty() && self.after.as_deref().is_none_or(|a| id > a) {
                        out.push(id.to_owned());
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_names_differ_per_stamp() {
        assert_ne!(build_name(""), build_name("1"));
        assert_eq!(build_name("abc"), build_name("abc"));
        assert_eq!(build_name("abc").len(), 16);
    }
}
