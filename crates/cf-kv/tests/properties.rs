//! Properties of what the client reads from Cloudflare (or whatever answers
//! in its place): the v4 envelope parses to the fields sent, `classify`
//! maps status and code as documented, `Retry-After` reads both forms, and
//! no body, header or status panics the client or leaks the API token.
//!
//! Each property runs proptest's default number of cases (256), or
//! `PROPTEST_CASES`; `tests/properties-long.sh` runs a million of each.

// The modules sit in tests/properties/ so Cargo does not build each as a test.
#[path = "properties/classify.rs"]
mod classify;
#[path = "properties/client.rs"]
mod client;
#[path = "properties/envelope.rs"]
mod envelope;
