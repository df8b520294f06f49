//! A stable fuzzing harness for everything that takes client input: `where` (jobs and PVC
//! records), `sort`, the REST query string, the SQL built from what parses (run on a real
//! SQLite, `store/fuzz.rs`) and raw bytes through a real HTTP connection (`rest/fuzz.rs`).
//! cargo-fuzz needs a nightly toolchain, which this project's CI does not have; this harness runs
//! on stable inside the test suite.
//!
//! Each run starts from a fresh seed (printed; `JOBTRACK_FUZZ_SEED` replays a run) and mutates
//! the committed corpus (`fuzz/corpus/<target>_*`) with byte flips, insertions, deletions,
//! splices and grammar tokens, `JOBTRACK_FUZZ_ROUNDS` times (default 100,000; the SQL targets
//! run a fifth of that, the HTTP target a tenth). Inputs are raw bytes: a target that takes text sees only valid UTF-8 (what gRPC and
//! the REST decoder can hand it), the HTTP target sees everything.
//!
//! Every input must be answered — accepted, or refused as a client error — without a panic.
//! Each answer has a *shape* (the answer with its numbers and quoted text blanked): an input
//! whose answer has a shape not seen before found a new way through the code, so it joins the
//! pool that later rounds mutate, and with `JOBTRACK_FUZZ_GROW=1` it is written to the corpus
//! (commit what that adds). A failing input is always written there as `<target>_bug_*`, so
//! that once fixed it stays in the corpus as a regression seed.
//!
//! Beside it, property tests generate valid `where` documents from the query grammar, parse them,
//! render the filter back to a `where` (`render.rs`) and check that it parses to the same filter.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use super::Rng;
use crate::domain::query::{Filter, ListQuery, PageAt, SortKey, Value, parse_sort, parse_where};
use crate::domain::{Job, PvcProgress};
use crate::error::Error;

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "$regex",
    "$in",
    "$nin",
    "$and",
    "$or",
    "$nor",
    "$not",
    "$exists",
    "$gt",
    "$lte",
    "$options",
    "null",
    "true",
    "1e309",
    "-1",
    "\\u0000",
    "\\",
    "\"_id\"",
    "\"kube_copy_progress.stats.io_size\"",
    "\"stats.transferred_size\"",
    "\"_created\"",
    "\"Mon, 24 Aug 2020 01:59:18 GMT\"",
    "\"state\"",
    "\"RUNNING\"",
    "(",
    ")",
    "-",
    "%",
    "%7B",
    "%FF",
    "%C3%28",
    "&",
    "=",
    "+",
    "page=",
    "max_results=",
    "projection=",
    "where=",
    "sort=",
    // The regular-expression language inside `$regex`.
    "(?i)",
    "(?x)",
    ".*",
    "|",
    "^",
    "[^a-z]",
    "\\\\d",
    "{2,}",
    "+?",
    "\u{10FFFF}",
    "\u{0}",
    "\r\n",
    " ",
];

/// What one input did: the shape of its answer, or why it is a bug.
pub(crate) type Verdict = Result<String, String>;

/// The verdict of a call that may refuse its input only as a client mistake. A refusal's kind
/// is where in the code it was refused.
pub(crate) fn answer(result: Result<String, Error>) -> Verdict {
    match result {
        Ok(shape) => Ok(shape),
        Err(Error::InvalidArgument(_)) => Ok(refused_at()),
        Err(other) => Err(format!("{other:?}, not INVALID_ARGUMENT")),
    }
}

/// Where the last refusal on this thread was made: a file and line of the parsers.
pub(crate) fn refused_at() -> String {
    crate::error::REFUSED_AT.with(|at| match at.take() {
        Some(at) => format!("refused at {}:{}", at.file(), at.line()),
        None => "refused".into(),
    })
}

/// The kind of an accepted filter: the set of the kinds of node it is made of (an operator on a
/// kind of field, with nulls and negations told apart), not their number or order.
pub(crate) fn filter_kind<T>(filter: &Filter<T>) -> String {
    fn walk<T>(filter: &Filter<T>, kinds: &mut BTreeSet<String>) {
        let node = match filter {
            Filter::And(parts) | Filter::Or(parts) => {
                parts.iter().for_each(|p| walk(p, kinds));
                let (name, empty) = match filter {
                    Filter::And(_) => ("and", parts.is_empty()),
                    _ => ("or", parts.is_empty()),
                };
                format!("{name}{}", if empty { "()" } else { "" })
            }
            Filter::Not(inner) => {
                walk(inner, kinds);
                "not".into()
            }
            Filter::Compare { field, op, value } => {
                format!("{:?} {op:?} {}", field.kind, value_kind(value))
            }
            Filter::In {
                field,
                values,
                negated,
            } => {
                let nulls = values.contains(&Value::Null);
                format!(
                    "{:?} in negated={negated} null={nulls} empty={}",
                    field.kind,
                    values.is_empty()
                )
            }
            Filter::Exists { field, exists } => format!("{:?} exists={exists}", field.kind),
            Filter::Regex { field, .. } => format!("{:?} regex", field.kind),
        };
        kinds.insert(node);
    }
    let mut kinds = BTreeSet::new();
    walk(filter, &mut kinds);
    kinds.into_iter().collect::<Vec<_>>().join("; ")
}

/// The kind of an order: the set of the kinds of its keys (a kind of field, a direction).
pub(crate) fn order_kind<T>(keys: &[SortKey<T>]) -> String {
    let kinds: BTreeSet<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{:?} {}",
                k.field.kind,
                if k.descending { "desc" } else { "asc" }
            )
        })
        .collect();
    kinds.into_iter().collect::<Vec<_>>().join(", ")
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Int(_) => "int",
        Value::Text(_) => "text",
        Value::Lines(_) => "lines",
        Value::Times(_) => "times",
    }
}

/// `text` with what varies blanked: runs of digits become `0`, quoted text becomes `""`.
pub(crate) fn shape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '0'..='9' => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                out.push('0');
            }
            '"' => {
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            c => out.push(c),
        }
    }
    out
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let prefix = format!("{target}_");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| std::fs::read(e.path()).expect("a corpus file"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no corpus for {target}");
    out
}

/// Writes `input` to the corpus as `<target>_<kind>_<hash>.txt`.
fn save(target: &str, kind: &str, input: &[u8]) -> PathBuf {
    let hash = sha1_smol::Sha1::from(input).digest().to_string();
    let path = corpus_dir().join(format!("{target}_{kind}_{}.txt", &hash[..12]));
    let _ = std::fs::write(&path, input);
    path
}

/// Longest input a mutation makes: enough for any query a client writes, and it keeps inputs
/// from snowballing through splices.
const MAX_INPUT: usize = 4096;

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    input.truncate(MAX_INPUT);
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(input.len() + 1);
        match rng.below(5) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 if !input.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(input.len());
                input.drain(at.min(end)..end);
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let piece = other[from..(from + rng.below(16)).min(other.len())].to_vec();
                input.splice(at..at, piece);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
        }
    }
    input
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The rounds of a run: `JOBTRACK_FUZZ_ROUNDS`, else `default`.
pub(crate) fn rounds(default: u64) -> u64 {
    env_number("JOBTRACK_FUZZ_ROUNDS").map_or(default, |r| r.max(1))
}

/// This run's seed: `JOBTRACK_FUZZ_SEED`, else a fresh one.
fn run_seed() -> u64 {
    env_number("JOBTRACK_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    })
}

/// Runs `check` on `rounds` mutations of `target`'s corpus; panics, naming the seed, the round
/// and the input, at the first input that is not answered (see the module's comment).
pub(crate) fn fuzz(target: &str, rounds: u64, mut check: impl FnMut(&[u8]) -> Verdict) {
    let seed = run_seed();
    println!("fuzz {target}: seed {seed} (replay: JOBTRACK_FUZZ_SEED={seed}), {rounds} rounds");
    let grow = std::env::var_os("JOBTRACK_FUZZ_GROW").is_some();
    let mut pool = corpus(target);
    let mut shapes = HashSet::new();
    let failed = |round: &str, input: &[u8], why: String| {
        let path = save(target, "bug", input);
        panic!(
            "fuzz {target}, seed {seed}, {round}: {:?} {why}; saved as {}",
            String::from_utf8_lossy(input),
            path.display()
        )
    };
    for seed_input in pool.clone() {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&seed_input))) {
            Ok(Ok(shape)) => {
                shapes.insert(shape);
            }
            Ok(Err(why)) => failed("a corpus seed", &seed_input, why),
            Err(_) => failed("a corpus seed", &seed_input, "panicked".into()),
        }
    }
    let mut rng = Rng(seed
        ^ target
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b)));
    for round in 0..rounds {
        let input = mutate(&mut rng, &pool);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(shape)) => {
                if shapes.insert(shape) {
                    if grow {
                        save(target, "new", &input);
                    }
                    pool.push(input);
                }
            }
            Ok(Err(why)) => failed(&format!("round {round}"), &input, why),
            Err(_) => failed(&format!("round {round}"), &input, "panicked".into()),
        }
    }
    println!(
        "fuzz {target}: {} kinds of answer, {} seeds in the pool",
        shapes.len(),
        pool.len()
    );
    if std::env::var_os("JOBTRACK_FUZZ_SHAPES").is_some() {
        let mut all: Vec<&String> = shapes.iter().collect();
        all.sort();
        for s in all.iter().step_by((all.len() / 40).max(1)) {
            println!("  {}", s.chars().take(160).collect::<String>());
        }
    }
}

/// The text of an input, if it is UTF-8 (what gRPC and the REST decoder can hand a parser).
pub(crate) fn text(input: &[u8]) -> Option<&str> {
    std::str::from_utf8(input).ok()
}

fn sample_job() -> Job {
    crate::domain::NewJob {
        id: None,
        fields: crate::domain::JobFields {
            name: Some("prod-eu-1".into()),
            start_time: Some(1_598_234_357),
            ..Default::default()
        },
        state: Some(crate::domain::JobState::Running),
        activity: vec!["started".into()],
    }
    .into_job(1_598_234_357_000_000)
    .expect("a valid job")
}

#[test]
fn job_where_never_panics_and_refuses_only_with_invalid_argument() {
    let job = sample_job();
    fuzz("where", rounds(100_000), |input| {
        let Some(text) = text(input) else {
            return Ok("not UTF-8".into());
        };
        answer(parse_where::<Job>(text).map(|filter| {
            // Whatever parsed can be evaluated (as watchers and counts do) without panicking.
            let _ = filter.matches(&job);
            filter_kind(&filter)
        }))
    });
}

#[test]
fn pvc_where_never_panics_and_refuses_only_with_invalid_argument() {
    fuzz("pvcwhere", rounds(100_000), |input| {
        let Some(text) = text(input) else {
            return Ok("not UTF-8".into());
        };
        answer(parse_where::<PvcProgress>(text).map(|filter| filter_kind(&filter)))
    });
}

#[test]
fn sort_never_panics_and_refuses_only_with_invalid_argument() {
    fuzz("sort", rounds(100_000), |input| {
        let Some(text) = text(input) else {
            return Ok("not UTF-8".into());
        };
        answer(parse_sort::<Job>(text).and_then(|keys| {
            ListQuery::<Job>::parse("", text, 10, PageAt::Number(3), 1000, None)?;
            Ok(order_kind(&keys))
        }))
    });
}

#[test]
fn refusals_are_known_by_where_they_are_made_and_filters_by_their_kinds_of_node() {
    let refused = |text: &str| answer(parse_where::<Job>(text).map(|f| filter_kind(&f)));
    let unknown = refused(r#"{"nope":1}"#).expect("a refusal");
    assert!(
        unknown.starts_with("refused at src/domain/query/parse.rs:"),
        "{unknown}"
    );
    assert_eq!(
        refused(r#"{"$or":[{"other: odd":2}]}"#).expect("a refusal"),
        unknown
    );
    assert_ne!(
        refused(r#"{"name":{"$in":1}}"#).expect("a refusal"),
        unknown
    );
    let a = parse_where::<Job>(r#"{"name":"x","start_time":{"$gt":5}}"#).expect("valid");
    let b = parse_where::<Job>(r#"{"message":"y","end_time":{"$gt":7},"cluster_name":"z"}"#)
        .expect("valid");
    assert_eq!(filter_kind(&a), filter_kind(&b));
}

#[test]
fn shapes_blank_numbers_and_quoted_text() {
    assert_eq!(
        shape(r#"where at a.$gt: "x\"y" is 123, not 4"#),
        r#"where at a.$gt: "" is 0, not 0"#
    );
}
