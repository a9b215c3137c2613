//! Conformance against Cloudflare's emulator (miniflare's Local Explorer KV
//! REST API) over real HTTP. Each test owns a key prefix.

mod support;

use tasks_cf_kv::native::UreqHttp;
use tasks_cf_kv::{Client, Error, Options};

fn kv() -> Option<Client<UreqHttp>> {
    let mf = support::miniflare()?;
    Some(mf.client_via(&mf.origin))
}

fn names(kv: &Client<UreqHttp>, prefix: &str) -> Vec<String> {
    kv.list_all(prefix)
        .expect("list_all")
        .into_iter()
        .map(|k| k.name)
        .collect()
}

#[test]
fn get_put_delete_and_missing_keys() {
    let Some(kv) = kv() else { return };
    assert_eq!(kv.get("single:missing").expect("get missing"), None);
    kv.put("single:k", b"one").expect("put");
    assert_eq!(kv.get("single:k").expect("get"), Some(b"one".to_vec()));
    kv.put("single:k", b"two").expect("overwrite");
    assert_eq!(kv.get("single:k").expect("get"), Some(b"two".to_vec()));
    kv.put("single:empty", b"").expect("put empty");
    assert_eq!(kv.get("single:empty").expect("get empty"), Some(Vec::new()));
    kv.delete("single:k").expect("delete");
    kv.delete("single:never-existed").expect("delete missing");
    assert_eq!(kv.get("single:k").expect("get deleted"), None);
    assert_eq!(names(&kv, "single:"), ["single:empty"]);
}

#[test]
fn odd_key_names_round_trip() {
    let Some(kv) = kv() else { return };
    let suffixes = [
        "a/b",
        "%",
        "100%25",
        "?",
        "q?x=1&y=2",
        "#",
        "a#b",
        " ",
        "a b",
        "a+b",
        "ключ/☃",
        "..x",
        "./",
        "~!*'()",
    ];
    let keys: Vec<String> = suffixes.iter().map(|s| format!("odd:{s}")).collect();
    for (i, key) in keys.iter().enumerate() {
        kv.put(key, format!("v{i}").as_bytes()).expect("put");
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            kv.get(key).expect("get"),
            Some(format!("v{i}").into_bytes()),
            "{key:?}"
        );
    }
    let mut want = keys.clone();
    want.sort();
    assert_eq!(names(&kv, "odd:"), want);
    let texts = kv.bulk_get(&keys).expect("bulk_get");
    let want: Vec<Option<String>> = (0..keys.len()).map(|i| Some(format!("v{i}"))).collect();
    assert_eq!(texts, want);
    // The prefix itself needs encoding too.
    assert_eq!(names(&kv, "odd:ключ/"), ["odd:ключ/☃"]);
    for key in &keys {
        kv.delete(key).expect("delete");
    }
    assert!(names(&kv, "odd:").is_empty());
}

#[test]
fn binary_values_round_trip() {
    let Some(kv) = kv() else { return };
    let all_bytes: Vec<u8> = (0..=255).collect();
    kv.put("bin:single", &all_bytes).expect("put");
    assert_eq!(kv.get("bin:single").expect("get"), Some(all_bytes.clone()));
    let pairs = vec![
        ("bin:bulk".to_owned(), all_bytes.clone()),
        ("bin:text".to_owned(), "plain ☃".as_bytes().to_vec()),
        ("bin:invalid".to_owned(), vec![0xff, 0xfe, 0x00, 0xc3]),
    ];
    kv.bulk_write(&pairs).expect("bulk_write with base64");
    for (key, value) in &pairs {
        assert_eq!(kv.get(key).expect("get"), Some(value.clone()), "{key}");
    }
    let keys: Vec<String> = pairs
        .iter()
        .map(|(k, _)| k.clone())
        .chain(["bin:none".to_owned()])
        .collect();
    let bytes = kv.get_many(&keys).expect("get_many");
    let want: Vec<Option<Vec<u8>>> = pairs
        .iter()
        .map(|(_, v)| Some(v.clone()))
        .chain([None])
        .collect();
    assert_eq!(bytes, want);
    // Bulk get is text only: miniflare hands back U+FFFD for bytes that are not UTF-8.
    let texts = kv.bulk_get(&keys).expect("bulk_get");
    assert_eq!(texts[1].as_deref(), Some("plain ☃"));
    assert!(texts[2].as_deref().is_some_and(|t| t.contains('\u{FFFD}')));
}

#[test]
fn large_value_round_trips() {
    let Some(kv) = kv() else { return };
    let value: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    kv.put("large:v", &value).expect("put 3 MiB");
    assert_eq!(kv.get("large:v").expect("get"), Some(value));
}

#[test]
fn list_all_pages_over_2500_keys() {
    let Some(kv) = kv() else { return };
    let pairs: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| (format!("page:{i:05}"), b"x".to_vec()))
        .collect();
    kv.bulk_write(&pairs).expect("bulk_write 2500");
    let got = names(&kv, "page:");
    let want: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got.len(), 2500);
    assert_eq!(got, want);
    // Small pages: the cursor is set until the last one.
    let first = kv.list("page:", Some(10), None).expect("list");
    assert_eq!(first.keys.len(), 10);
    let cursor = first.cursor.expect("a cursor after the first page");
    let second = kv.list("page:", Some(10), Some(&cursor)).expect("list");
    assert_eq!(second.keys[0].name, "page:00010");
    let last = kv.list("page:0249", Some(10), None).expect("list");
    assert_eq!((last.keys.len(), last.cursor), (10, None));
}

#[test]
fn bulk_write_get_delete_in_batches() {
    let Some(kv) = kv() else { return };
    let kv = kv.with_options(Options {
        bulk_write_pairs: 40,
        bulk_delete_keys: 60,
        ..Options::default()
    });
    let pairs: Vec<(String, Vec<u8>)> = (0..150)
        .map(|i| (format!("bulk:{i:03}"), format!("value {i}").into_bytes()))
        .collect();
    kv.bulk_write(&pairs).expect("bulk_write");
    let mut keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    keys.push("bulk:missing".to_owned());
    let texts = kv.bulk_get(&keys).expect("bulk_get over 100 keys");
    assert_eq!(texts.len(), 151);
    assert_eq!(texts[0].as_deref(), Some("value 0"));
    assert_eq!(texts[149].as_deref(), Some("value 149"));
    assert_eq!(texts[150], None);
    // A key given twice is written once, last value winning.
    let dup = vec![
        ("bulk:dup".to_owned(), b"1".to_vec()),
        ("bulk:dup".to_owned(), b"2".to_vec()),
    ];
    kv.bulk_write(&dup).expect("bulk_write duplicates");
    assert_eq!(kv.get("bulk:dup").expect("get"), Some(b"2".to_vec()));
    keys.push("bulk:dup".to_owned());
    kv.bulk_delete(&keys).expect("bulk_delete");
    assert!(names(&kv, "bulk:").is_empty());
}

#[test]
fn limits_are_refused_client_side() {
    let Some(kv) = kv() else { return };
    let long = "k".repeat(513);
    let max = "k".repeat(512);
    for key in ["", ".", "..", long.as_str()] {
        assert!(
            matches!(kv.put(key, b"v"), Err(Error::Invalid(_))),
            "{key:?}"
        );
        assert!(matches!(kv.get(key), Err(Error::Invalid(_))), "{key:?}");
    }
    let big = vec![0u8; 25 * 1024 * 1024 + 1];
    assert!(matches!(kv.put("limits:big", &big), Err(Error::Invalid(_))));
    assert!(matches!(
        kv.bulk_write(&[("limits:big".to_owned(), big)]),
        Err(Error::Invalid(_))
    ));
    // The longest allowed key is accepted by the server.
    kv.put(&max, b"v").expect("512-byte key");
    assert_eq!(kv.get(&max).expect("get"), Some(b"v".to_vec()));
    kv.delete(&max).expect("delete");
    assert!(matches!(kv.list("", Some(5), None), Err(Error::Invalid(_))));
}

#[test]
fn wrong_base_paths_are_api_errors() {
    let Some(mf) = support::miniflare() else {
        return;
    };
    let client = |base: String| {
        let config = tasks_cf_kv::Config::new(base, &mf.namespace_id, "");
        Client::new(UreqHttp::default(), config).expect("client")
    };
    // Inside the explorer, an unknown route is a text/plain 404, not an envelope.
    let kv = client(format!("{}{}/nope", mf.origin, mf.api_path));
    let err = kv.put("routes:k", b"v").expect_err("404");
    assert!(
        matches!(
            err,
            Error::Api {
                status: 404,
                code: None,
                ..
            }
        ),
        "{err:?}"
    );
    // Outside /cdn-cgi/ the user worker answers 200 with its own body.
    let kv = client(format!("{}/client/v4/accounts/abc", mf.origin));
    let err = kv.put("routes:k", b"v").expect_err("not an envelope");
    assert!(
        matches!(
            err,
            Error::Api {
                status: 200,
                code: None,
                ..
            }
        ),
        "{err:?}"
    );
}
