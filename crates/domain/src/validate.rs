//! Validation rules with messages meant for the people who sent the data.

/// Longest task id, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest title after trimming, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4_000;
/// Most task ids one cache purge (`POST /api/cache/purge {"taskIds":[…]}`)
/// may name; senders split longer lists. Such a body of the longest ids
/// fits the web's request body limit.
pub const MAX_PURGE_IDS: usize = 400;

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

/// `s` as a log line may show it: itself when it is an id ([`is_id`]),
/// otherwise its first 64 characters escaped and quoted (`"x\n[..."...`): no
/// text a caller sent can break a log line or start a forged one.
pub fn loggable(s: &str) -> std::borrow::Cow<'_, str> {
    if is_id(s) {
        return std::borrow::Cow::Borrowed(s);
    }
    let head: String = s.chars().take(64).collect();
    let more = if head.len() < s.len() { "..." } else { "" };
    std::borrow::Cow::Owned(format!("\"{}\"{more}", head.escape_default()))
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

/// Whether `c` looks like an emoji (or one's modifier): what a zero-width
/// joiner may join in a title (👩‍💻).
fn emoji_like(c: char) -> bool {
    let c = u32::from(c);
    (0x1F000..0xE0000).contains(&c) || (0x2600..=0x27BF).contains(&c) || c == 0xFE0F
}

/// Whether `c` is an invisible or text-direction character: bidi
/// embeddings, overrides, isolates and marks, zero-width spaces and
/// joiners, word joiners, byte-order marks, soft hyphens, interlinear
/// annotation marks and tag characters.
pub fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x061C
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// The first invisible or text-direction character of a title: bidi
/// embeddings, overrides, isolates and marks, zero-width spaces and
/// joiners, word joiners, byte-order marks, soft hyphens and tag
/// characters. Displayed, they reorder or hide what the title says. A
/// zero-width joiner between emoji, and tags in a flag after U+1F3F4, are
/// what they are for, and pass.
fn invisible_char(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut in_flag = false;
    for (i, &c) in chars.iter().enumerate() {
        let code = u32::from(c);
        let tag = (0xE0020..=0xE007F).contains(&code);
        in_flag = tag && (in_flag || i > 0 && chars[i - 1] == '\u{1F3F4}');
        let refused = match code {
            0x200D => {
                !(i > 0
                    && emoji_like(chars[i - 1])
                    && chars.get(i + 1).is_some_and(|&n| emoji_like(n)))
            }
            0xE0020..=0xE007F => !in_flag,
            _ => is_invisible(c),
        };
        if refused {
            return Some(format!("(found U+{code:04X} at position {})", i + 1));
        }
    }
    None
}

/// Trims a title and checks it is 1-200 characters, none of them a control
/// character or an invisible or text-direction one ([`invisible_char`]);
/// returns the trimmed title.
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
    if let Some(found) = invisible_char(trimmed) {
        return Err(ValidationError::new(
            "title",
            format!(
                "title must not contain invisible or text-direction characters (bidi overrides, zero-width spaces) {found}"
            ),
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
    fn titles_refuse_bidi_and_invisible_characters_and_keep_emoji_sequences() {
        for (title, code) in [
            ("invoice\u{202E}fdp.exe", "U+202E"),
            ("pay\u{200B}pal", "U+200B"),
            ("a\u{2066}b\u{2069}", "U+2066"),
            ("\u{200F}abc", "U+200F"),
            ("x\u{FEFF}y", "U+FEFF"),
            ("soft\u{00AD}hyphen", "U+00AD"),
            ("join\u{200D}ed", "U+200D"),
            ("hidden\u{E0041}\u{E0042}", "U+E0041"),
        ] {
            let e = normalize_title(title).expect_err(title);
            assert_eq!(e.field, "title");
            assert!(e.message.contains(code), "{title:?}: {}", e.message);
            assert!(
                e.message.contains("invisible or text-direction"),
                "{}",
                e.message
            );
        }
        for ok in [
            "Fix login 👩\u{200D}💻",
            "Family 👨\u{200D}👩\u{200D}👧",
            "Rainbow 🏳\u{FE0F}\u{200D}🌈",
            "England 🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
            "עברית and English",
            "Café — naïve",
        ] {
            assert_eq!(normalize_title(ok).as_deref(), Ok(ok), "{ok:?}");
        }
    }

    #[test]
    fn loggable_text_keeps_ids_and_escapes_the_rest_on_one_line() {
        assert_eq!(loggable("t-1"), "t-1");
        let forged = "x\n[forged-cid] REPLAY dlq:1-a OK\u{1b}[2J";
        let shown = loggable(forged);
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(shown.starts_with('"'), "{shown}");
        let long = "é".repeat(500);
        assert!(loggable(&long).chars().count() < 64 * 8 + 3);
        assert!(loggable(&long).is_ascii());
        assert!(loggable("a\u{202e}b").is_ascii());
        assert!(loggable(&long).ends_with("..."));
    }

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
