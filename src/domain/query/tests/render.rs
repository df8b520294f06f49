//! Property tests of the `where` parser: valid documents generated from the grammar parse, and
//! their filters rendered back to `where` ([`render`]) parse to the same filter. The renderer
//! exists for these tests only.

use serde_json::{Map, Value as Json, json};

use super::Rng;
use crate::domain::query::{
    CmpOp, EnumKind, Field, Filter, Kind, Operator, Resource, Value, parse_where,
};
use crate::domain::{Job, JobState, JobType, OpType, PvcProgress, PvcState};

/// `filter` as a `where` document that [`parse_where`] reads back to an equal filter, for every
/// filter it produced: one operator per object, dates as RFC 1123 strings (date comparisons are
/// stored as microsecond bounds on whole seconds), enums in their documented spelling, regex
/// flags inline (`(?i)...`).
fn render<T: Resource>(filter: &Filter<T>) -> Json {
    let one = |key: &str, value: Json| Json::Object(Map::from_iter([(key.to_string(), value)]));
    let list = |parts: &[Filter<T>]| Json::Array(parts.iter().map(render).collect());
    match filter {
        Filter::And(parts) if parts.is_empty() => Json::Object(Map::new()),
        Filter::And(parts) => one("$and", list(parts)),
        // `$or` needs a non-empty list; an empty `$in` on a date is the one `where` that parses
        // to an empty disjunction.
        Filter::Or(parts) if parts.is_empty() => {
            match T::fields()
                .iter()
                .find(|f| f.kind == Kind::Time && f.uses.query)
            {
                Some(date) => one(date.name, one("$in", Json::Array(Vec::new()))),
                None => one("$or", Json::Array(Vec::new())),
            }
        }
        Filter::Or(parts) => one("$or", list(parts)),
        Filter::Not(inner) => one("$not", render(inner)),
        Filter::Compare { field, op, value } => one(
            field.name,
            one(Operator::Cmp(*op).name(), to_json(value, field.kind)),
        ),
        Filter::In {
            field,
            values,
            negated,
        } => {
            let op = if *negated {
                Operator::Nin
            } else {
                Operator::In
            };
            let values = values.iter().map(|v| to_json(v, field.kind)).collect();
            one(field.name, one(op.name(), Json::Array(values)))
        }
        Filter::Exists { field, exists } => one(
            field.name,
            one(Operator::Exists.name(), Json::Bool(*exists)),
        ),
        Filter::Regex { field, pattern } => one(
            field.name,
            one(
                Operator::Regex.name(),
                Json::String(pattern.as_str().to_string()),
            ),
        ),
    }
}

/// A value as written in a `where`: a date field's microseconds as an RFC 1123 string of their
/// whole second.
fn to_json(value: &Value, kind: Kind) -> Json {
    match (value, kind) {
        (Value::Null, _) => Json::Null,
        (Value::Int(micros), Kind::Time) => {
            let secs = micros.div_euclid(1_000_000);
            match u64::try_from(secs) {
                Ok(secs) => Json::String(httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
                )),
                Err(_) => Json::from(secs),
            }
        }
        (Value::Int(i), _) => Json::from(*i),
        (Value::Text(s), _) => Json::String(s.clone()),
        (Value::Lines(lines), _) => Json::from(lines.clone()),
        (Value::Times(times), _) => Json::from(times.clone()),
    }
}

/// Every comparison operator renders with the name the parser reads.
#[test]
fn comparison_operators_are_spelled_as_the_parser_reads_them() {
    for op in [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Gt,
        CmpOp::Gte,
        CmpOp::Lt,
        CmpOp::Lte,
    ] {
        assert_eq!(
            Operator::parse(Operator::Cmp(op).name()),
            Some(Operator::Cmp(op))
        );
    }
}

/// Deepest nesting of `$and`/`$or`/`$nor`/`$not` the generator writes.
const MAX_LEVEL: usize = 4;
const CASES: usize = 5_000;

const TEXTS: &[&str] = &[
    "",
    "prod-eu-1",
    "a\"b",
    "back\\slash",
    "é",
    "日本語",
    "\u{10FFFF}",
    "%7B&=+",
    " spaced ",
    "{\"$gt\":1}",
    "0123",
];
const PATTERNS: &[&str] = &[
    "^prod",
    "eu-[0-9]+$",
    "a|b",
    "(?i)run",
    ".*",
    "\\d{2,}",
    "[[:alpha:]]+",
    "é+",
    "x y # a comment under x",
    "\\$regex",
];
const FLAGS: &[&str] = &["i", "m", "s", "x", "imsx", "si"];

struct Gen(Rng);

impl Gen {
    fn pick<'a, X>(&mut self, items: &'a [X]) -> &'a X {
        &items[self.0.below(items.len())]
    }

    fn chance(&mut self, n: usize) -> bool {
        self.0.below(n) == 0
    }

    /// A query object: zero to three entries of logical operators and fields.
    fn doc<T: Resource>(&mut self, level: usize) -> Json {
        let mut doc = Map::new();
        for _ in 0..self.0.below(4) {
            let choice = if level < MAX_LEVEL {
                self.0.below(8)
            } else {
                7
            };
            match choice {
                0..=2 => {
                    let key = *self.pick(&["$and", "$or", "$nor"]);
                    let list = (0..1 + self.0.below(3))
                        .map(|_| self.doc::<T>(level + 1))
                        .collect();
                    doc.insert(key.into(), Json::Array(list));
                }
                3 => {
                    let inner = self.doc::<T>(level + 1);
                    doc.insert("$not".into(), inner);
                }
                _ => {
                    let queryable: Vec<&Field<T>> =
                        T::fields().iter().filter(|f| f.uses.query).collect();
                    let field = *self.pick(&queryable);
                    let value = self.condition(field, level);
                    doc.insert(field.name.into(), value);
                }
            }
        }
        Json::Object(doc)
    }

    /// What a field must meet: a bare value or an object of one to three operators.
    fn condition<T>(&mut self, field: &Field<T>, level: usize) -> Json {
        if self.chance(4) {
            return self.value_or_null(field.kind);
        }
        let mut ops = Map::new();
        for _ in 0..1 + self.0.below(3) {
            let op = *self.pick(&[
                "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not",
                "$regex",
            ]);
            let arg = match op {
                "$eq" | "$ne" => self.value_or_null(field.kind),
                "$in" | "$nin" => Json::Array(
                    (0..self.0.below(4))
                        .map(|_| self.value_or_null(field.kind))
                        .collect(),
                ),
                "$exists" => self
                    .pick(&[json!(true), json!(false), json!(0), json!(1)])
                    .clone(),
                "$not" if level < MAX_LEVEL => match self.condition(field, level + 1) {
                    inner @ Json::Object(_) => inner,
                    _ => continue,
                },
                "$regex" if matches!(field.kind, Kind::Text | Kind::Id | Kind::Enum(_)) => {
                    if self.chance(2) {
                        let flags = *self.pick(FLAGS);
                        ops.insert("$options".into(), json!(flags));
                    }
                    json!(self.pick(PATTERNS))
                }
                "$not" | "$regex" => continue,
                _ => self.value(field.kind),
            };
            ops.insert(op.into(), arg);
        }
        if ops.is_empty() || (ops.len() == 1 && ops.contains_key("$options")) {
            ops.remove("$options");
            ops.insert("$exists".into(), json!(true));
        }
        Json::Object(ops)
    }

    fn value_or_null(&mut self, kind: Kind) -> Json {
        if self.chance(6) {
            Json::Null
        } else {
            self.value(kind)
        }
    }

    /// A valid value of the field's kind, in any of the spellings clients send.
    fn value(&mut self, kind: Kind) -> Json {
        match kind {
            Kind::Int => match self.0.below(4) {
                0 => json!(*self.pick(&[0, 1, -1, 42, i64::MAX, i64::MIN])),
                1 => json!((self.0.below(1000) as f64) * 1.0), // 7.0: an integral float
                _ => json!(self.0.next() as i64),
            },
            Kind::Text | Kind::Id => json!(*self.pick(TEXTS)),
            Kind::Lines | Kind::Times => unreachable!("lines and times are not queryable"),
            Kind::Time => {
                // RFC 1123 covers the years 1970 to 9999.
                let secs = self.0.next() % 253_402_300_800;
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
                json!(httpdate::fmt_http_date(at))
            }
            Kind::Enum(kind) => {
                let (prefix, names): (&str, Vec<&str>) = match kind {
                    EnumKind::JobState => (
                        "JOB_STATE_",
                        JobState::ALL.iter().map(|s| s.as_str()).collect(),
                    ),
                    EnumKind::JobType => (
                        "JOB_TYPE_",
                        JobType::ALL.iter().map(|s| s.as_str()).collect(),
                    ),
                    EnumKind::PvcState => (
                        "PVC_STATE_",
                        PvcState::ALL.iter().map(|s| s.as_str()).collect(),
                    ),
                    EnumKind::OpType => {
                        ("OP_TYPE_", OpType::ALL.iter().map(|s| s.as_str()).collect())
                    }
                };
                let name = *self.pick(&names);
                // Unknown values that are no misspelling match nothing; misspellings are refused
                // (enum_strings_are_normalised_…).
                match self.0.below(5) {
                    0 => json!(format!("{prefix}{}", name.replace('-', "_"))),
                    1 => json!(name.replace('-', "_")),
                    2 => {
                        json!(*self.pick(&["NOPE", "AGENT_UPDATE", "JOB_STATE_JOB_STATE_RUNNING"]))
                    }
                    _ => json!(name),
                }
            }
        }
    }
}

/// Every generated `where` parses; its rendering parses to the same filter and renders to
/// the same text again.
fn round_trips<T: Resource>(seed: u64) {
    let mut generate = Gen(Rng(seed));
    for case in 0..CASES {
        let text = generate.doc::<T>(0).to_string();
        let first = parse_where::<T>(&text)
            .unwrap_or_else(|e| panic!("case {case}: the grammar wrote {text}, refused: {e}"));
        let rendered = render(&first).to_string();
        let second = parse_where::<T>(&rendered)
            .unwrap_or_else(|e| panic!("case {case}: {text} rendered as {rendered}, refused: {e}"));
        assert_eq!(first, second, "case {case}: {text} rendered as {rendered}");
        assert_eq!(
            render(&second).to_string(),
            rendered,
            "case {case}: rendering is not a fixed point"
        );
    }
}

#[test]
fn job_filters_render_and_parse_back_to_the_same_filter() {
    round_trips::<Job>(0x2F1E_3C5A_7B9D_0E4F);
}

#[test]
fn pvc_filters_render_and_parse_back_to_the_same_filter() {
    round_trips::<PvcProgress>(0x6A09_E667_F3BC_C908);
}

#[test]
fn rendering_writes_one_operator_per_object_and_dates_as_rfc_1123() {
    let filter = parse_where::<Job>(
        r#"{"_created":"Mon, 24 Aug 2020 01:59:18 GMT","state":"JOB_STATE_RUNNING","name":{"$regex":"^prod","$options":"i"}}"#,
    )
    .expect("valid");
    let rendered = render(&filter);
    let mut fields: Vec<Json> = rendered["$and"].as_array().expect("an $and").clone();
    fields.sort_by_key(|f| f.to_string());
    assert_eq!(
        fields,
        vec![
            json!({"$and": [
                {"_created": {"$gte": "Mon, 24 Aug 2020 01:59:18 GMT"}},
                {"_created": {"$lt": "Mon, 24 Aug 2020 01:59:19 GMT"}}
            ]}),
            json!({"name": {"$regex": "(?i)^prod"}}),
            json!({"state": {"$eq": "RUNNING"}}),
        ]
    );
    assert_eq!(
        render(&parse_where::<Job>(r#"{"_updated":{"$in":[]}}"#).expect("valid")),
        json!({"_created": {"$in": []}})
    );
}
