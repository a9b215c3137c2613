//! The first-page cache: hits cost no task-store call, every task write
//! invalidates, and a write racing a cache fill never leaves a stale page.

use tasks_apply::Handled;
use tasks_apply::testing::Harness;
use tasks_domain::{ListRequest, Status};
use tasks_kv::KeyValue;
use tasks_kv::testing::{HookAt, Hooked};
use tasks_read::TaskReader;
use tasks_read::page_cache::PageCache;

struct World {
    h: Harness,
}

impl World {
    fn new() -> Self {
        World { h: Harness::new() }
    }

    fn send(&self, subject: &str, payload: &str) {
        let handled = self.h.send(subject, payload);
        assert!(matches!(handled, Handled::Applied { .. }), "{handled:?}");
    }

    fn first_page(&self, tasks: &dyn KeyValue, status: Option<Status>) -> (Vec<String>, bool) {
        let generation = || self.h.unique();
        let cache = PageCache::new(&self.h.local, &generation, &|| true);
        let reader = TaskReader::new(tasks, &self.h.local).with_page_cache(cache);
        let out = reader
            .list_tasks(&ListRequest {
                status,
                ..ListRequest::default()
            })
            .expect("listing");
        let titles = out
            .page
            .tasks
            .iter()
            .map(|t| format!("{}={}", t.id, t.title))
            .collect();
        (titles, out.cached)
    }
}

#[test]
fn a_repeated_first_page_costs_no_task_store_call_until_a_write() {
    let w = World::new();
    w.send("tasks.created", r#"{"id":"a","title":"A"}"#);
    w.send("tasks.created", r#"{"id":"b","title":"B"}"#);
    assert_eq!(
        w.first_page(&w.h.tasks, None),
        (vec!["a=A".into(), "b=B".into()], false)
    );
    w.h.tasks.reset_calls();
    assert_eq!(
        w.first_page(&w.h.tasks, None),
        (vec!["a=A".into(), "b=B".into()], true)
    );
    assert_eq!(w.h.tasks.calls().get_many + w.h.tasks.calls().get, 0);

    // Each kind of write invalidates: update, create, delete.
    w.send("tasks.updated", r#"{"id":"a","title":"A2"}"#);
    assert_eq!(
        w.first_page(&w.h.tasks, None),
        (vec!["a=A2".into(), "b=B".into()], false)
    );
    w.send("tasks.created", r#"{"id":"c","title":"C"}"#);
    assert_eq!(w.first_page(&w.h.tasks, None).0.len(), 3);
    w.send("tasks.deleted", r#"{"id":"b"}"#);
    assert_eq!(
        w.first_page(&w.h.tasks, None),
        (vec!["a=A2".into(), "c=C".into()], false)
    );
    // Filters are cached apart.
    w.send("tasks.updated", r#"{"id":"c","status":"completed"}"#);
    assert_eq!(
        w.first_page(&w.h.tasks, Some(Status::Completed)),
        (vec!["c=C".into()], false)
    );
    assert_eq!(
        w.first_page(&w.h.tasks, Some(Status::Completed)),
        (vec!["c=C".into()], true)
    );
    assert!(
        !w.first_page(&w.h.tasks, None).1,
        "the unfiltered page is its own entry"
    );
}

#[test]
fn a_write_that_lands_while_a_page_is_being_built_is_never_hidden() {
    let w = World::new();
    w.send("tasks.created", r#"{"id":"a","title":"Old"}"#);
    // The reader reads the documents; right after, before it stores the
    // page, the writer updates the task.
    let racing = Hooked::new(&w.h.tasks, HookAt::TaskRead, || {
        w.send("tasks.updated", r#"{"id":"a","title":"New"}"#);
    });
    assert_eq!(w.first_page(&racing, None), (vec!["a=Old".into()], false));
    // The page cached by that fill must not be served.
    assert_eq!(
        w.first_page(&w.h.tasks, None),
        (vec!["a=New".into()], false)
    );
    assert_eq!(w.first_page(&w.h.tasks, None), (vec!["a=New".into()], true));
}
