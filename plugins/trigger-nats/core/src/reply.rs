//! Acknowledgements sent to a message's reply subject.

/// `{"ok":true}` or `{"ok":false,"error":"…"}`.
pub fn encode(result: &Result<(), String>) -> Vec<u8> {
    match result {
        Ok(()) => br#"{"ok":true}"#.to_vec(),
        Err(e) => serde_json::json!({ "ok": false, "error": e })
            .to_string()
            .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_both_outcomes_as_json() -> Result<(), serde_json::Error> {
        assert_eq!(encode(&Ok(())), br#"{"ok":true}"#);
        let v: serde_json::Value = serde_json::from_slice(&encode(&Err("bad \"x\"\n".into())))?;
        assert_eq!(v, serde_json::json!({"ok": false, "error": "bad \"x\"\n"}));
        Ok(())
    }
}
