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
    let values: Vec<String> = (0..T::fields().len())
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

/// Writes `rows` (each as (stored params, new params)): new rows in one INSERT, changed rows in
/// one UPDATE per set of changed columns.
async fn write_rows<'a, T: Stored>(
    conn: &mut SqliteConnection,
    insert: &str,
    changed: impl Iterator<Item = Changed<'a, T>>,
) -> Result<()> {
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
        sqlx::query(AssertSqlSafe(insert))
            .bind(rows)
            .execute(&mut *conn)
            .await?;
    }
    for (changed, rows) in updates {
        let sql = update_sql(table, &names, &changed);
        let rows = serde_json::Value::Array(rows).to_string();
        sqlx::query(AssertSqlSafe(sql))
            .bind(rows)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
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
        let (job_id, key) = match op {
            Op::Create(new) => (new.id.as_ref(), None),
            Op::Change { id, .. } | Op::Delete { id, .. } => (Some(id), None),
            Op::Report(r) => (
                Some(&r.job_id),
                Some((r.job_id.clone(), r.namespace.clone(), r.name.clone())),
            ),
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

/// Writes what the batch changed: deletions first, then inserts and column updates.
pub(super) async fn flush(conn: &mut SqliteConnection, state: &BatchState) -> Result<()> {
    if !state.deleted_jobs.is_empty() {
        let ids = json_strings(state.deleted_jobs.iter().map(ObjectId::as_str));
        sqlx::query("DELETE FROM pvc_progress WHERE job_id IN (SELECT value FROM json_each(?))")
            .bind(ids.clone())
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))")
            .bind(ids)
            .execute(&mut *conn)
            .await?;
    }
    write_rows(conn, &INSERT_JOBS, state.changed_jobs()).await?;
    write_rows(conn, &INSERT_PVCS, state.changed_pvcs()).await?;
    if !state.changes.is_empty() {
        // Bound parameters, up to 64 rows a statement: the entries are large, and parsing
        // them out of one JSON document costs SQLite more than binding them.
        for chunk in state.changes.chunks(64) {
            let mut sql =
                String::from("INSERT INTO changes (seq, job_id, kind, at, change) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 {
                    "(?, ?, ?, ?, ?)"
                } else {
                    ", (?, ?, ?, ?, ?)"
                });
            }
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for change in chunk {
                let body = encode_change(change)?;
                query = query
                    .bind(change.seq.min(i64::MAX as u64) as i64)
                    .bind(change.job.id.to_string())
                    .bind(change.kind.as_str())
                    .bind(change.at)
                    .bind(body);
            }
            query.execute(&mut *conn).await?;
        }
    }
    Ok(())
}
