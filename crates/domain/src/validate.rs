//! Validation rules with messages meant for the people who sent the data.

/// Longest task id, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest title after trimming, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4_000;

/// A field that breaks a rule. `Display` gives the whole sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// The field at fault (`id`, `title`, `description`, …).
    pub field: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, message: String) -> Self {
        ValidationError { field, message }
    }
}

/// The characters of ids and correlation ids: `A-Z a-z 0-9 . _ : -`, safe
/// in keys, URLs, headers and log lines.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// Whether `s` is 1-128 characters of [`is_id_char`]: the rule for task
/// ids and for correlation ids taken from callers (payloads, headers).
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_CHARS && s.chars().all(is_id_char)
}

/// Checks a task id: 1-128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn validate_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(ValidationError::new("id", "id must not be empty".into()));
    }
    let len = id.chars().count();
    if len > MAX_ID_CHARS {
        return Err(ValidationError::new(
            "id",
            format!("id must be at most {MAX_ID_CHARS} characters (got {len})"),
        ));
    }
    if let Some((pos, c)) = id.chars().enumerate().find(|(_, c)| !is_id_char(*c)) {
        return Err(ValidationError::new(
            "id",
            format!(
                "id may only contain letters, digits, '.', '_', ':' and '-' (found {c:?} at position {})",
                pos + 1
            ),
        ));
    }
    Ok(())
}

/// The first control character of `text` that `allowed` does not let
/// through, as "(found U+0000 at position 3)" for a message.
fn control_char(text: &str, allowed: &[char]) -> Option<String> {
    text.chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !allowed.contains(c))
        .map(|(pos, c)| format!("(found U+{:04X} at position {})", u32::from(c), pos + 1))
}

/// Trims a title and checks it is 1-200 characters, none of them a control
/// character; returns the trimmed title.
pub fn normalize_title(title: &str) -> Result<String, ValidationError> {
    let trimmed = title.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(
            "title",
            "title must not be empty".into(),
        ));
    }
    let len = trimmed.chars().count();
    if len > MAX_TITLE_CHARS {
        return Err(ValidationError::new(
            "title",
            format!("title must be at most {MAX_TITLE_CHARS} characters (got {len})"),
        ));
    }
    if let Some(found) = control_char(trimmed, &[]) {
        return Err(ValidationError::new(
            "title",
            format!("title must not contain control characters {found}"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Checks a description is at most 4,000 characters, with no control
/// character but tab and line breaks (`\t`, `\n`, `\r`).
pub fn validate_description(description: &str) -> Result<(), ValidationError> {
    let len = description.chars().count();
    if len > MAX_DESCRIPTION_CHARS {
        return Err(ValidationError::new(
            "description",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters (got {len})"),
        ));
    }
    if let Some(found) = control_char(description, &['\t', '\n', '\r']) {
        return Err(ValidationError::new(
            "description",
            format!(
                "description must not contain control characters other than tab and line breaks {found}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        let long = "a".repeat(129);
        let max = "a".repeat(128);
        let table: [(&str, Option<&str>); 9] = [
            ("t-1", None),
            ("A.b_c:d-9", None),
            (&max, None),
            ("", Some("id must not be empty")),
            (&long, Some("id must be at most 128 characters (got 129)")),
            ("t 1", Some("found ' ' at position 2")),
            ("t/1", Some("found '/' at position 2")),
            ("tâche", Some("found 'â' at position 2")),
            ("<script>", Some("found '<' at position 1")),
        ];
        for (id, want) in table {
            match (validate_id(id), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => {
                    assert_eq!(e.field, "id");
                    assert!(e.to_string().contains(w), "{id:?}: {e}");
                }
                (got, want) => unreachable!("{id:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn title_rules() {
        let max = "é".repeat(200);
        let long = "x".repeat(10_000);
        let table: [(&str, Result<&str, &str>); 6] = [
            ("Buy milk", Ok("Buy milk")),
            ("  padded \n", Ok("padded")),
            (&max, Ok(&max)),
            ("", Err("title must not be empty")),
            (" \t\n ", Err("title must not be empty")),
            (
                &long,
                Err("title must be at most 200 characters (got 10000)"),
            ),
        ];
        for (title, want) in table {
            match (normalize_title(title), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w),
                (Err(e), Err(w)) => {
                    assert_eq!(e.field, "title");
                    assert_eq!(e.to_string(), w);
                }
                (got, want) => unreachable!("{title:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn description_rules() {
        assert!(validate_description("").is_ok());
        assert!(validate_description(&"ü".repeat(4_000)).is_ok());
        let err = validate_description(&"x".repeat(4_001)).expect_err("too long");
        assert_eq!(
            err.to_string(),
            "description must be at most 4000 characters (got 4001)"
        );
    }
}
