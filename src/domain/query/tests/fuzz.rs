//! A stable fuzzing harness for the parsers that take client input: `where`, `sort` and the REST
//! query string (with its projection). cargo-fuzz needs a nightly toolchain, which this project's
//! CI does not have; this harness runs on stable inside `cargo test`: it mutates the committed
//! corpus (`fuzz/corpus`) with random byte flips, insertions, deletions, splices and JSON tokens
//! for a fixed number of rounds, and checks that every input is answered — parsed or refused as
//! INVALID_ARGUMENT — and never panics. `JOBTRACK_FUZZ_ROUNDS` sets the rounds (default 100,000
//! per target, a couple of seconds); a failing input is printed so it can join the corpus.
//!
//! Beside it, property tests generate valid `where` documents from the query grammar, parse them,
//! render the filter back to a `where` (`render.rs`) and check that it parses to the same
//! filter, for both resources.

use super::Rng;
use crate::domain::Job;
use crate::domain::query::{ListQuery, PageAt, parse_sort, parse_where};
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
    "$not",
    "$exists",
    "$gt",
    "null",
    "true",
    "1e309",
    "-1",
    "\\u0000",
    "\\",
    "\"_id\"",
    "\"kube_copy_progress.stats.io_size\"",
    "(",
    ")",
    "-",
    "%",
    "%7B",
    "&",
    "=",
    "+",
    "page=",
    "max_results=",
    "projection=",
    "(?i)",
    ".*",
    "\u{10FFFF}",
    "\u{0}",
];

fn corpus(prefix: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| std::fs::read(e.path()).expect("a corpus file"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no corpus for {prefix}");
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
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

fn rounds() -> usize {
    std::env::var("JOBTRACK_FUZZ_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100_000)
}

/// Runs `target` on mutated inputs; every outcome must be Ok or INVALID_ARGUMENT, no panic.
pub(crate) fn fuzz(
    prefix: &str,
    seed: u64,
    target: impl Fn(&str) -> Result<(), Error> + std::panic::RefUnwindSafe,
) {
    let seeds = corpus(prefix);
    let mut rng = Rng(seed);
    for round in 0..rounds() {
        let bytes = mutate(&mut rng, &seeds);
        let input = String::from_utf8_lossy(&bytes).into_owned();
        let outcome = std::panic::catch_unwind(|| target(&input));
        match outcome {
            Ok(Ok(())) | Ok(Err(Error::InvalidArgument(_))) => {}
            Ok(Err(other)) => {
                panic!("round {round}: {input:?} gave {other:?}, not INVALID_ARGUMENT")
            }
            Err(_) => panic!("round {round}: {input:?} panicked; add it to fuzz/corpus"),
        }
    }
}

#[test]
fn where_never_panics_and_refuses_only_with_invalid_argument() {
    fuzz("where", 0x9E37_79B9_7F4A_7C15, |input| {
        let filter = parse_where::<Job>(input)?;
        // Whatever parsed can be evaluated (as watchers and counts do) without panicking.
        let _ = filter.matches(&sample_job());
        Ok(())
    });
}

#[test]
fn sort_never_panics_and_refuses_only_with_invalid_argument() {
    fuzz("sort", 0xD1B5_4A32_D192_ED03, |input| {
        parse_sort::<Job>(input)?;
        ListQuery::<Job>::parse("", input, 10, PageAt::Number(3), 1000, None).map(|_| ())
    });
}
