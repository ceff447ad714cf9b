//! The fuzz harness shared by the parser tests of soup-core, soup-evals and soup-store (each
//! crate includes this file once, under `#[cfg(test)]`, with `#[path]`): cargo-fuzz needs a
//! nightly toolchain, so the parsers of outside bytes are fuzzed by proptest instead.
//!
//! An input is a valid seed changed by a few structure-aware mutations (bit flips, truncations,
//! insertions and deletions, a 4- or 8-byte field overwritten with a huge length, a range
//! duplicated (duplicate keys), tokens from a dictionary (deep nesting, huge numbers, invalid
//! UTF-8), a JSON value replaced in place), or plain random bytes. Each case runs in its own
//! thread and must, whatever it returns:
//! - not panic,
//! - finish within [`TIME_LIMIT`] (a hang fails the case instead of the whole run),
//! - never ask for one allocation larger than [`alloc_limit`] of the input's size: a header
//!   that claims 2^40 elements must be refused before anything is allocated for them.
//!
//! Runs are deterministic: the RNG is ChaCha from a fixed seed per parser (override with
//! `SOUP_FUZZ_SEED=<any text>`, raise the case count with `SOUP_FUZZ_CASES=<n>` for a soak
//! run), and no regression file is written.

#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// A case slower than this is a hang. Parsers take milliseconds; the margin is for a loaded
/// CI machine running a debug build.
pub const TIME_LIMIT: Duration = Duration::from_secs(20);

/// The largest single allocation a case may request: 64 bytes per input byte, and never less
/// than 64 MiB (a tokenizer or a regex has fixed costs of its own).
pub fn alloc_limit(input_len: usize) -> usize {
    input_len.saturating_mul(64).max(64 << 20)
}

/// Values a length or count field is set to by [`Mutation::HugeLength`].
const HUGE: &[u64] = &[
    u64::MAX,
    1 << 63,
    1 << 60,
    1 << 40,
    (1 << 32) + 1,
    u32::MAX as u64,
    1 << 31,
    1 << 24,
    0,
];

/// Tokens inserted into text formats: structure, numbers at the edge of their types, escapes,
/// deep nesting, a BOM and bytes that are not UTF-8.
pub fn text_dictionary() -> Vec<Vec<u8>> {
    let mut d: Vec<Vec<u8>> = [
        "{",
        "}",
        "[",
        "]",
        "\"",
        ",",
        ":",
        "\\",
        "\\u0000",
        "\\ud800",
        "null",
        "true",
        "false",
        "-1",
        "0",
        "-0.0",
        "1e999",
        "-1e999",
        "NaN",
        "inf",
        "nan",
        "18446744073709551616",
        "18446744073709551615",
        "9007199254740993",
        "4294967296",
        "1.7976931348623157e309",
        "\u{feff}",
        "\n",
        "\r\n",
        "\t",
        "\"a\":1,\"a\":2,",
        "#### ",
        "```",
        "```python\n",
        "def solution():\n",
        "Context:",
        "Question:",
        "[[skills]]\n",
        "[budgets.x]\n",
        "= ",
        "'''",
        "\"\"\"",
        "1979-05-27T07:32:00Z",
        "{%",
        "%}",
        "{{",
        "}}",
        "{% for x in range(99999999) %}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    d.push(vec![0xff, 0xfe]);
    d.push(vec![0xc3]);
    d.push(vec![0]);
    d.push("[".repeat(10_000).into_bytes());
    d.push("{\"a\":".repeat(10_000).into_bytes());
    d.push("a = [".repeat(2_000).into_bytes());
    d.push("x.".repeat(2_000).into_bytes());
    d.push("9".repeat(5_000).into_bytes());
    d.push("A".repeat(70_000).into_bytes());
    d
}

/// One change to an input. Positions are proptest indices (they shrink toward the start);
/// `hot` ones fall inside the seed's header, where length fields live.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        at: Index,
        hot: bool,
        bit: u8,
    },
    SetByte {
        at: Index,
        hot: bool,
        value: u8,
    },
    Truncate {
        at: Index,
    },
    Delete {
        at: Index,
        hot: bool,
        len: usize,
    },
    Insert {
        at: Index,
        hot: bool,
        bytes: Vec<u8>,
    },
    Token {
        at: Index,
        hot: bool,
        token: Index,
    },
    HugeLength {
        at: Index,
        hot: bool,
        wide: bool,
        value: Index,
    },
    Duplicate {
        from: Index,
        len: usize,
        to: Index,
        hot: bool,
    },
}

/// Mostly one mutation, so that most inputs are almost valid and reach deep into the parser;
/// sometimes a few, for damage that combines.
fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![
        6 => proptest::collection::vec(mutation(), 1..=1),
        3 => proptest::collection::vec(mutation(), 2..=3),
        1 => proptest::collection::vec(mutation(), 4..=8),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    fn at() -> impl Strategy<Value = Index> {
        any::<Index>()
    }
    fn hot() -> impl Strategy<Value = bool> {
        any::<bool>()
    }
    prop_oneof![
        3 => (at(), hot(), 0u8..8).prop_map(|(at, hot, bit)| Mutation::FlipBit { at, hot, bit }),
        2 => (at(), hot(), any::<u8>())
            .prop_map(|(at, hot, value)| Mutation::SetByte { at, hot, value }),
        1 => at().prop_map(|at| Mutation::Truncate { at }),
        1 => (at(), hot(), 1usize..64).prop_map(|(at, hot, len)| Mutation::Delete { at, hot, len }),
        1 => (at(), hot(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, hot, bytes)| Mutation::Insert { at, hot, bytes }),
        3 => (at(), hot(), any::<Index>())
            .prop_map(|(at, hot, token)| Mutation::Token { at, hot, token }),
        3 => (at(), hot(), any::<bool>(), any::<Index>())
            .prop_map(|(at, hot, wide, value)| Mutation::HugeLength { at, hot, wide, value }),
        1 => (at(), 1usize..256, at(), hot())
            .prop_map(|(from, len, to, hot)| Mutation::Duplicate { from, len, to, hot }),
    ]
}

fn pos(at: &Index, hot: bool, hot_len: usize, len: usize) -> usize {
    if hot && hot_len > 0 {
        at.index(hot_len.min(len) + 1)
    } else {
        at.index(len + 1)
    }
}

/// Applies `muts` in order to a copy of `seed`.
pub fn apply(seed: &[u8], hot_len: usize, dict: &[Vec<u8>], muts: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in muts {
        let len = b.len();
        match m {
            Mutation::FlipBit { at, hot, bit } => {
                if len > 0 {
                    let i = pos(at, *hot, hot_len, len - 1);
                    b[i] ^= 1 << bit;
                }
            }
            Mutation::SetByte { at, hot, value } => {
                if len > 0 {
                    let i = pos(at, *hot, hot_len, len - 1);
                    b[i] = *value;
                }
            }
            Mutation::Truncate { at } => b.truncate(at.index(len + 1)),
            Mutation::Delete { at, hot, len: n } => {
                let i = pos(at, *hot, hot_len, len);
                let end = (i + n).min(len);
                b.drain(i..end);
            }
            Mutation::Insert { at, hot, bytes } => {
                let i = pos(at, *hot, hot_len, len);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Token { at, hot, token } => {
                if !dict.is_empty() {
                    let i = pos(at, *hot, hot_len, len);
                    b.splice(i..i, dict[token.index(dict.len())].iter().copied());
                }
            }
            Mutation::HugeLength {
                at,
                hot,
                wide,
                value,
            } => {
                let v = HUGE[value.index(HUGE.len())];
                let bytes: Vec<u8> = if *wide {
                    v.to_le_bytes().to_vec()
                } else {
                    (v as u32).to_le_bytes().to_vec()
                };
                if len >= bytes.len() {
                    let i = pos(at, *hot, hot_len, len - bytes.len());
                    b[i..i + bytes.len()].copy_from_slice(&bytes);
                }
            }
            Mutation::Duplicate {
                from,
                len: n,
                to,
                hot,
            } => {
                if len > 0 {
                    let s = from.index(len);
                    let e = (s + n).min(len);
                    let chunk = b[s..e].to_vec();
                    let i = pos(to, *hot, hot_len, len);
                    b.splice(i..i, chunk);
                }
            }
        }
    }
    b
}

/// A JSON value in place of the one at a path: edges of every type, and nesting deeper than
/// any parser should follow.
fn odd_json(choice: usize) -> serde_json::Value {
    use serde_json::json;
    match choice % 14 {
        0 => json!(u64::MAX),
        1 => json!(-1),
        2 => json!(1e308),
        3 => json!(0),
        4 => json!(""),
        5 => json!("x".repeat(100_000)),
        6 => serde_json::Value::Null,
        7 => json!(true),
        8 => json!({}),
        9 => json!([]),
        10 => json!(vec![0; 10_000]),
        11 => json!("\u{0}\u{feff}\u{fffd}"),
        12 => json!(-0.5),
        _ => {
            let mut v = json!(1);
            for _ in 0..100 {
                v = json!([v]);
            }
            v
        }
    }
}

/// Every value of a JSON document as a JSON pointer, in document order.
fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// `seed` (a JSON document) with `n` values replaced by odd ones, serialized again.
fn mutate_json(seed: &serde_json::Value, picks: &[(Index, usize)]) -> Vec<u8> {
    let mut v = seed.clone();
    for (at, choice) in picks {
        let mut ptrs = Vec::new();
        pointers(&v, String::new(), &mut ptrs);
        let p = &ptrs[at.index(ptrs.len())];
        let new = odd_json(*choice);
        if p.is_empty() {
            v = new;
        } else if let Some(slot) = v.pointer_mut(p) {
            *slot = new;
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// What is fuzzed: one or more valid seeds, how much of each is header, and whether the seeds
/// are JSON (then values are also replaced structurally).
pub struct Target {
    /// The parser's name, for messages and the default RNG seed.
    pub name: &'static str,
    pub seeds: Vec<Vec<u8>>,
    /// Bytes at the start of a seed where hot mutations land (0: anywhere).
    pub hot_len: usize,
    pub json: bool,
    pub cases: u32,
}

fn inputs(t: &Target) -> BoxedStrategy<Vec<u8>> {
    let seeds = Arc::new(t.seeds.clone());
    let dict = Arc::new(text_dictionary());
    let hot = t.hot_len;
    let (s1, d1) = (seeds.clone(), dict.clone());
    let mutated = (any::<Index>(), mutations())
        .prop_map(move |(which, muts)| apply(&s1[which.index(s1.len())], hot, &d1, &muts));
    let random = proptest::collection::vec(any::<u8>(), 0..512);
    if !t.json {
        return prop_oneof![8 => mutated, 1 => random].boxed();
    }
    let parsed: Arc<Vec<serde_json::Value>> = Arc::new(
        t.seeds
            .iter()
            .filter_map(|s| serde_json::from_slice(s).ok())
            .collect(),
    );
    assert!(!parsed.is_empty(), "{}: no seed is JSON", t.name);
    let (p2, d2) = (parsed.clone(), dict);
    let structural = (
        any::<Index>(),
        proptest::collection::vec((any::<Index>(), 0usize..14), 1..3),
        prop_oneof![3 => Just(Vec::new()), 1 => mutations()],
    )
        .prop_map(move |(which, picks, muts)| {
            let doc = mutate_json(&p2[which.index(p2.len())], &picks);
            apply(&doc, 0, &d2, &muts)
        });
    prop_oneof![5 => mutated, 4 => structural, 1 => random].boxed()
}

/// A parser under test: returns whether it accepted the input.
type Check = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Runs `check` on one input in its own thread under the time and allocation guards.
fn guarded(input: Vec<u8>, check: Check) -> Result<bool, String> {
    let len = input.len();
    let limit = alloc_limit(len);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        alloc_guard::set_limit(limit);
        let accepted = catch_unwind(AssertUnwindSafe(|| check(&input))).ok();
        let over = alloc_guard::take_over();
        alloc_guard::set_limit(0);
        let _ = tx.send((accepted, over));
    });
    match rx.recv_timeout(TIME_LIMIT) {
        Ok((Some(accepted), 0)) => Ok(accepted),
        Ok((Some(_), over)) => Err(format!(
            "asked for {over} bytes at once for a {len}-byte input (limit {limit})"
        )),
        Ok((None, _)) | Err(RecvTimeoutError::Disconnected) => {
            Err("panicked (the message is printed above)".into())
        }
        Err(RecvTimeoutError::Timeout) => Err(format!("still running after {TIME_LIMIT:?}")),
    }
}

/// Fuzzes `check` with `target.cases` inputs (or `SOUP_FUZZ_CASES`); panics with the smallest
/// failing input found. `check` returns whether the parser accepted the input, so that the
/// summary shows how many mutants got past it (a fuzz that only ever hits the first check
/// would prove little).
pub fn fuzz(target: Target, check: impl Fn(&[u8]) -> bool + Send + Sync + 'static) {
    let cases = std::env::var("SOUP_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(target.cases);
    let seed_text = std::env::var("SOUP_FUZZ_SEED").unwrap_or_else(|_| target.name.to_string());
    let mut seed = [0u8; 32];
    for (i, b) in seed_text.bytes().enumerate() {
        seed[i % 32] = seed[i % 32].wrapping_mul(31).wrapping_add(b);
    }
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        // Inputs are built by `prop_map`, which never rejects.
        max_global_rejects: 0,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let check: Check = Arc::new(check);
    let strategy = inputs(&target);
    let started = std::time::Instant::now();
    let accepted = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&strategy, |input| {
        let ok = guarded(input, check.clone()).map_err(TestCaseError::fail)?;
        accepted.fetch_add(u32::from(ok), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(proptest::test_runner::TestError::Fail(why, input)) => {
            let shown: String = String::from_utf8_lossy(&input).chars().take(3000).collect();
            panic!(
                "fuzz {}: {why}; minimal input ({} bytes, as text): {shown:?}",
                target.name,
                input.len()
            );
        }
        Err(e) => panic!("fuzz {}: {e}", target.name),
    }
    eprintln!(
        "fuzz {}: {cases} cases ({} accepted, the rest refused with an error) in {:.1} s: \
         no panic, hang or oversized allocation",
        target.name,
        accepted.into_inner(),
        started.elapsed().as_secs_f64()
    );
}

/// Runs `f` on `input` under the same guards as a fuzz case and returns how it went, for the
/// targeted tests (a small input claiming a huge length must return an error quickly).
pub fn run_guarded<T: Send + 'static>(
    input: Vec<u8>,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, String> {
    let len = input.len();
    let limit = alloc_limit(len);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        alloc_guard::set_limit(limit);
        let out = catch_unwind(AssertUnwindSafe(|| f(&input)));
        let over = alloc_guard::take_over();
        alloc_guard::set_limit(0);
        let _ = tx.send((out.ok(), over));
    });
    match rx.recv_timeout(TIME_LIMIT) {
        Ok((Some(out), 0)) => Ok(out),
        Ok((Some(_), over)) => Err(format!(
            "asked for {over} bytes at once for a {len}-byte input"
        )),
        Ok((None, _)) | Err(RecvTimeoutError::Disconnected) => Err("panicked".into()),
        Err(RecvTimeoutError::Timeout) => Err(format!("still running after {TIME_LIMIT:?}")),
    }
}

/// A global allocator that notes, per thread, any single request above a limit. Requests up
/// to 2 GiB are still served (the case then fails with the size); larger ones are refused,
/// which aborts the test binary with "memory allocation of N bytes failed".
pub mod alloc_guard {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    const HARD_LIMIT: usize = 2 << 30;

    thread_local! {
        static LIMIT: Cell<usize> = const { Cell::new(0) };
        static OVER: Cell<usize> = const { Cell::new(0) };
    }

    pub fn set_limit(limit: usize) {
        let _ = LIMIT.try_with(|l| l.set(limit));
        let _ = OVER.try_with(|o| o.set(0));
    }

    pub fn take_over() -> usize {
        OVER.try_with(|o| o.replace(0)).unwrap_or(0)
    }

    fn allowed(size: usize) -> bool {
        let limit = LIMIT.try_with(Cell::get).unwrap_or(0);
        if limit == 0 || size <= limit {
            return true;
        }
        let _ = OVER.try_with(|o| o.set(o.get().max(size)));
        size <= HARD_LIMIT
    }

    pub struct Guard;

    // SAFETY: every call is forwarded to the system allocator unchanged, or refused with null
    // (which the GlobalAlloc contract allows).
    unsafe impl GlobalAlloc for Guard {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if allowed(layout.size()) {
                System.alloc(layout)
            } else {
                std::ptr::null_mut()
            }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if allowed(layout.size()) {
                System.alloc_zeroed(layout)
            } else {
                std::ptr::null_mut()
            }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if allowed(new_size) {
                System.realloc(ptr, layout, new_size)
            } else {
                std::ptr::null_mut()
            }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
    }

    #[global_allocator]
    static GUARD: Guard = Guard;
}
