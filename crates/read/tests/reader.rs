//! The reader over an in-memory store: lookups, paging, filters, the index.

use tasks_domain::{ListRequest, ReadError, Status, Task, Timestamp, keys};
use tasks_kv::KeyValue;
use tasks_kv::testing::MemoryKv;
use tasks_read::{CHUNK_IDS, TaskReader};

fn task(id: &str, status: Status) -> Task {
    Task {
        id: id.to_owned(),
        title: format!("Task {id}"),
        description: None,
        status,
        created_at: Timestamp(1_000),
        updated_at: Timestamp(2_000),
        version: 1,
        stream_seq: None,
        stream_epoch: None,
    }
}

/// Stores `n` tasks `t-0000`..; every third one completed. Sets the stamp.
fn seeded(n: usize) -> MemoryKv {
    let kv = MemoryKv::new();
    for i in 0..n {
        let status = if i % 3 == 0 {
            Status::Completed
        } else {
            Status::Pending
        };
        let t = task(&format!("t-{i:05}"), status);
        kv.put(&keys::task(&t.id), t.to_json());
    }
    kv.put(keys::TASKS_STAMP, format!("seed-{n}"));
    kv
}

fn list(
    r: &TaskReader,
    cursor: Option<String>,
    limit: Option<u32>,
    status: Option<Status>,
) -> Result<tasks_read::ListOutcome, ReadError> {
    r.list_tasks(&ListRequest {
        cursor,
        limit,
        status,
    })
}

/// Pages through everything; returns ids and page sizes.
fn walk(
    r: &TaskReader,
    limit: u32,
    status: Option<Status>,
) -> Result<(Vec<String>, Vec<usize>), ReadError> {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = None;
    loop {
        let out = list(r, cursor, Some(limit), status)?;
        sizes.push(out.page.tasks.len());
        ids.extend(out.page.tasks.into_iter().map(|t| t.id));
        match out.page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok((ids, sizes)),
        }
    }
}

#[test]
fn get_task_finds_reports_missing_and_rejects_bad_ids() -> Result<(), ReadError> {
    let tasks = seeded(3);
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    assert_eq!(r.get_task("t-00001")?.title, "Task t-00001");
    assert_eq!(r.get_task("nope"), Err(ReadError::NotFound("nope".into())));
    assert!(
        matches!(r.get_task("a b"), Err(ReadError::Invalid(m)) if m.contains("id may only contain"))
    );
    tasks.put(&keys::task("broken"), "{not json");
    assert!(matches!(r.get_task("broken"), Err(ReadError::Other(m)) if m.contains("unreadable")));
    tasks.set_down(true);
    assert!(matches!(
        r.get_task("t-00001"),
        Err(ReadError::Unavailable(_))
    ));
    assert!(matches!(r.probe(), Err(ReadError::Unavailable(_))));
    Ok(())
}

#[test]
fn empty_store_lists_an_empty_last_page() -> Result<(), ReadError> {
    let (tasks, local) = (MemoryKv::new(), MemoryKv::new());
    let out = list(&TaskReader::new(&tasks, &local), None, None, None)?;
    assert!(out.page.tasks.is_empty());
    assert_eq!(out.page.next_cursor, None);
    Ok(())
}

#[test]
fn pages_cover_every_task_once_in_id_order() -> Result<(), ReadError> {
    let tasks = seeded(120);
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    let (ids, sizes) = walk(&r, 50, None)?;
    assert_eq!(sizes, vec![50, 50, 20]);
    let want: Vec<String> = (0..120).map(|i| format!("t-{i:05}")).collect();
    assert_eq!(ids, want);
    // Default limit is 50.
    assert_eq!(list(&r, None, None, None)?.page.tasks.len(), 50);
    Ok(())
}

#[test]
fn exact_multiple_has_no_empty_trailing_page() -> Result<(), ReadError> {
    let tasks = seeded(100);
    let local = MemoryKv::new();
    let (_, sizes) = walk(&TaskReader::new(&tasks, &local), 50, None)?;
    assert_eq!(sizes, vec![50, 50]);
    Ok(())
}

#[test]
fn status_filter_pages_through_matches_only() -> Result<(), ReadError> {
    let tasks = seeded(1_000);
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    let (ids, sizes) = walk(&r, 100, Some(Status::Completed))?;
    assert_eq!(ids.len(), 334);
    assert_eq!(sizes, vec![100, 100, 100, 34]);
    for id in &ids {
        assert_eq!(r.get_task(id)?.status, Status::Completed);
    }
    let (none, _) = walk(&r, 10, Some(Status::Cancelled))?;
    assert!(none.is_empty());
    Ok(())
}

#[test]
fn invalid_limits_and_cursors_are_invalid_input() {
    let (tasks, local) = (seeded(5), MemoryKv::new());
    let r = TaskReader::new(&tasks, &local);
    for limit in [0, 201] {
        assert!(
            matches!(list(&r, None, Some(limit), None), Err(ReadError::Invalid(m)) if m.contains("limit"))
        );
    }
    assert!(
        matches!(list(&r, Some("garbage!".into()), None, None), Err(ReadError::Invalid(m)) if m.contains("cursor"))
    );
}

#[test]
fn index_is_built_once_then_pages_cost_four_calls() -> Result<(), ReadError> {
    let tasks = seeded(2_500);
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    let first = list(&r, None, None, None)?;
    assert_eq!(first.index_rebuilt, Some(2_500));
    assert_eq!(tasks.calls().list_keys, 1);
    assert_eq!(local.keys_with_prefix(keys::INDEX_CHUNK_PREFIX).len(), 3);

    tasks.reset_calls();
    local.reset_calls();
    let second = list(&r, first.page.next_cursor, None, None)?;
    assert_eq!(second.index_rebuilt, None);
    assert_eq!(second.page.tasks[0].id, "t-00050");
    // stamp get + one get-many on tasks; head get + one chunk get on local.
    assert_eq!(
        (
            tasks.calls().get,
            tasks.calls().get_many,
            tasks.calls().list_keys
        ),
        (1, 1, 0)
    );
    assert_eq!((local.calls().get, local.calls().set_many), (2, 0));
    Ok(())
}

#[test]
fn paging_crosses_chunk_boundaries() -> Result<(), ReadError> {
    let n = CHUNK_IDS * 2 + 7;
    let tasks = seeded(n);
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    list(&r, None, None, None)?; // builds the index
    let (ids, _) = walk(&r, 200, None)?;
    assert_eq!(ids.len(), n);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        tasks.calls().list_keys,
        1,
        "walked the stored index, no rebuild"
    );
    Ok(())
}

#[test]
fn a_new_stamp_rebuilds_and_drops_old_chunks() -> Result<(), ReadError> {
    let tasks = seeded(10);
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    list(&r, None, None, None)?;
    let old_chunks = local.keys_with_prefix(keys::INDEX_CHUNK_PREFIX);

    let t = task("a-first", Status::Pending);
    tasks.put(&keys::task(&t.id), t.to_json());
    // Without a new stamp the index is trusted: the contract writers keep.
    assert_eq!(list(&r, None, Some(1), None)?.page.tasks[0].id, "t-00000");
    tasks.put(keys::TASKS_STAMP, "after-insert");
    let out = list(&r, None, Some(1), None)?;
    assert_eq!(out.index_rebuilt, Some(11));
    assert_eq!(out.page.tasks[0].id, "a-first");
    let new_chunks = local.keys_with_prefix(keys::INDEX_CHUNK_PREFIX);
    assert_eq!(new_chunks.len(), 1);
    assert_ne!(new_chunks, old_chunks);
    Ok(())
}

#[test]
fn a_vanished_chunk_falls_back_to_a_rebuild() -> Result<(), ReadError> {
    let tasks = seeded(30);
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    list(&r, None, None, None)?;
    for k in local.keys_with_prefix(keys::INDEX_CHUNK_PREFIX) {
        local.remove(&k);
    }
    let out = list(&r, None, Some(5), None)?;
    assert_eq!(out.page.tasks.len(), 5);
    assert_eq!(out.index_rebuilt, Some(30));
    Ok(())
}

#[test]
fn local_store_failure_still_serves_from_memory() -> Result<(), ReadError> {
    let tasks = seeded(7);
    let local = MemoryKv::new();
    local.set_down(true);
    let out = list(&TaskReader::new(&tasks, &local), None, None, None)?;
    assert_eq!(out.page.tasks.len(), 7);
    Ok(())
}

#[test]
fn unreadable_and_deleted_documents_are_left_out_and_reported() -> Result<(), ReadError> {
    let tasks = seeded(5);
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    list(&r, None, None, None)?;
    tasks.put(&keys::task("t-00002"), "{oops");
    tasks.remove(&keys::task("t-00003"));
    let out = list(&r, None, None, None)?;
    let ids: Vec<&str> = out.page.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t-00000", "t-00001", "t-00004"]);
    assert_eq!(out.skipped.len(), 1);
    assert!(
        out.skipped[0].starts_with("task:t-00002: "),
        "{:?}",
        out.skipped
    );
    Ok(())
}

#[test]
fn keys_of_other_purposes_are_not_tasks() -> Result<(), ReadError> {
    let tasks = seeded(2);
    tasks.put("outbox:whatever", "x");
    let local = MemoryKv::new();
    let out = list(&TaskReader::new(&tasks, &local), None, None, None)?;
    assert_eq!(out.page.tasks.len(), 2);
    assert!(out.skipped.is_empty());
    assert!(tasks.get_many(&["outbox:whatever".into()]).is_ok());
    Ok(())
}

#[test]
fn a_rare_status_is_listed_over_several_requests_each_looking_at_a_bounded_number_of_ids()
-> Result<(), ReadError> {
    // 2,500 pending tasks and two completed ones, at the start and the end.
    let tasks = MemoryKv::new();
    for i in 0..2_502 {
        let status = if i == 0 || i == 2_501 {
            Status::Completed
        } else {
            Status::Pending
        };
        let t = task(&format!("t-{i:05}"), status);
        tasks.put(&keys::task(&t.id), t.to_json());
    }
    tasks.put(keys::TASKS_STAMP, "seed");
    let local = MemoryKv::new();
    let r = TaskReader::new(&tasks, &local);
    // Build the index first, so what follows counts only the listing's reads.
    list(&r, None, Some(1), None)?;
    let mut ids = Vec::new();
    let mut cursor = None;
    let mut requests = 0;
    loop {
        tasks.reset_calls();
        let out = list(&r, cursor, Some(50), Some(Status::Completed))?;
        requests += 1;
        let looked_at = tasks.calls().keys_read;
        assert!(
            looked_at <= tasks_read::MAX_SCANNED + 1,
            "one request read {looked_at} tasks"
        );
        ids.extend(out.page.tasks.into_iter().map(|t| t.id));
        match out.page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(ids, ["t-00000", "t-02501"], "each once, in order");
    assert!(requests >= 3, "{requests} requests");
    Ok(())
}
