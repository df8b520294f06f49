//! A parsed `where`: a typed [`Filter`] over a resource's queryable fields. The store turns it
//! into SQL; watchers and the count cache evaluate it in memory with exactly the semantics of
//! that SQL (three-valued logic: a comparison with a missing field is NULL).

use std::fmt;

use super::field::{Field, Resource};
use super::value::{Datum, Value};

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// The operators of a field's query object (`{"$gt": 5}`), each spelled once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Cmp(CmpOp),
    In,
    Nin,
    Exists,
    Not,
    Regex,
    Options,
}

impl Operator {
    pub const ALL: [Operator; 12] = [
        Operator::Cmp(CmpOp::Eq),
        Operator::Cmp(CmpOp::Ne),
        Operator::Cmp(CmpOp::Gt),
        Operator::Cmp(CmpOp::Gte),
        Operator::Cmp(CmpOp::Lt),
        Operator::Cmp(CmpOp::Lte),
        Operator::In,
        Operator::Nin,
        Operator::Exists,
        Operator::Not,
        Operator::Regex,
        Operator::Options,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operator::Cmp(CmpOp::Eq) => "$eq",
            Operator::Cmp(CmpOp::Ne) => "$ne",
            Operator::Cmp(CmpOp::Gt) => "$gt",
            Operator::Cmp(CmpOp::Gte) => "$gte",
            Operator::Cmp(CmpOp::Lt) => "$lt",
            Operator::Cmp(CmpOp::Lte) => "$lte",
            Operator::In => "$in",
            Operator::Nin => "$nin",
            Operator::Exists => "$exists",
            Operator::Not => "$not",
            Operator::Regex => "$regex",
            Operator::Options => "$options",
        }
    }

    pub fn parse(name: &str) -> Option<Operator> {
        Operator::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A filter over the records of resource `T`. Fields come from `T`'s table; values are bound
/// as parameters when it becomes SQL.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter<T: 'static> {
    /// All of them; an empty list matches everything.
    And(Vec<Filter<T>>),
    /// Any of them; an empty list matches nothing.
    Or(Vec<Filter<T>>),
    /// Matches every record the inner filter does not match, including those missing the field.
    Not(Box<Filter<T>>),
    /// `Null` only with `Eq` (missing) and `Ne` (present).
    Compare {
        field: &'static Field<T>,
        op: CmpOp,
        value: Value,
    },
    /// `$in` / `$nin`; a `Null` in `values` matches a missing field.
    In {
        field: &'static Field<T>,
        values: Vec<Value>,
        negated: bool,
    },
    Exists {
        field: &'static Field<T>,
        exists: bool,
    },
    /// A pattern for the linear-time `regex` engine.
    Regex {
        field: &'static Field<T>,
        pattern: Pattern,
    },
}

/// A compiled regular expression, compared and shown by its text.
#[derive(Clone)]
pub struct Pattern(pub(super) regex::Regex);

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<T: Resource> Filter<T> {
    /// Matches every record.
    pub const ALL: Filter<T> = Filter::And(Vec::new());

    /// One filter matching all of `parts`.
    pub(super) fn and(mut parts: Vec<Filter<T>>) -> Filter<T> {
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        }
    }

    /// Whether `record` matches, exactly as the store's SQL decides.
    pub fn matches(&self, record: &T) -> bool {
        self.eval(record) == Some(true)
    }

    /// SQL's three-valued logic: `None` is NULL (a comparison with a missing field).
    fn eval(&self, record: &T) -> Option<bool> {
        match self {
            Filter::And(parts) => all(parts.iter().map(|p| p.eval(record))),
            Filter::Or(parts) => any(parts.iter().map(|p| p.eval(record))),
            Filter::Not(inner) => Some(!inner.eval(record).unwrap_or(false)),
            Filter::Compare { field, op, value } => compare((field.get)(record), *op, value),
            Filter::In {
                field,
                values,
                negated,
            } => contains((field.get)(record), values, *negated),
            Filter::Exists { field, exists } => Some((field.get)(record).is_null() != *exists),
            Filter::Regex { field, pattern } => match (field.get)(record) {
                Datum::Text(text) => Some(pattern.0.is_match(text)),
                Datum::Int(i) => Some(pattern.0.is_match(&i.to_string())),
                Datum::Null | Datum::Lines(_) | Datum::Times(_) => None,
            },
        }
    }
}

/// SQL's AND: false wins, then NULL.
fn all(results: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut result = Some(true);
    for r in results {
        match r {
            Some(false) => return Some(false),
            None => result = None,
            Some(true) => {}
        }
    }
    result
}

/// SQL's OR: true wins, then NULL.
fn any(results: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut result = Some(false);
    for r in results {
        match r {
            Some(true) => return Some(true),
            None => result = None,
            Some(false) => {}
        }
    }
    result
}

fn compare(actual: Datum<'_>, op: CmpOp, wanted: &Value) -> Option<bool> {
    match (op, wanted, actual) {
        (CmpOp::Eq, Value::Null, a) => Some(a.is_null()),
        (CmpOp::Ne, Value::Null, a) => Some(!a.is_null()),
        (CmpOp::Ne, _, Datum::Null) => Some(true),
        (_, _, Datum::Null) => None,
        (op, w, a) => {
            let ordering = a.cmp_sql(w);
            Some(match op {
                CmpOp::Eq => ordering.is_eq(),
                CmpOp::Ne => ordering.is_ne(),
                CmpOp::Gt => ordering.is_gt(),
                CmpOp::Gte => ordering.is_ge(),
                CmpOp::Lt => ordering.is_lt(),
                CmpOp::Lte => ordering.is_le(),
            })
        }
    }
}

/// `$in` (`$nin` when `negated`), as the SQL the store writes for it decides.
fn contains(actual: Datum<'_>, values: &[Value], negated: bool) -> Option<bool> {
    let has_null = values.contains(&Value::Null);
    if actual.is_null() {
        let any_present = values.iter().any(|v| *v != Value::Null);
        return match (negated, has_null) {
            (false, false) if any_present => None,
            (false, false) => Some(false),
            (false, true) | (true, false) => Some(true),
            (true, true) => Some(false),
        };
    }
    let found = values
        .iter()
        .any(|v| *v != Value::Null && actual.cmp_sql(v).is_eq());
    Some(found != negated)
}
