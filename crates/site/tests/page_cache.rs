//! Rendered first pages: stored with a slot for the correlation id, served
//! from the cache with each request's own id, never for later pages.

mod common;

use common::NoAdmin;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use tasks_domain::{ListRequest, Page, ReadError, Status, Task, Timestamp};
use tasks_site::{CID_SLOT, PageLookup, Request, Response, TaskSource, handle};

#[derive(Default)]
struct Caching {
    title: RefCell<String>,
    lists: Cell<usize>,
    kept: RefCell<HashMap<String, (String, Vec<u8>)>>,
    generation: RefCell<String>,
}

impl TaskSource for Caching {
    fn get_task(&self, id: &str, _: &str) -> Result<Task, ReadError> {
        Err(ReadError::NotFound(id.into()))
    }
    fn list_tasks(&self, _: &ListRequest, _: &str) -> Result<Page, ReadError> {
        self.lists.set(self.lists.get() + 1);
        Ok(Page {
            tasks: vec![Task {
                id: "t-1".into(),
                title: self.title.borrow().clone(),
                description: None,
                status: Status::Pending,
                created_at: Timestamp(0),
                updated_at: Timestamp(0),
                version: 1,
                stream_seq: None,
                stream_epoch: None,
            }],
            next_cursor: None,
        })
    }
    fn probe(&self, _: &str) -> Result<(), ReadError> {
        Ok(())
    }
    fn cached_page(&self, key: &str) -> PageLookup {
        let generation = self.generation.borrow().clone();
        match self.kept.borrow().get(key) {
            Some((g, body)) if *g == generation => PageLookup::Hit(body.clone()),
            _ => PageLookup::Miss(generation),
        }
    }
    fn store_page(&self, key: &str, generation: &str, body: &[u8]) {
        self.kept
            .borrow_mut()
            .insert(key.into(), (generation.into(), body.to_vec()));
    }
}

fn get(source: &Caching, path_q: &str, cid: &str) -> Response {
    let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
    let req = Request {
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        ..Request::default()
    };
    handle(&req, cid, source, &NoAdmin)
}

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn the_first_page_is_rendered_once_per_generation_with_each_requests_id() {
    let source = Caching::default();
    *source.title.borrow_mut() = format!("Title mentioning {CID_SLOT}");
    *source.generation.borrow_mut() = "g1".into();

    let first = get(&source, "/", "cid-one");
    let second = get(&source, "/", "cid-two");
    assert_eq!(
        source.lists.get(),
        1,
        "the second request is served from the cache"
    );
    assert_eq!(body(&first).replace("cid-one", "cid-two"), body(&second));
    assert!(body(&second).contains("Request cid-two"));
    assert!(
        body(&second).contains(&format!("Title mentioning {CID_SLOT}")),
        "only the footer's slot is filled"
    );
    assert_eq!(second.header("x-correlation-id"), Some("cid-two"));
    assert!(second.header("content-security-policy").is_some());

    // A new generation (a task write) renders again; filters and later
    // pages are keyed apart or not cached.
    *source.generation.borrow_mut() = "g2".into();
    *source.title.borrow_mut() = "Renamed".into();
    assert!(body(&get(&source, "/", "c")).contains("Renamed"));
    get(&source, "/?status=pending", "c");
    get(&source, "/?status=pending", "c");
    assert_eq!(source.lists.get(), 3);
    get(&source, "/?cursor=YzE6dC0x", "c");
    get(&source, "/?cursor=YzE6dC0x", "c");
    assert_eq!(
        source.lists.get(),
        5,
        "pages after the first are not cached"
    );
}
