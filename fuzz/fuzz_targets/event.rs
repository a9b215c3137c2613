//! The event parser and validator: any subject byte and payload parse to an
//! event or a rejection with a reason, never a panic. An accepted event
//! holds only what validation allows; a rejection's task id is an id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasks_domain::event::{EventKind, parse};
use tasks_domain::validate::{is_id, normalize_title, validate_description};

const SUBJECTS: [&str; 5] = [
    "tasks.created",
    "tasks.updated",
    "tasks.deleted",
    "tasks.q.r",
    "other",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let subject = SUBJECTS[usize::from(pick) % SUBJECTS.len()];
    match parse(subject, payload) {
        Ok(ev) => {
            assert!(is_id(&ev.id), "accepted id {:?}", ev.id);
            if let Some(title) = &ev.fields.title {
                assert_eq!(normalize_title(title).as_deref(), Ok(title.as_str()));
            }
            if let Some(Some(d)) = &ev.fields.description {
                assert!(validate_description(d).is_ok());
            }
            assert!(matches!(
                ev.kind,
                EventKind::Created | EventKind::Updated | EventKind::Deleted
            ));
        }
        Err(rejection) => {
            assert!(!rejection.reason.is_empty());
            if let Some(id) = &rejection.task_id {
                assert!(is_id(id), "rejection keeps {id:?}");
            }
        }
    }
});
