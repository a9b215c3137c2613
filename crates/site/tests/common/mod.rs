//! Shared by the site's integration tests.

use tasks_domain::ReadError;
use tasks_outbox::ReplayError;
use tasks_outbox::dead_letters::DeadLetterPage;
use tasks_site::{Admin, PurgeScope};

/// Operator routes over nothing: tests of the task routes never reach them.
pub struct NoAdmin;

impl Admin for NoAdmin {
    fn dead_letters(&self, _: Option<&str>, _: usize) -> Result<DeadLetterPage, ReadError> {
        Err(ReadError::Unavailable("no admin here".into()))
    }
    fn replay(&self, id: &str, _: &str) -> Result<String, ReplayError> {
        Err(ReplayError::NotFound(id.into()))
    }
    fn signing_key(&self, _: tasks_signing::Purpose) -> Option<(Vec<u8>, &'static str)> {
        None
    }
    fn signature_ttl_secs(&self) -> u64 {
        5
    }
    fn now_secs(&self) -> i64 {
        0
    }
    fn purge(&self, _: &PurgeScope, _: &str) -> Result<usize, ReadError> {
        Ok(0)
    }
    fn admin_token(&self) -> Option<Vec<u8>> {
        None
    }
    fn metrics(&self) -> Result<String, ReadError> {
        Err(ReadError::Unavailable("no admin here".into()))
    }
    fn take_signature(&self, _: &str, _: i64) -> Result<tasks_signing::Taken, ReadError> {
        Err(ReadError::Unavailable("no admin here".into()))
    }
}
