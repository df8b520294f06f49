//! The `where` parser: a Mongo-style JSON document, checked against the resource's queryable
//! fields and their kinds, into a [`Filter`]. Every refusal says where in the document it is.

use serde_json::{Map, Value as Json};

use super::field::{Field, Resource};
use super::filter::{CmpOp, Filter, Operator, Pattern};
use super::value::{Kind, Value};
use super::{MAX_WHERE_BYTES, MAX_WHERE_DEPTH};
use crate::domain::id::truncate;
use crate::error::{Error, Result};

/// Parses a `where` for resource `T`. Empty text matches everything.
pub fn parse_where<T: Resource>(text: &str) -> Result<Filter<T>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Filter::ALL);
    }
    if text.len() > MAX_WHERE_BYTES {
        return Err(Error::invalid(format!(
            "where is {} bytes long; the limit is {MAX_WHERE_BYTES}",
            text.len()
        )));
    }
    let json: Json = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("where is not valid JSON: {e}")))?;
    match &json {
        Json::Object(doc) => parse_doc::<T>(doc, "", 1),
        _ => Err(Error::invalid(
            "where must be a JSON object, like {\"state\":\"RUNNING\"}",
        )),
    }
}

/// "where" or "where at <path>", to begin an error message.
pub(super) fn at(path: &str) -> String {
    if path.is_empty() {
        "where".to_string()
    } else {
        format!("where at {path}")
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check_depth(path: &str, depth: usize) -> Result<()> {
    if depth > MAX_WHERE_DEPTH {
        return Err(Error::invalid(format!(
            "{}: nested deeper than {MAX_WHERE_DEPTH} levels",
            at(path)
        )));
    }
    Ok(())
}

fn no_javascript(path: &str) -> Error {
    Error::invalid(format!(
        "{}: $where (server-side JavaScript) is not supported",
        at(path)
    ))
}

fn parse_doc<T: Resource>(doc: &Map<String, Json>, path: &str, depth: usize) -> Result<Filter<T>> {
    check_depth(path, depth)?;
    let mut parts = Vec::with_capacity(doc.len());
    for (key, value) in doc {
        let here = join(path, key);
        let part = match key.as_str() {
            "$and" | "$or" | "$nor" => parse_list::<T>(key, value, &here, depth)?,
            "$not" => {
                let doc = value.as_object().ok_or_else(|| {
                    Error::invalid(format!("{}: $not takes a query object", at(&here)))
                })?;
                Filter::Not(Box::new(parse_doc::<T>(doc, &here, depth + 1)?))
            }
            "$where" => return Err(no_javascript(&here)),
            op if op.starts_with('$') => {
                return Err(Error::invalid(format!(
                    "{}: unknown operator {}; at the top level use $and, $or, $nor or $not",
                    at(&here),
                    truncate(op, 64)
                )));
            }
            name => {
                let field = T::query_field(name).ok_or_else(|| unknown_field::<T>(name, &here))?;
                parse_field(field, value, &here, depth + 1)?
            }
        };
        parts.push(part);
    }
    Ok(Filter::and(parts))
}

/// `$and`, `$or` or `$nor` with its list of queries.
fn parse_list<T: Resource>(key: &str, value: &Json, here: &str, depth: usize) -> Result<Filter<T>> {
    let list = value.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
        Error::invalid(format!(
            "{}: {key} takes a non-empty list of queries",
            at(here)
        ))
    })?;
    let mut subs = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let item_path = format!("{here}[{i}]");
        let doc = item.as_object().ok_or_else(|| {
            Error::invalid(format!("{}: expected a query object", at(&item_path)))
        })?;
        subs.push(parse_doc::<T>(doc, &item_path, depth + 1)?);
    }
    Ok(match key {
        "$and" => Filter::And(subs),
        "$or" => Filter::Or(subs),
        _ => Filter::Not(Box::new(Filter::Or(subs))),
    })
}

fn unknown_field<T: Resource>(name: &str, path: &str) -> Error {
    Error::invalid(format!(
        "{}: unknown field {:?} of {}; known fields: {}",
        at(path),
        truncate(name, 64),
        T::NAME,
        T::query_field_names().join(", ")
    ))
}

/// A field's value (equality) or its object of operators.
fn parse_field<T: Resource>(
    field: &'static Field<T>,
    value: &Json,
    path: &str,
    depth: usize,
) -> Result<Filter<T>> {
    check_depth(path, depth)?;
    let Json::Object(ops) = value else {
        return compare(field, CmpOp::Eq, value, path);
    };
    if ops.is_empty() || !ops.keys().all(|k| k.starts_with('$')) {
        return Err(Error::invalid(format!(
            "{}: expected a value or an object of operators such as {{\"$gt\": 5}}; sub-documents are matched with dotted paths such as kube_copy_progress.failed_pvs",
            at(path)
        )));
    }
    let mut parts = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let here = join(path, op);
        let operator = match Operator::parse(op) {
            Some(operator) => operator,
            None if op == "$where" => return Err(no_javascript(&here)),
            None => return Err(unknown_operator(op, &here)),
        };
        let filter = match operator {
            Operator::Cmp(cmp) => compare(field, cmp, arg, &here)?,
            Operator::In | Operator::Nin => parse_in(field, arg, operator == Operator::Nin, &here)?,
            Operator::Exists => Filter::Exists {
                field,
                exists: parse_exists(arg, &here)?,
            },
            Operator::Not => parse_not(field, arg, &here, depth)?,
            Operator::Regex => regex(field, arg, ops.get(Operator::Options.name()), &here)?,
            Operator::Options if ops.contains_key(Operator::Regex.name()) => continue,
            Operator::Options => {
                return Err(Error::invalid(format!(
                    "{}: $options needs a $regex beside it",
                    at(&here)
                )));
            }
        };
        parts.push(filter);
    }
    Ok(Filter::and(parts))
}

fn unknown_operator(op: &str, here: &str) -> Error {
    let known: Vec<&str> = Operator::ALL
        .iter()
        .filter(|o| **o != Operator::Options)
        .map(|o| o.name())
        .collect();
    Error::invalid(format!(
        "{}: unknown operator {}; use {}",
        at(here),
        truncate(op, 64),
        known.join(" ")
    ))
}

/// `$in` / `$nin`. On a date field each value is a one-second range.
fn parse_in<T: Resource>(
    field: &'static Field<T>,
    arg: &Json,
    negated: bool,
    here: &str,
) -> Result<Filter<T>> {
    let op = if negated { "$nin" } else { "$in" };
    let list = arg
        .as_array()
        .ok_or_else(|| Error::invalid(format!("{}: {op} takes a list of values", at(here))))?;
    if field.kind == Kind::Time {
        let mut ranges = Vec::with_capacity(list.len());
        for item in list {
            ranges.push(compare(field, CmpOp::Eq, item, here)?);
        }
        let any = Filter::Or(ranges);
        return Ok(if negated {
            Filter::Not(Box::new(any))
        } else {
            any
        });
    }
    let mut values = Vec::with_capacity(list.len());
    for item in list {
        values.push(scalar(field, item, here)?);
    }
    Ok(Filter::In {
        field,
        values,
        negated,
    })
}

fn parse_exists(arg: &Json, here: &str) -> Result<bool> {
    match arg {
        Json::Bool(b) => Ok(*b),
        Json::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Json::Number(n) if n.as_i64() == Some(1) => Ok(true),
        _ => Err(Error::invalid(format!(
            "{}: $exists takes true or false",
            at(here)
        ))),
    }
}

fn parse_not<T: Resource>(
    field: &'static Field<T>,
    arg: &Json,
    here: &str,
    depth: usize,
) -> Result<Filter<T>> {
    match arg {
        Json::Object(_) => Ok(Filter::Not(Box::new(parse_field(
            field,
            arg,
            here,
            depth + 1,
        )?))),
        _ => Err(Error::invalid(format!(
            "{}: $not takes an object of operators, like {{\"$not\": {{\"$gt\": 5}}}}",
            at(here)
        ))),
    }
}

fn regex<T>(
    field: &'static Field<T>,
    pattern: &Json,
    options: Option<&Json>,
    path: &str,
) -> Result<Filter<T>> {
    if !matches!(field.kind, Kind::Text | Kind::Id | Kind::Enum(_)) {
        return Err(Error::invalid(format!(
            "{}: $regex works on text fields; {} is not one",
            at(path),
            field.name
        )));
    }
    let Json::String(pattern) = pattern else {
        return Err(Error::invalid(format!(
            "{}: $regex takes a string",
            at(path)
        )));
    };
    if pattern.contains('\0') {
        return Err(Error::invalid(format!(
            "{}: a pattern cannot contain a NUL character; write \\x00",
            at(path)
        )));
    }
    let flags = match options {
        None => String::new(),
        Some(Json::String(o)) if o.chars().all(|c| "imsx".contains(c)) => o.clone(),
        Some(_) => {
            return Err(Error::invalid(format!(
                "{}: $options takes a string of the flags i, m, s and x",
                at(path)
            )));
        }
    };
    let full = if flags.is_empty() {
        pattern.clone()
    } else {
        format!("(?{flags}){pattern}")
    };
    let compiled = regex::RegexBuilder::new(&full)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::invalid(format!("{}: bad regular expression: {e}", at(path))))?;
    Ok(Filter::Regex {
        field,
        pattern: Pattern(compiled),
    })
}

/// One comparison. Dates compare at second resolution, as the REST JSON shows them.
fn compare<T>(field: &'static Field<T>, op: CmpOp, arg: &Json, path: &str) -> Result<Filter<T>> {
    let value = scalar(field, arg, path)?;
    if value == Value::Null && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
        return Err(Error::invalid(format!(
            "{}: cannot order against null",
            at(path)
        )));
    }
    let cmp = |op, micros: i64| Filter::Compare {
        field,
        op,
        value: Value::Int(micros),
    };
    Ok(match (field.kind, &value) {
        (Kind::Time, Value::Int(secs)) => {
            let start = secs.saturating_mul(1_000_000);
            let end = secs.saturating_add(1).saturating_mul(1_000_000);
            let within = Filter::And(vec![cmp(CmpOp::Gte, start), cmp(CmpOp::Lt, end)]);
            match op {
                CmpOp::Eq => within,
                CmpOp::Ne => Filter::Not(Box::new(within)),
                CmpOp::Gt => cmp(CmpOp::Gte, end),
                CmpOp::Gte => cmp(CmpOp::Gte, start),
                CmpOp::Lt => cmp(CmpOp::Lt, start),
                CmpOp::Lte => cmp(CmpOp::Lt, end),
            }
        }
        _ => Filter::Compare { field, op, value },
    })
}

/// Checks a JSON value against the field's type.
fn scalar<T>(field: &'static Field<T>, arg: &Json, path: &str) -> Result<Value> {
    let wrong = |expected: &str| {
        let shown = arg.to_string();
        Error::invalid(format!(
            "{}: {} expects {expected}, got {}",
            at(path),
            field.name,
            truncate(&shown, 64)
        ))
    };
    match (field.kind, arg) {
        (_, Json::Null) => Ok(Value::Null),
        (Kind::Int, Json::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Value::Int(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Value::Int(f as i64)),
            _ => Err(wrong("an integer")),
        },
        (Kind::Int, _) => Err(wrong("an integer")),
        (Kind::Text | Kind::Id | Kind::Enum(_), Json::String(s)) if s.contains('\0') => {
            Err(Error::invalid(format!(
                "{}: text values cannot contain a NUL character (\\u0000)",
                at(path)
            )))
        }
        (Kind::Text | Kind::Id, Json::String(s)) => Ok(Value::Text(s.clone())),
        (Kind::Text | Kind::Id, _) => Err(wrong("a string")),
        (Kind::Enum(kind), Json::String(s)) => match (kind.canonical(s), kind.misspelling_of(s)) {
            (Some(value), _) => Ok(Value::Text(value.to_string())),
            (None, Some(near)) => Err(Error::invalid(format!(
                "{}: {} has no value {:?} (did you mean {near}?); it is one of {}",
                at(path),
                field.name,
                truncate(s, 64),
                kind.values().join(", ")
            ))),
            // A value of another version of the enum: it matches nothing, as the contract says.
            (None, None) => Ok(Value::Text(s.clone())),
        },
        (Kind::Enum(_), _) => Err(wrong("a string")),
        (Kind::Time, Json::String(s)) => httpdate::parse_http_date(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| Value::Int(d.as_secs() as i64))
            .ok_or_else(|| wrong("an RFC 1123 date such as \"Mon, 24 Aug 2020 01:59:18 GMT\"")),
        (Kind::Time, _) => Err(wrong("an RFC 1123 date string")),
        (Kind::Lines | Kind::Times, _) => Err(wrong("nothing: it cannot be queried")),
    }
}
