//! `cursor::decode`: round trips with `encode`, accepts exactly what
//! `encode` makes, and answers anything else with an invalid-input error.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tasks_domain::{ReadError, cursor};

use crate::json::{id, is_valid_id};
use tasks_proptest_kit::{check, edits, fed, mutate_str};

fn decode(c: &str) -> Result<String, ReadError> {
    fed();
    cursor::decode(c)
}

/// What every answer promises: an accepted cursor names a valid id and is
/// the one `encode` makes for it (so each id has one cursor); a refused one
/// is an invalid-input error that says what to do.
fn sound(c: &str, outcome: &Result<String, ReadError>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(id) => {
            prop_assert!(is_valid_id(id), "{id:?}");
            prop_assert_eq!(&cursor::encode(id), c);
        }
        Err(e) => {
            prop_assert_eq!(e.code(), "invalid_request");
            prop_assert!(e.to_string().contains("nextCursor"), "{e}");
        }
    }
    Ok(())
}

#[test]
fn cursors_round_trip_and_name_the_id() {
    check("cursor round trip", id(), |id| {
        let c = cursor::encode(&id);
        prop_assert!(c.strip_prefix("c1:").is_some_and(is_valid_id), "{c}");
        prop_assert_eq!(decode(&c), Ok(id));
        Ok(())
    });
}

/// Text to base64-encode as a cursor: mostly near-misses of `c1:<id>`.
fn cursor_text() -> impl Strategy<Value = String> {
    prop_oneof![
        id().prop_map(|id| format!("c1:{id}")),
        any::<String>().prop_map(|s| format!("c1:{s}")),
        (0..10u8, id()).prop_map(|(v, id)| format!("c{v}:{id}")),
        "[A-Za-z0-9._:-]{129,140}".prop_map(|id| format!("c1:{id}")),
        any::<String>(),
    ]
}

#[test]
fn decode_accepts_exactly_version_1_and_a_valid_id_in_either_form() {
    check("cursor contents", cursor_text(), |text| {
        let want = text.strip_prefix("c1:").filter(|id| is_valid_id(id));
        for got in [decode(&text), decode(&URL_SAFE_NO_PAD.encode(&text))] {
            match want {
                Some(id) => prop_assert_eq!(got, Ok(id.to_owned())),
                None => prop_assert!(matches!(got, Err(ReadError::Invalid(_))), "{got:?}"),
            }
        }
        Ok(())
    });
}

#[test]
fn any_cursor_string_is_answered() {
    let strings = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_=+/-]{0,200}",
        (
            id(),
            edits(b"=+/-_!A0 \xff", &["=", "==", "%3D", "\u{e9}", "YzE6"])
        )
            .prop_map(|(id, e)| mutate_str(&cursor::encode(&id), &e)),
    ];
    check("arbitrary cursor", strings, |c| sound(&c, &decode(&c)));
}
