//! Dev-only support for the property tests of domain, site, signing and
//! cf-kv: runs properties and counts the inputs they feed (so
//! tests/properties-long.sh can report them), and mutates valid inputs the
//! way a fuzzer does.

use std::cell::Cell;
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

thread_local! {
    // libtest runs each test on its own thread and the runner calls the
    // property on that thread, so a thread-local counts one property's inputs
    // even while the properties run in parallel.
    static FED: Cell<u64> = const { Cell::new(0) };
}

/// Counts one input handed to the code under test.
pub fn fed() {
    FED.with(|n| n.set(n.get() + 1));
}

/// Runs `property` on generated values, as many as proptest's default config
/// says (256, or `PROPTEST_CASES`), then prints how many inputs reached the
/// code under test. The runner catches panics and reports them as failures,
/// so a property that returns has seen no panic.
pub fn check<S>(name: &str, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
{
    FED.with(|n| n.set(0));
    let config = Config {
        // Failures print the shrunk input; there is no source file to save it next to.
        failure_persistence: None,
        ..Config::default()
    };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let outcome = runner
        .run(&strategy, property)
        .map_err(|failure| failure.to_string());
    assert_eq!(outcome, Ok(()), "property {name}");
    println!(
        "property {name}: {cases} cases, {} inputs fed, 0 panics, {:.1}s",
        FED.with(Cell::get),
        started.elapsed().as_secs_f64()
    );
}

/// One change a fuzzer makes to a valid input.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Flips one bit of a byte.
    Flip(Index, u8),
    /// Overwrites a byte with one that means something to the parser.
    Poke(Index, u8),
    /// Inserts bytes before a position (or at the end).
    Insert(Index, Vec<u8>),
    /// Removes up to this many bytes from a position.
    Remove(Index, usize),
    /// Keeps only the bytes before a position.
    Truncate(Index),
}

/// One to four edits; `special` bytes are poked and `tokens` inserted more
/// often than chance would, since parsers branch on them.
pub fn edits(
    special: &'static [u8],
    tokens: &'static [&'static str],
) -> impl Strategy<Value = Vec<Edit>> {
    let insert = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..8),
        prop::sample::select(tokens).prop_map(|t| t.as_bytes().to_vec()),
    ];
    let edit = prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<Index>(), prop::sample::select(special)).prop_map(|(at, b)| Edit::Poke(at, b)),
        (any::<Index>(), insert).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<Index>(), 1..16usize).prop_map(|(at, n)| Edit::Remove(at, n)),
        any::<Index>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..=4)
}

/// `bytes` after the edits.
pub fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match edit {
            Edit::Flip(at, bit) if len > 0 => bytes[at.index(len)] ^= 1 << bit,
            Edit::Poke(at, b) if len > 0 => bytes[at.index(len)] = *b,
            Edit::Insert(at, new) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Edit::Remove(at, n) if len > 0 => {
                let at = at.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Truncate(at) => bytes.truncate(at.index(len + 1)),
            // Nothing to flip, poke or remove in an empty input.
            _ => {}
        }
    }
    bytes
}

/// `text` after the edits; bytes that stop being UTF-8 become U+FFFD, as
/// they do when a server turns a request into a `&str`.
pub fn mutate_str(text: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&mutate(text.as_bytes().to_vec(), edits)).into_owned()
}
