//! The read side's request, page and error types, shared by the storage layer,
//! the WIT adapter and the web.

use crate::{Status, Task};

/// Page size when the caller names none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size a caller may ask for.
pub const MAX_LIMIT: u32 = 200;

/// What a listing asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
    /// Page size; `None` means [`DEFAULT_LIMIT`].
    pub limit: Option<u32>,
    /// Only tasks with this status.
    pub status: Option<Status>,
}

impl ListRequest {
    /// The page size to use, or an invalid-input error outside 1..=200.
    pub fn resolved_limit(&self) -> Result<usize, ReadError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT as usize),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n as usize),
            Some(n) => Err(ReadError::Invalid(format!(
                "limit must be between 1 and {MAX_LIMIT} (got {n})"
            ))),
        }
    }
}

/// One page of tasks ordered by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Cursor of the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Why a read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No task has this id.
    #[error("task {0:?} not found")]
    NotFound(String),
    /// The request was malformed; the text says how.
    #[error("{0}")]
    Invalid(String),
    /// The store did not answer.
    #[error("task store unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl ReadError {
    /// The stable machine-readable code used in JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ReadError::NotFound(_) => "not_found",
            ReadError::Invalid(_) => "invalid_request",
            ReadError::Unavailable(_) => "store_unavailable",
            ReadError::Other(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_bounds() {
        let req = |limit| ListRequest {
            limit,
            ..Default::default()
        };
        assert_eq!(req(None).resolved_limit(), Ok(50));
        assert_eq!(req(Some(1)).resolved_limit(), Ok(1));
        assert_eq!(req(Some(200)).resolved_limit(), Ok(200));
        for bad in [0, 201, u32::MAX] {
            let err = req(Some(bad)).resolved_limit().expect_err("out of range");
            assert_eq!(err.code(), "invalid_request");
            assert!(err.to_string().contains(&bad.to_string()), "{err}");
        }
    }

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(ReadError::NotFound("x".into()).code(), "not_found");
        assert_eq!(
            ReadError::NotFound("x".into()).to_string(),
            "task \"x\" not found"
        );
        assert_eq!(
            ReadError::Unavailable("down".into()).code(),
            "store_unavailable"
        );
        assert_eq!(ReadError::Other("?".into()).code(), "internal");
    }
}
