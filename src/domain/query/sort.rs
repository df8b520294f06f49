//! `sort`, in both documented forms: `-_created,name` and python-eve's
//! `[("_created", -1), ("name", 1)]`, over the resource's queryable fields.

use super::field::{Field, Resource};
use crate::domain::id::truncate;
use crate::error::{Error, Result};

/// One key of an order.
#[derive(Debug)]
pub struct SortKey<T: 'static> {
    pub field: &'static Field<T>,
    pub descending: bool,
}

impl<T> Clone for SortKey<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SortKey<T> {}

/// Parses `sort`: `-_created,name` or `[("_created", -1), ("name", 1)]`. Empty: no keys.
pub fn parse_sort<T: Resource>(text: &str) -> Result<Vec<SortKey<T>>> {
    let text = text.trim();
    let pairs = if text.is_empty() {
        Vec::new()
    } else if text.starts_with('[') {
        parse_sort_literal(text)?
    } else {
        let mut pairs = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let (name, descending) = match item.strip_prefix('-') {
                Some(rest) => (rest.trim(), true),
                None => (item.strip_prefix('+').unwrap_or(item).trim(), false),
            };
            if name.is_empty() {
                return Err(Error::invalid(format!(
                    "sort {text:?} has an empty field name"
                )));
            }
            pairs.push((name.to_string(), descending));
        }
        pairs
    };
    let mut keys: Vec<SortKey<T>> = Vec::with_capacity(pairs.len());
    for (name, descending) in pairs {
        let field = T::query_field(&name).ok_or_else(|| {
            Error::invalid(format!(
                "sort: unknown field {:?} of {}; known fields: {}",
                truncate(&name, 64),
                T::NAME,
                T::query_field_names().join(", ")
            ))
        })?;
        if keys.iter().any(|k| k.field == field) {
            return Err(Error::invalid(format!("sort names {:?} twice", field.name)));
        }
        keys.push(SortKey { field, descending });
    }
    Ok(keys)
}

/// The python-eve literal form: `[("_created", -1), ("name", 1)]`.
fn parse_sort_literal(text: &str) -> Result<Vec<(String, bool)>> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "sort {:?} is malformed ({why}); expected [(\"field\", -1), (\"other\", 1)] or -field,other",
            truncate(text, 64)
        ))
    };
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| bad("missing closing ]"))?;
    let mut pairs = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let open = rest
            .strip_prefix('(')
            .or_else(|| rest.strip_prefix('['))
            .ok_or_else(|| bad("expected ("))?;
        let close = open.find([')', ']']).ok_or_else(|| bad("missing )"))?;
        let (tuple, after) = (&open[..close], &open[close + 1..]);
        let (name, dir) = tuple
            .rsplit_once(',')
            .ok_or_else(|| bad("expected (\"field\", direction)"))?;
        let name = name.trim();
        let unquoted = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .or_else(|| name.strip_prefix('\'').and_then(|n| n.strip_suffix('\'')))
            .ok_or_else(|| bad("field names are quoted"))?;
        let descending = match dir.trim() {
            "-1" => true,
            "1" | "+1" => false,
            _ => return Err(bad("the direction is 1 or -1")),
        };
        pairs.push((unquoted.to_string(), descending));
        rest = after.trim_start();
        rest = match rest.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if rest.is_empty() => rest,
            None => return Err(bad("expected , between pairs")),
        };
    }
    if pairs.is_empty() {
        return Err(bad("no fields"));
    }
    Ok(pairs)
}
