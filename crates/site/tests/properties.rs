//! Properties of the list query (`cursor`, `limit`, `status`) as the site
//! reads it from any URL, through [`handle`] on `GET /api/tasks` and `GET /`:
//! what reaches the store is what was sent, bad values are refused with a
//! reason, page links round trip, and no query string panics.
//!
//! Each property runs proptest's default number of cases (256), or
//! `PROPTEST_CASES`; `tests/properties-long.sh` runs a million of each.

mod common;

use std::cell::RefCell;

use common::NoAdmin;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use tasks_domain::{ListRequest, Page, ReadError, Status, Task};
use tasks_site::{Request, Response, TaskSource, handle};

use tasks_proptest_kit::{check, edits, fed, mutate_str};

/// A store that records what it is asked and returns no tasks.
#[derive(Default)]
struct Recorder {
    next_cursor: Option<String>,
    seen: RefCell<Vec<ListRequest>>,
}

impl TaskSource for Recorder {
    fn get_task(&self, id: &str, _: &str) -> Result<Task, ReadError> {
        Err(ReadError::NotFound(id.to_owned()))
    }
    fn list_tasks(&self, req: &ListRequest, _: &str) -> Result<Page, ReadError> {
        self.seen.borrow_mut().push(req.clone());
        Ok(Page {
            tasks: Vec::new(),
            next_cursor: self.next_cursor.clone(),
        })
    }
    fn probe(&self, _: &str) -> Result<(), ReadError> {
        Ok(())
    }
}

fn get(path: &str, query: &str, source: &Recorder) -> Response {
    fed();
    let req = Request {
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        ..Request::default()
    };
    handle(&req, "cid-prop", source, &NoAdmin)
}

/// The README's rules for decoded pairs: the last non-empty value of each
/// known parameter counts, others are ignored, the first bad value refuses
/// the request.
fn model<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<ListRequest, String> {
    let mut req = ListRequest::default();
    for (name, value) in pairs {
        match name {
            _ if value.is_empty() => {}
            "cursor" => req.cursor = Some(value.to_owned()),
            "limit" => {
                req.limit = Some(value.parse().map_err(|_| {
                    format!("limit must be a whole number between 1 and 200 (got {value:?})")
                })?);
            }
            "status" => {
                let status = match value {
                    "pending" => Status::Pending,
                    "in_progress" | "in-progress" => Status::InProgress,
                    "completed" => Status::Completed,
                    "cancelled" => Status::Cancelled,
                    _ => {
                        return Err(format!(
                            "unknown status {value:?}: expected pending, in_progress, completed or cancelled"
                        ));
                    }
                };
                req.status = Some(status);
            }
            _ => {}
        }
    }
    Ok(req)
}

/// Both list routes answer `query` as the model says.
fn answers_as_modelled(
    query: &str,
    want: &Result<ListRequest, String>,
) -> Result<(), TestCaseError> {
    let api = Recorder::default();
    let resp = get("/api/tasks", query, &api);
    let body: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    match want {
        Ok(lr) => {
            prop_assert_eq!(resp.status, 200);
            prop_assert_eq!(&*api.seen.borrow(), std::slice::from_ref(lr));
            prop_assert_eq!(body, serde_json::json!({"tasks": [], "nextCursor": null}));
        }
        Err(message) => {
            prop_assert_eq!(resp.status, 400);
            prop_assert!(api.seen.borrow().is_empty());
            prop_assert_eq!(body["error"]["code"].as_str(), Some("invalid_request"));
            prop_assert_eq!(body["error"]["message"].as_str(), Some(message.as_str()));
        }
    }
    let page = Recorder::default();
    let resp = get("/", query, &page);
    let html = String::from_utf8_lossy(&resp.body);
    match want {
        Ok(lr) => {
            prop_assert_eq!(resp.status, 200);
            prop_assert_eq!(&*page.seen.borrow(), std::slice::from_ref(lr));
        }
        Err(_) => {
            prop_assert_eq!(resp.status, 400);
            prop_assert!(page.seen.borrow().is_empty());
            prop_assert!(html.contains("Bad request"), "{html}");
        }
    }
    Ok(())
}

/// A value for a parameter: valid, empty, or wrong.
fn value_for(name: &'static str) -> BoxedStrategy<String> {
    let status = prop::sample::select(
        &[
            "pending",
            "in_progress",
            "in-progress",
            "completed",
            "cancelled",
        ][..],
    );
    match name {
        "limit" => prop_oneof![
            4 => any::<u32>().prop_map(|n| n.to_string()),
            1 => prop::sample::select(&["", "ten", "-1", "1.5", " 5", "+5", "4294967296", "0x10"][..])
                .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
        .boxed(),
        "status" => prop_oneof![
            4 => status.prop_map(str::to_owned),
            1 => prop::sample::select(&["", "done", "Pending", "in progress", "canceled"][..])
                .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
        .boxed(),
        _ => prop_oneof![any::<String>(), "[A-Za-z0-9_-]{1,40}", Just(String::new())].boxed(),
    }
}

fn pair() -> impl Strategy<Value = (String, String, bool)> {
    prop::sample::select(
        &[
            "cursor",
            "limit",
            "status",
            "utm_source",
            "Limit",
            "cursor ",
        ][..],
    )
    .prop_flat_map(|name| (Just(name.to_owned()), value_for(name), any::<bool>()))
}

/// Percent-encodes every byte, as some clients do.
fn percent_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn list_queries_reach_the_store_as_sent() {
    check(
        "query reaches store",
        prop::collection::vec(pair(), 0..6),
        |pairs| {
            let query = pairs
                .iter()
                .map(|(name, value, every_byte)| {
                    if *every_byte {
                        format!("{}={}", percent_all(name), percent_all(value))
                    } else {
                        form_urlencoded::Serializer::new(String::new())
                            .append_pair(name, value)
                            .finish()
                    }
                })
                .collect::<Vec<_>>()
                .join("&");
            let want = model(pairs.iter().map(|(n, v, _)| (n.as_str(), v.as_str())));
            answers_as_modelled(&query, &want)
        },
    );
}

#[test]
fn any_query_string_is_answered() {
    let queries = prop_oneof![
        any::<String>(),
        "([a-z]{0,7}|cursor|limit|status)(=[a-zA-Z0-9%+;&=_-]{0,12})?(&[a-z%=+0-9;&]{0,20}){0,3}",
        (
            prop::collection::vec(pair(), 1..4),
            edits(
                b"%&=+;#?0aF\xc3\xff ",
                &["%", "%2", "%ZZ", "%C3", "&&", "=", "+"]
            )
        )
            .prop_map(|(pairs, e)| {
                let mut q = form_urlencoded::Serializer::new(String::new());
                for (name, value, _) in &pairs {
                    q.append_pair(name, value);
                }
                mutate_str(&q.finish(), &e)
            }),
    ];
    check("arbitrary query", queries, |query| {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        let want = model(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        answers_as_modelled(&query, &want)
    });
}

/// The `href` of the link marked `rel`, unescaped (list links hold no other
/// character HTML escapes than `&`).
fn link(html: &str, marker: &str) -> Option<String> {
    let end = html.find(marker)?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(html[start..end].replace("&amp;", "&").replace("&#38;", "&"))
}

#[test]
fn next_and_first_page_links_round_trip() {
    let page = (
        prop::option::of(prop::sample::select(&Status::ALL[..])),
        prop::option::of(prop_oneof![1..=200u32, any::<u32>()]),
        prop_oneof![any::<String>(), "[A-Za-z0-9_-]{1,60}"].prop_map(|c| c + "x"),
    );
    check("page links", page, |(status, limit, cursor)| {
        let mut first = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = status {
            first.append_pair("status", s.as_str());
        }
        if let Some(l) = limit {
            first.append_pair("limit", &l.to_string());
        }
        let source = Recorder {
            next_cursor: Some(cursor.clone()),
            ..Recorder::default()
        };
        let resp = get("/", &first.finish(), &source);
        prop_assert_eq!(resp.status, 200);
        let html = String::from_utf8_lossy(&resp.body).into_owned();
        let next = link(&html, "\" rel=\"next\"");
        let Some((path, query)) = next.as_deref().and_then(|n| n.split_once('?')) else {
            return Err(TestCaseError::fail(format!("no next link in {html}")));
        };
        prop_assert_eq!(path, "/");
        let second = get(path, query, &source);
        prop_assert_eq!(second.status, 200);
        let want = ListRequest {
            cursor: Some(cursor),
            limit,
            status,
        };
        prop_assert_eq!(source.seen.borrow().get(1).cloned(), Some(want.clone()));
        // The second page links back to the first with the same filter.
        let html = String::from_utf8_lossy(&second.body).into_owned();
        let back = link(&html, "\">← First page");
        let query = back
            .as_deref()
            .map_or("", |b| b.split_once('?').map_or("", |(_, q)| q));
        get("/", query, &source);
        let want = ListRequest {
            cursor: None,
            ..want
        };
        prop_assert_eq!(source.seen.borrow().get(2).cloned(), Some(want));
        Ok(())
    });
}
