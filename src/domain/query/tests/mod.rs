//! Tests of the query language: its parsers (here), a fuzzing harness over the committed corpus
//! ([`fuzz`]), and property tests that render parsed filters back to `where` ([`render`]).

pub(crate) mod fuzz;
mod render;

/// xorshift64*: deterministic, so a failure repeats.
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

use crate::domain::query::*;
use crate::domain::{Job, PvcProgress};

#[test]
fn dates_compare_at_second_resolution() {
    let f = parse_where::<Job>(r#"{"_created":{"$gt":"Mon, 24 Aug 2020 01:59:18 GMT"}}"#)
        .expect("valid");
    assert_eq!(
        f,
        Filter::Compare {
            field: Job::field("_created").expect("a field"),
            op: CmpOp::Gte,
            value: Value::Int(1_598_234_359_000_000)
        }
    );
}

#[test]
fn enum_strings_are_normalised_misspellings_refused_and_other_values_match_nothing() {
    let f = parse_where::<PvcProgress>(
        r#"{"state":{"$in":["SKIPPED_MISSING_ACCOUNT","PVC_STATE_ACTIVE","NOPE"]}}"#,
    )
    .expect("valid");
    assert_eq!(
        f,
        Filter::In {
            field: PvcProgress::field("state").expect("a field"),
            values: vec![
                Value::Text("SKIPPED-MISSING-ACCOUNT".into()),
                Value::Text("ACTIVE".into()),
                Value::Text("NOPE".into())
            ],
            negated: false
        }
    );
    for (w, says) in [
        (
            r#"{"state":"RUNNIN"}"#,
            "where at state: state has no value \"RUNNIN\" (did you mean RUNNING?); it is one of PENDING, RUNNING, COMPLETED, FAILED, SKIPPED, PARTIAL, CANCELLED",
        ),
        (r#"{"state":"running"}"#, "(did you mean RUNNING?)"),
        (
            r#"{"state":{"$ne":"CANCELED"}}"#,
            "where at state.$ne: state has no value \"CANCELED\" (did you mean CANCELLED?)",
        ),
        (
            r#"{"type":{"$nin":["K8S_COPY","K8S_SANP"]}}"#,
            "where at type.$nin: type has no value \"K8S_SANP\" (did you mean K8S_SNAP?)",
        ),
    ] {
        let message = parse_where::<Job>(w).expect_err(w).to_string();
        assert!(message.contains(says), "{w}: {message}");
    }
    // The documented Terraform request names a type of another version: it matches nothing.
    for w in [
        r#"{"type":{"$nin":["DELETE_BACKUP","AWSRDS_BACKUP_DELETE","AGENT_UPDATE"]}}"#,
        r#"{"state":"JOB_STATE_JOB_STATE_RUNNING"}"#,
        r#"{"state":"STOPPED_BY_OPERATOR"}"#,
    ] {
        assert!(parse_where::<Job>(w).is_ok(), "{w}");
    }
}

#[test]
fn bad_where_says_where_it_is_wrong() {
    let cases = [
        (r#"{"start_time":"x"}"#, "start_time expects an integer"),
        (r#"{"nope":1}"#, "unknown field \"nope\""),
        (r#"{"name":{"$foo":1}}"#, "unknown operator $foo"),
        (r#"{"$where":"1"}"#, "$where"),
        (
            r#"{"$or":[{"name":{"$regex":"("}}]}"#,
            "where at $or[0].name.$regex: bad regular expression",
        ),
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
    ];
    for (input, expected) in cases {
        let err = parse_where::<Job>(input).expect_err(input).to_string();
        assert!(err.contains(expected), "{input}: {err}");
    }
    let deep = format!("{}{{}}{}", r#"{"$and":["#.repeat(40), "]}".repeat(40));
    let err = parse_where::<Job>(&deep).expect_err("deep").to_string();
    assert!(err.contains("nested deeper"), "{err}");
}

#[test]
fn both_sort_forms_parse_alike() {
    let a = parse_sort::<Job>("-_created,name").expect("plain");
    let b = parse_sort::<Job>(r#"[("_created", -1), ('name', 1)]"#).expect("literal");
    let show = |k: &[SortKey<Job>]| {
        k.iter()
            .map(|k| (k.field.name, k.descending))
            .collect::<Vec<_>>()
    };
    assert_eq!(show(&a), show(&b));
    assert_eq!(show(&a), vec![("_created", true), ("name", false)]);
    assert!(parse_sort::<Job>("-bogus").is_err());
    assert!(parse_sort::<Job>("[(\"name\", 2)]").is_err());
}

#[test]
fn a_page_token_is_refused_with_another_query() {
    let q = ListQuery::<Job>::parse("", "name", 10, PageAt::Token(""), 1000, None).expect("valid");
    let job = crate::domain::NewJob::default().into_job(0).expect("valid");
    let token = q.token_after(&job);
    assert!(ListQuery::<Job>::parse("", "name", 10, PageAt::Token(&token), 1000, None).is_ok());
    assert!(ListQuery::<Job>::parse("", "-name", 10, PageAt::Token(&token), 1000, None).is_err());
    assert!(
        ListQuery::<Job>::parse("", "name", 10, PageAt::Token("garbage!"), 1000, None).is_err()
    );
}
