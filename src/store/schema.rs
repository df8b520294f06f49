//! How records sit in tables: the store's side of the field tables. Each field of a resource
//! has a column named by one rule ([`column_name`]); from the table follow the column list, the
//! parameters written for a record, and the decoding of a row selected in that order. At open,
//! [`missing_columns`] holds the migrated schema to the tables, so a field without its column
//! stops the server with a message naming both, instead of failing on its first query.

use std::sync::LazyLock;

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::domain::query::{Datum, Field, Kind, Resource, Value};
use crate::domain::{Job, JobState, PvcProgress};
use crate::error::{Error, Result};

/// A bound parameter, typed so that NULLs carry their column's type.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<&Value> for Param {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => Param::Text(None),
            Value::Int(i) => Param::Int(Some(*i)),
            Value::Text(s) => Param::Text(Some(s.clone())),
            // Lines are never queried (the parser refuses them); stored as JSON.
            Value::Lines(lines) => {
                Param::Text(Some(serde_json::Value::from(lines.clone()).to_string()))
            }
            Value::Times(times) => {
                Param::Text(Some(serde_json::Value::from(times.clone()).to_string()))
            }
        }
    }
}

/// A resource kept in a table of its own.
pub trait Stored: Resource {
    /// The table's name.
    const TABLE: &'static str;

    /// Its columns, one per field in the table's order.
    fn columns() -> &'static Columns;
}

/// The columns of a resource's table.
pub struct Columns {
    /// One per field, in the order of [`Resource::fields`].
    names: Vec<String>,
    /// Every column, comma-separated: what `SELECT` reads and `INSERT` writes.
    pub list: String,
}

impl Columns {
    fn of<T: Resource>() -> Columns {
        let names: Vec<String> = stored::<T>().map(|f| column_name(f.name)).collect();
        Columns {
            list: names.join(", "),
            names,
        }
    }

    /// The column of `field`.
    pub fn of_field<T: Resource>(&self, field: &'static Field<T>) -> &str {
        let index = stored::<T>().position(|f| f == field).unwrap_or_default();
        &self.names[index]
    }

    /// Every column, in the order of the fields.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// The column of the field named `name`: the name with the framework's `_` dropped (`_id` is
/// `id`), and a nested object's path replaced by its prefix (`kube_copy_progress.stats.io_size`
/// is `cp_io_size`, a PVC record's `stats.io_size` is `io_size`).
pub(crate) fn column_name(name: &str) -> String {
    const PREFIXES: [(&str, &str); 4] = [
        ("kube_copy_progress.stats.", "cp_"),
        ("kube_copy_progress.", "cp_"),
        ("kube_snapshot_progress.", "sp_"),
        ("stats.", ""),
    ];
    let name = name.strip_prefix('_').unwrap_or(name);
    for (prefix, short) in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return format!("{short}{rest}");
        }
    }
    name.to_string()
}

static JOB_COLUMNS: LazyLock<Columns> = LazyLock::new(Columns::of::<Job>);
static PVC_COLUMNS: LazyLock<Columns> = LazyLock::new(Columns::of::<PvcProgress>);

impl Stored for Job {
    const TABLE: &'static str = "jobs";
    fn columns() -> &'static Columns {
        &JOB_COLUMNS
    }
}

impl Stored for PvcProgress {
    const TABLE: &'static str = "pvc_progress";
    fn columns() -> &'static Columns {
        &PVC_COLUMNS
    }
}

/// `SELECT` of every column of `T`'s table, `WHERE condition`: a statement that
/// [`decode`] reads.
pub(crate) fn select<T: Stored>(condition: &str) -> String {
    format!(
        "SELECT {} FROM {} WHERE {condition}",
        T::columns().list,
        T::TABLE
    )
}

/// The fields of `T` that have a column, in column order.
pub(crate) fn stored<T: Resource>() -> impl Iterator<Item = &'static Field<T>> {
    T::fields().iter().filter(|f| f.is_stored())
}

/// The columns of `T`'s table that `present` (the migrated schema's) lacks, each with its field.
pub(crate) fn missing_columns<T: Stored>(present: &[String]) -> Vec<String> {
    stored::<T>()
        .zip(T::columns().names())
        .filter(|(_, column)| !present.iter().any(|p| p == column))
        .map(|(field, column)| format!("{}.{column} (field {})", T::TABLE, field.name))
        .collect()
}

/// Refuses to serve a schema that lacks a column of a field: a migration is missing.
pub(crate) fn check_schema(missing: Vec<String>) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "the database schema lacks the column(s) {}: add a migration that creates them",
        missing.join(", ")
    )))
}

/// The parameter written to a field's column.
fn param(kind: Kind, datum: Datum<'_>) -> Param {
    match datum {
        Datum::Null if kind.is_integer() => Param::Int(None),
        Datum::Null => Param::Text(None),
        Datum::Int(i) => Param::Int(Some(i)),
        Datum::Text(s) => Param::Text(Some(s.to_string())),
        // Lines are stored as a JSON array of strings.
        Datum::Lines(lines) => Param::Text(Some(serde_json::Value::from(lines).to_string())),
        Datum::Times(times) => Param::Text(Some(serde_json::Value::from(times).to_string())),
    }
}

/// The values of `T`'s columns for `record`, in column order.
pub(crate) fn params<T: Stored>(record: &T) -> Vec<Param> {
    stored::<T>()
        .map(|f| param(f.kind, (f.get)(record)))
        .collect()
}

/// Decodes a row selected as `T::columns().list`.
pub(crate) fn decode<T: Stored, R>(row: &R) -> Result<T>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'a> i64: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
{
    let mut record = T::blank();
    for (i, field) in stored::<T>().enumerate() {
        let value = match field.kind {
            k if k.is_integer() => row
                .try_get::<Option<i64>, _>(i)?
                .map_or(Value::Null, Value::Int),
            Kind::Lines => match row.try_get::<Option<String>, _>(i)? {
                None => Value::Null,
                Some(text) => Value::Lines(
                    serde_json::from_str(&text).map_err(|_| corrupt::<T>(field, &text))?,
                ),
            },
            Kind::Times => match row.try_get::<Option<String>, _>(i)? {
                None => Value::Null,
                Some(text) => Value::Times(
                    serde_json::from_str(&text).map_err(|_| corrupt::<T>(field, &text))?,
                ),
            },
            _ => row
                .try_get::<Option<String>, _>(i)?
                .map_or(Value::Null, Value::Text),
        };
        (field.set)(&mut record, value).map_err(|e| corrupt::<T>(field, &e.to_string()))?;
    }
    Ok(record)
}

/// A stored value that does not fit its field: `why` says what was found.
fn corrupt<T: Stored>(field: &Field<T>, why: &str) -> Error {
    let why = crate::domain::id::truncate(why, 200);
    tracing::error!(
        table = T::TABLE,
        field = field.name,
        why,
        "unreadable value in the database"
    );
    Error::Internal(format!(
        "unreadable {} in the table {}: {why}",
        field.name,
        T::TABLE
    ))
}

/// A row of `SELECT id, name, role, hash, created, revoked FROM api_keys`.
pub type KeyRow = (String, String, String, String, i64, Option<i64>);

/// Decodes an API key row (shared by both backends).
pub fn api_key((id, name, role, hash, created, revoked): KeyRow) -> Result<crate::auth::ApiKey> {
    let role = crate::auth::Role::parse(&role)
        .ok_or_else(|| Error::Internal(format!("unreadable key role {role:?} in the database")))?;
    Ok(crate::auth::ApiKey {
        id,
        name,
        role,
        hash,
        created,
        revoked,
    })
}

/// Jobs by state from `SELECT state, count(*) FROM jobs GROUP BY state` rows; unknown states are
/// left out.
pub fn states(rows: Vec<(String, i64)>) -> Vec<(JobState, i64)> {
    rows.into_iter()
        .filter_map(|(state, n)| JobState::parse(&state).map(|s| (s, n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_follow_the_naming_rule() {
        assert_eq!(column_name("_id"), "id");
        assert_eq!(
            column_name("kube_copy_progress.stats.io_size"),
            "cp_io_size"
        );
        assert_eq!(
            column_name("kube_copy_progress.failed_pvs"),
            "cp_failed_pvs"
        );
        assert_eq!(
            column_name("kube_snapshot_progress.skipped_pvs"),
            "sp_skipped_pvs"
        );
        assert_eq!(column_name("stats.io_size"), "io_size");
        assert_eq!(column_name("type"), "type");
    }

    #[test]
    fn a_record_survives_its_row_parameters() {
        // What is written for every field is what decoding reads: the same kinds, in order.
        let job = crate::domain::job::tests::a_job_with_everything_set();
        let params = params(&job);
        assert_eq!(params.len(), stored::<Job>().count());
        for (field, param) in stored::<Job>().zip(&params) {
            let integer = matches!(param, Param::Int(_));
            assert_eq!(integer, field.kind.is_integer(), "{}", field.name);
        }
    }
}
