//! Property-based fuzzing of every parser that reads client input, on
//! stable Rust.
//!
//! `cargo fuzz` needs a nightly toolchain; proptest does not, so the same
//! targets run in every `cargo test` with a small case count and, for a
//! long run, with as many cases as you like:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test -p herald-fuzz --release
//! ```
//!
//! (`HTTP_FUZZ_CASES` sets the live-node target's count separately: each of
//! its cases is a TCP connection. With `--release`, point `HERALD_BIN` at a
//! built binary, such as `target/debug/herald`.)
//!
//! Each target starts from the inputs in `fuzz/seeds/<target>/` (one file
//! per input, exact bytes, the layout cargo-fuzz uses for a corpus): every
//! seed runs as it is first, then proptest draws a mix of seeds, seeds with
//! byte-level mutations, and inputs built from nothing. A failing case is
//! shrunk and written beside the test as `<test>.regressions`; commit it,
//! or copy the input into the seeds, so it runs forever after.
//!
//! Everything runs in-process through herald's public library API; no
//! server code is changed or mocked for it.

#![warn(missing_docs)]

use std::{path::PathBuf, sync::Arc};

use herald::{
    config::{AuthSettings, Limits, Settings},
    metrics::Metrics,
    state::AppState,
};
use herald_broker::{MemoryBroker, TopicRegistry};
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence},
};

/// Cases per target when `PROPTEST_CASES` is not set: enough to cover the
/// seeds and their neighbourhood in a CI run of a few seconds.
pub const DEFAULT_CASES: u32 = 512;

/// The HS256 secret of [`app_state`]'s node.
pub const JWT_SECRET: &str = "fuzz-secret";
/// The publish key of [`app_state`]'s node.
pub const PUBLISH_KEY: &str = "fuzz-publish-key";

/// The proptest configuration of every in-process target: `PROPTEST_CASES`
/// or [`DEFAULT_CASES`], failures persisted beside `source_file` (pass
/// `file!()`) as `<name>.regressions` and replayed first on every run.
pub fn config(source_file: &'static str) -> Config {
    Config {
        cases: cases_from_env("PROPTEST_CASES", DEFAULT_CASES),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        source_file: Some(source_file),
        ..Config::default()
    }
}

/// `name` parsed from the environment, or `default`.
///
/// # Panics
///
/// When the variable is set but is not a number.
pub fn cases_from_env(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number of cases")),
        Err(_) => default,
    }
}

/// The directory of `target`'s seeds.
pub fn seed_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

/// Every seed of `target`, in file-name order.
///
/// # Panics
///
/// When the directory is missing or empty: a target without seeds is a
/// mistake, not a pass.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = seed_dir(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read seeds in {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths
        .iter()
        .map(|path| {
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        })
        .collect()
}

/// Every seed of `target` as text (seeds of text targets are UTF-8).
///
/// # Panics
///
/// As [`seeds`], and when a seed is not UTF-8.
pub fn text_seeds(target: &str) -> Vec<String> {
    seeds(target)
        .into_iter()
        .map(|bytes| String::from_utf8(bytes).expect("text seeds are UTF-8"))
        .collect()
}

/// One byte-level edit of an input.
#[derive(Debug, Clone)]
enum Edit {
    /// Overwrite the byte at this position (modulo the length).
    Set(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Remove a byte.
    Remove(usize),
    /// Insert a token that matters to the parsers under test.
    Splice(usize, &'static [u8]),
    /// Repeat a slice many times (long inputs, deep nesting).
    Repeat(usize, usize, usize),
    /// Cut the input short.
    Truncate(usize),
}

/// Byte sequences that parsers of JSON, query strings, HTTP heads, SSE and
/// JWTs treat specially.
const TOKENS: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\0",
    b"\x7f",
    b"\xff",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x9a\x80",
    b"%",
    b"%00",
    b"%0D%0A",
    b"%FF",
    b"+",
    b"&",
    b"=",
    b";",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"1e999",
    b"-0",
    b".",
    b"..",
    b"*",
    b"data: x\n\n",
    b"event: e\n",
    b"id: 1\n",
    b"retry: 1\n",
    b"herald.",
    b"topic=",
    b"Bearer ",
    b"eyJhbGciOiJub25lIn0",
    b"=",
    b"\t",
    b" ",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), proptest::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Splice(at, t)),
        (any::<usize>(), 1usize..16, 2usize..300).prop_map(|(at, len, n)| Edit::Repeat(at, len, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut input: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = input.len();
        let at = |n: usize| if len == 0 { 0 } else { n % (len + 1) };
        match *edit {
            Edit::Set(n, byte) if len > 0 => input[n % len] = byte,
            Edit::Set(..) => input.push(0),
            Edit::Insert(n, byte) => input.insert(at(n), byte),
            Edit::Remove(n) if len > 0 => {
                input.remove(n % len);
            }
            Edit::Remove(_) => {}
            Edit::Splice(n, token) => {
                let at = at(n);
                input.splice(at..at, token.iter().copied());
            }
            Edit::Repeat(n, span, times) if len > 0 => {
                let start = n % len;
                let end = (start + span).min(len);
                let piece = input[start..end].repeat(times);
                input.splice(end..end, piece);
            }
            Edit::Repeat(..) => {}
            Edit::Truncate(n) => input.truncate(at(n)),
        }
    }
    input
}

/// Inputs for `target`: its seeds as they are, its seeds with up to eight
/// byte-level edits, and arbitrary bytes.
///
/// # Panics
///
/// As [`seeds`].
pub fn mutated(target: &str) -> BoxedStrategy<Vec<u8>> {
    let seeds = seeds(target);
    prop_oneof![
        1 => proptest::sample::select(seeds.clone()),
        6 => (proptest::sample::select(seeds), proptest::collection::vec(edit(), 1..8))
            .prop_map(|(seed, edits)| apply(seed, &edits)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
    .boxed()
}

/// As [`mutated`], as text: invalid UTF-8 is replaced, so text-only APIs
/// still see every structural mutation.
///
/// # Panics
///
/// As [`seeds`].
pub fn mutated_text(target: &str) -> BoxedStrategy<String> {
    mutated(target)
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .boxed()
}

/// The limits of a default node.
pub fn default_limits() -> Limits {
    Settings::default().limits
}

/// Auth settings of the fuzzed node: a publish key, an HS256 secret, and
/// public topics under `public.` only, so both the token-free and the
/// token paths of subscribe are reachable.
pub fn auth_settings() -> AuthSettings {
    AuthSettings {
        publish_keys: vec![PUBLISH_KEY.to_owned()],
        jwt_secret: Some(JWT_SECRET.to_owned()),
        public_topics: vec!["public.*".to_owned()],
        ..AuthSettings::default()
    }
}

/// The shared state of a node with the embedded broker, built the way
/// `herald::server::run` builds it, for calling `herald::subscribe`
/// in-process.
///
/// # Panics
///
/// Outside a Tokio runtime (the memory broker spawns its tasks).
pub fn app_state() -> Arc<AppState> {
    let settings = Settings {
        auth: auth_settings(),
        ..Settings::default()
    };
    let metrics = Metrics::new();
    let registry = Arc::new(TopicRegistry::new(metrics.topic_registry.clone()));
    let broker = Arc::new(MemoryBroker::start(registry, settings.history));
    Arc::new(AppState::new(settings, broker, metrics).expect("HS256 auth settings are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_in_bounds_on_empty_and_short_inputs() {
        let edits = [
            Edit::Set(7, b'x'),
            Edit::Remove(3),
            Edit::Repeat(5, 4, 3),
            Edit::Splice(99, b"ab"),
            Edit::Truncate(1),
            Edit::Insert(0, b'z'),
        ];
        assert_eq!(apply(Vec::new(), &edits), b"za");
        assert_eq!(apply(b"abc".to_vec(), &[Edit::Repeat(1, 1, 3)]), b"abbbbc");
    }
}
