//! Values of fields: [`Value`] as queries and stored rows carry them, [`Datum`] as a record shows
//! them (borrowed, so reading a field for a filter or a row allocates nothing), and the [`Kind`]
//! that says how a field's values are written in a query, stored and shown.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::domain::{JobState, JobType, OpType, PvcState};
use crate::error::{Error, Result};

/// A field's value, owned: in a query, a page token, or read from a stored row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    /// An append-only list of lines (a job's activity); never in a query.
    Lines(Vec<String>),
    /// An append-only list of times, µs (when each activity line came); never in a query.
    Times(Vec<i64>),
}

/// A field's value as a record holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datum<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Lines(&'a [String]),
    Times(&'a [i64]),
}

impl<'a> Datum<'a> {
    pub fn int(v: Option<i64>) -> Datum<'a> {
        v.map_or(Datum::Null, Datum::Int)
    }

    pub fn text(v: Option<&'a str>) -> Datum<'a> {
        v.map_or(Datum::Null, Datum::Text)
    }

    pub fn is_null(self) -> bool {
        self == Datum::Null
    }

    pub fn to_value(self) -> Value {
        match self {
            Datum::Null => Value::Null,
            Datum::Int(i) => Value::Int(i),
            Datum::Text(s) => Value::Text(s.to_string()),
            Datum::Lines(lines) => Value::Lines(lines.to_vec()),
            Datum::Times(times) => Value::Times(times.to_vec()),
        }
    }

    /// SQL's order of the values of one column, which filters in memory must follow exactly:
    /// NULL first, integers before text, text bytewise.
    pub fn cmp_sql(self, other: &Value) -> Ordering {
        match (self, other) {
            (Datum::Int(a), Value::Int(b)) => a.cmp(b),
            (Datum::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Datum::Null, Value::Null) => Ordering::Equal,
            (Datum::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            (Datum::Int(_), _) => Ordering::Less,
            (_, Value::Int(_)) => Ordering::Greater,
            (Datum::Text(_), _) => Ordering::Less,
            (Datum::Lines(_) | Datum::Times(_), _) => Ordering::Greater,
        }
    }
}

impl Value {
    /// The value of a nullable integer field.
    pub fn into_int(self) -> Result<Option<i64>> {
        match self {
            Value::Null => Ok(None),
            Value::Int(i) => Ok(Some(i)),
            other => Err(wrong("an integer", &other)),
        }
    }

    /// The value of a nullable text field.
    pub fn into_text(self) -> Result<Option<String>> {
        match self {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            other => Err(wrong("text", &other)),
        }
    }

    /// The value of an enum field, parsed with `parse`.
    pub fn into_enum<E>(self, parse: fn(&str) -> Option<E>) -> Result<Option<E>> {
        match self.into_text()? {
            None => Ok(None),
            Some(s) => parse(&s)
                .map(Some)
                .ok_or_else(|| Error::invalid(format!("{s:?} is not one of the values"))),
        }
    }

    pub fn into_lines(self) -> Result<Vec<String>> {
        match self {
            Value::Null => Ok(Vec::new()),
            Value::Lines(lines) => Ok(lines),
            other => Err(wrong("a list of lines", &other)),
        }
    }

    pub fn into_times(self) -> Result<Vec<i64>> {
        match self {
            Value::Null => Ok(Vec::new()),
            Value::Times(times) => Ok(times),
            other => Err(wrong("a list of times", &other)),
        }
    }
}

/// The value of a field every record has: a stored NULL there is refused.
pub(crate) fn required<V>(value: Option<V>) -> Result<V> {
    value.ok_or_else(|| Error::invalid("a value is required"))
}

/// A value of the wrong type for its field (a stored row that does not fit the table).
fn wrong(expected: &str, got: &Value) -> Error {
    Error::invalid(format!("expected {expected}, got {got:?}"))
}

/// How a field's values are written in a query, stored and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    /// An id (24 lowercase hex characters); queried as text.
    Id,
    /// Stored as microseconds; queried and shown as RFC 1123 dates at second resolution.
    Time,
    /// An enum stored as its documented string.
    Enum(EnumKind),
    /// Lines of text (the activity log): stored and shown, never queried.
    Lines,
    /// Times in µs, one per activity line: stored (a JSON array) and shown, never queried.
    Times,
}

impl Kind {
    /// Whether the field's values are integers in the store (else text).
    pub fn is_integer(self) -> bool {
        matches!(self, Kind::Int | Kind::Time)
    }
}

/// The enums a field can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnumKind {
    JobState,
    JobType,
    PvcState,
    OpType,
}

impl EnumKind {
    /// Every documented value.
    pub fn values(self) -> Vec<&'static str> {
        match self {
            EnumKind::JobState => JobState::ALL.iter().map(|s| s.as_str()).collect(),
            EnumKind::JobType => JobType::ALL.iter().map(|t| t.as_str()).collect(),
            EnumKind::PvcState => PvcState::ALL.iter().map(|s| s.as_str()).collect(),
            EnumKind::OpType => OpType::ALL.iter().map(|t| t.as_str()).collect(),
        }
    }

    /// The documented value `s` is a misspelling of: one that differs only in case or in `-`/`_`,
    /// or by one edit (two, for values of six letters or more) — `RUNNIN`, `running`,
    /// `CANCELED`. Other unknown strings are no misspelling: they simply match nothing, as the
    /// contract says (the Terraform provider's `AGENT_UPDATE`).
    pub fn misspelling_of(self, s: &str) -> Option<&'static str> {
        let norm = |v: &str| v.to_ascii_uppercase().replace('-', "_");
        let prefix = self.prefix();
        let given = norm(s);
        let given = given.strip_prefix(prefix).unwrap_or(&given).to_string();
        self.values()
            .into_iter()
            .map(|value| (edits(&given, &norm(value)), value))
            .filter(|(d, _)| *d <= 1 || (*d == 2 && given.len() >= 6))
            .min_by_key(|(d, _)| *d)
            .map(|(_, value)| value)
    }

    fn prefix(self) -> &'static str {
        match self {
            EnumKind::JobState => "JOB_STATE_",
            EnumKind::JobType => "JOB_TYPE_",
            EnumKind::PvcState => "PVC_STATE_",
            EnumKind::OpType => "OP_TYPE_",
        }
    }

    /// The documented spelling of `s`, which may carry the proto prefix (`JOB_STATE_RUNNING`) or,
    /// for PVC states, underscores; `None` for a value the enum does not have.
    pub fn canonical(self, s: &str) -> Option<&'static str> {
        let bare = s.strip_prefix(self.prefix()).unwrap_or(s);
        match self {
            EnumKind::JobState => JobState::parse(bare).map(JobState::as_str),
            EnumKind::JobType => JobType::parse(bare).map(JobType::as_str),
            EnumKind::PvcState => PvcState::parse(&bare.replace('_', "-")).map(PvcState::as_str),
            EnumKind::OpType => OpType::parse(bare).map(OpType::as_str),
        }
    }
}

/// Edits (insertions, deletions, substitutions) between `a` and `b` (Levenshtein), for the short
/// enum strings a `where` names.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
