//! Page cursors: callers pass back what they were given.
//!
//! A cursor names the last task id of the previous page; the next page starts
//! after it, so inserts and deletes between pages never repeat or skip the
//! tasks that stay. It is `c1:<id>` as is, so the OpenAPI document can say
//! exactly which strings are cursors (`^c1:[A-Za-z0-9._:-]{1,128}$`); the
//! base64url form of the same text, which earlier versions handed out, is
//! still read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{ReadError, validate};

const VERSION: &str = "c1:";

/// The cursor for the page that follows the task `last_id`.
pub fn encode(last_id: &str) -> String {
    format!("{VERSION}{last_id}")
}

/// The last id of the previous page, or an invalid-input error.
pub fn decode(cursor: &str) -> Result<String, ReadError> {
    let invalid = || {
        ReadError::Invalid(
            "cursor is not valid: pass back the nextCursor of a previous page unchanged".into(),
        )
    };
    let text = if cursor.starts_with(VERSION) {
        cursor.to_owned()
    } else {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        String::from_utf8(bytes).map_err(|_| invalid())?
    };
    let id = text.strip_prefix(VERSION).ok_or_else(invalid)?;
    validate::validate_id(id).map_err(|_| invalid())?;
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_the_earlier_form() -> Result<(), ReadError> {
        for id in ["t-1", "a.b:c_d", &"z".repeat(128)] {
            let c = encode(id);
            assert_eq!(c, format!("c1:{id}"));
            assert_eq!(decode(&c)?, id);
            assert_eq!(decode(&URL_SAFE_NO_PAD.encode(&c))?, id);
        }
        Ok(())
    }

    #[test]
    fn rejects_tampered_cursors() {
        let other_version = URL_SAFE_NO_PAD.encode("c9:t-1");
        let bad_id = URL_SAFE_NO_PAD.encode("c1:a b");
        let empty_id = URL_SAFE_NO_PAD.encode("c1:");
        for bad in [
            "",
            "!!!",
            "t-1",
            "c1:",
            "c1:a b",
            "c9:t-1",
            &other_version,
            &bad_id,
            &empty_id,
        ] {
            assert!(matches!(decode(bad), Err(ReadError::Invalid(_))), "{bad:?}");
        }
    }
}
