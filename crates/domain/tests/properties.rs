//! Properties of what the domain reads from outside: task events (both
//! payload shapes, every rule), page cursors and stored task documents.
//!
//! Each property runs proptest's default number of cases (256), or
//! `PROPTEST_CASES`; `tests/properties-long.sh` runs a million of each.

// The modules sit in tests/properties/ so Cargo does not build each as a test.
#[path = "properties/cursors.rs"]
mod cursors;
#[path = "properties/events.rs"]
mod events;
#[path = "properties/json.rs"]
mod json;
#[path = "properties/rejections.rs"]
mod rejections;
#[path = "properties/tasks.rs"]
mod tasks;
