//! The SQL of a write batch on SQLite: reading the records a batch names (one statement per
//! table, keys passed as one JSON array) and writing what it changed (one INSERT per table, one
//! UPDATE per table and set of changed columns — updating only changed columns keeps SQLite from
//! rewriting every index entry of a row — and the change-log entries).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use sqlx::{AssertSqlSafe, SqliteConnection};

use super::cache::Cache;
use crate::domain::{Job, ObjectId, PvcProgress};
use crate::error::Result;
use crate::store::batch::{BatchState, Changed, Op, PvcKey, encode_change, pvc_key};
use crate::store::schema::Param;
use crate::store::schema::{Stored, decode, params, select};

static SELECT_JOBS: LazyLock<String> =
    LazyLock::new(|| select::<Job>("id IN (SELECT value FROM json_each(?))"));
static SELECT_PVCS: LazyLock<String> = LazyLock::new(|| {
    select::<PvcProgress>(
        "(job_id, namespace, name) IN \
         (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?))",
    )
});
static INSERT_JOBS: LazyLock<String> = LazyLock::new(insert_sql::<Job>);
static INSERT_PVCS: LazyLock<String> = LazyLock::new(insert_sql::<PvcProgress>);

/// One statement inserting any number of rows, passed as one JSON array of rows.
fn insert_sql<T: Stored>() -> String {
    let values: Vec<String> = (0..crate::store::schema::stored::<T>().count())
        .map(|i| format!("value ->> {i}"))
        .collect();
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM json_each(?)",
        T::TABLE,
        T::columns().list,
        values.join(", ")
    )
}

/// One statement updating the `changed` columns (indexes into `columns`) of any number of rows,
/// passed as one JSON array of `[id, value, ...]`.
fn update_sql(table: &str, columns: &[&str], changed: &[usize]) -> String {
    let sets: Vec<String> = changed
        .iter()
        .enumerate()
        .map(|(k, &c)| format!("{} = v.value ->> {}", columns[c], k + 1))
        .collect();
    format!(
        "UPDATE {table} SET {} FROM json_each(?) AS v WHERE {table}.id = v.value ->> 0",
        sets.join(", ")
    )
}

fn json_value(p: &Param) -> serde_json::Value {
    match p {
        Param::Int(v) => v.map_or(serde_json::Value::Null, serde_json::Value::from),
        Param::Text(v) => v
            .as_deref()
            .map_or(serde_json::Value::Null, serde_json::Value::from),
    }
}

fn json_row(params: &[Param]) -> serde_json::Value {
    serde_json::Value::Array(params.iter().map(json_value).collect())
}

/// A value bound to the batch's script.
enum Arg {
    Text(String),
    Int(i64),
    Blob(Vec<u8>),
}

/// The SQL that writes one batch, as one multi-statement script with its arguments in order:
/// SQLite's driver runs all of it in one round trip to its thread, where a statement at a time
/// cost a round trip — and a wait to be scheduled again — each.
#[derive(Default)]
pub(super) struct Script {
    sql: String,
    args: Vec<Arg>,
}

impl Script {
    fn push(&mut self, sql: &str, args: impl IntoIterator<Item = Arg>) {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.args.extend(args);
    }

    /// Runs the whole script (the caller's transaction statements included).
    pub(super) async fn run(self, conn: &mut SqliteConnection) -> Result<()> {
        let mut query = sqlx::query(AssertSqlSafe(self.sql));
        for arg in self.args {
            query = match arg {
                Arg::Text(v) => query.bind(v),
                Arg::Int(v) => query.bind(v),
                Arg::Blob(v) => query.bind(v),
            };
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

/// Adds the statements writing `rows` (each as (stored params, new params)): new rows in one
/// INSERT, changed rows in one UPDATE per set of changed columns.
fn write_rows<'a, T: Stored>(
    script: &mut Script,
    insert: &str,
    changed: impl Iterator<Item = Changed<'a, T>>,
) {
    let rows = changed.map(|c| (c.stored.map(params), params(c.now)));
    let (table, names) = (T::TABLE, T::columns().names().collect::<Vec<_>>());
    let mut inserts = Vec::new();
    let mut updates: HashMap<Vec<usize>, Vec<serde_json::Value>> = HashMap::new();
    for (stored, new) in rows {
        match stored {
            None => inserts.push(json_row(&new)),
            Some(old) => {
                let changed: Vec<usize> = (1..new.len()).filter(|&i| old[i] != new[i]).collect();
                if changed.is_empty() {
                    continue;
                }
                let mut row = vec![json_value(&new[0])];
                row.extend(changed.iter().map(|&i| json_value(&new[i])));
                updates
                    .entry(changed)
                    .or_default()
                    .push(serde_json::Value::Array(row));
            }
        }
    }
    if !inserts.is_empty() {
        let rows = serde_json::Value::Array(inserts).to_string();
        script.push(insert, [Arg::Text(rows)]);
    }
    for (changed, rows) in updates {
        let sql = update_sql(table, &names, &changed);
        let rows = serde_json::Value::Array(rows).to_string();
        script.push(&sql, [Arg::Text(rows)]);
    }
}

/// Gathers every job and PVC record the batch's operations name: from the cache, and the misses
/// from the database in one statement per table.
pub(super) async fn load(
    conn: &mut SqliteConnection,
    cache: &Cache,
    ops: impl Iterator<Item = &Op>,
) -> Result<BatchState> {
    let mut state = BatchState::default();
    let mut missing_jobs: HashSet<&str> = HashSet::new();
    let mut missing_pvcs: HashSet<PvcKey> = HashSet::new();
    for op in ops {
        let job_id = op.job_id();
        let key = match op {
            Op::Report(r) => Some((r.job_id.clone(), r.namespace.clone(), r.name.clone())),
            _ => None,
        };
        if let Some(id) = job_id {
            if let Some(job) = cache.job(id) {
                state.stored_jobs.insert(id.clone(), job);
            } else {
                missing_jobs.insert(id.as_str());
            }
        }
        if let Some(key) = key {
            if let Some(pvc) = cache.pvcs.get(&key) {
                state.stored_pvcs.insert(key, pvc.clone());
            } else {
                missing_pvcs.insert(key);
            }
        }
    }
    if !missing_jobs.is_empty() {
        let ids = json_strings(missing_jobs);
        for job in read::<Job>(conn, &SELECT_JOBS, ids).await? {
            state.stored_jobs.insert(job.id.clone(), job);
        }
    }
    if !missing_pvcs.is_empty() {
        let keys = missing_pvcs
            .iter()
            .map(|(j, ns, n)| serde_json::Value::from(vec![j.as_str(), ns, n]));
        let keys = serde_json::Value::Array(keys.collect()).to_string();
        for pvc in read::<PvcProgress>(conn, &SELECT_PVCS, keys).await? {
            state.stored_pvcs.insert(pvc_key(&pvc), pvc);
        }
    }
    Ok(state)
}

/// Strings as one JSON array, which `json_each(?)` takes apart.
fn json_strings<'a>(strings: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::from_iter(strings).to_string()
}

/// The records `statement` selects by the keys in `json`.
async fn read<T: Stored>(
    conn: &mut SqliteConnection,
    statement: &str,
    json: String,
) -> Result<Vec<T>> {
    let rows = sqlx::query(AssertSqlSafe(statement))
        .bind(json)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(decode).collect()
}

/// The script that writes what the batch changed, in one transaction: deletions first, then
/// inserts and column updates, then the change-log entries.
pub(super) fn flush(state: &BatchState) -> Result<Script> {
    let mut script = Script::default();
    script.push("BEGIN IMMEDIATE", []);
    if !state.deleted_jobs.is_empty() {
        let ids = json_strings(state.deleted_jobs.iter().map(ObjectId::as_str));
        script.push(
            "DELETE FROM pvc_progress WHERE job_id IN (SELECT value FROM json_each(?))",
            [Arg::Text(ids.clone())],
        );
        script.push(
            "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
            [Arg::Text(ids)],
        );
    }
    write_rows(&mut script, &INSERT_JOBS, state.changed_jobs());
    write_rows(&mut script, &INSERT_PVCS, state.changed_pvcs());
    // Bound parameters, up to 64 rows a statement: the entries are large, and parsing them out of
    // one JSON document costs SQLite more than binding them.
    for chunk in state.changes.chunks(64) {
        let mut sql = String::from("INSERT INTO changes (seq, job_id, kind, at, change) VALUES ");
        let mut args = Vec::with_capacity(chunk.len() * 5);
        for (i, change) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?)"
            });
            args.extend([
                Arg::Int(change.seq.min(i64::MAX as u64) as i64),
                Arg::Text(change.job.id.to_string()),
                Arg::Text(change.kind.as_str().to_string()),
                Arg::Int(change.at),
                Arg::Blob(encode_change(change)?),
            ]);
        }
        script.push(&sql, args);
    }
    script.push("COMMIT", []);
    Ok(script)
}
