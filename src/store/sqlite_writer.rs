//! The SQLite writer: one task on its own thread owns the only writing connection and commits
//! in groups.
//!
//! Each statement is a round trip to SQLite's worker thread, and that round trip, not SQLite,
//! is the dominant cost of a small write. So a batch costs a handful of statements whatever its
//! size: the records it touches come from a write-through cache of what this writer wrote last
//! (read from the database only on a miss, in one statement per table), the operations are applied
//! in order in memory through the domain, and the records they changed are written with one
//! statement per table and per set of changed columns (updating only changed columns keeps
//! SQLite from rewriting every index entry of a row). Callers are answered after the commit.
//!
//! The cache is exact because this writer is the only one that writes the database; it is updated
//! only after a commit (before any caller is answered), and cleared when it outgrows its bound.
//! Its jobs are shared with readers ([`SharedJobs`]): GetJob of a job written recently costs no
//! statement at all, and still reads every acknowledged write.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use sqlx::{AssertSqlSafe, Connection, SqliteConnection};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::domain::{Change, Job, ObjectId, PvcProgress, now_micros};
use crate::error::Result;
use crate::store::batch::{BatchState, Done, Op, PvcKey, encode_change, pvc_key};
use crate::store::schema::{Stored, decode, params};
use crate::store::sql::Param;

/// Most writes committed in one transaction. Large enough to amortise an fsync over a burst,
/// small enough that the first caller of a batch is not kept waiting long.
const MAX_BATCH: usize = 512;
/// Jobs and PVC records the writer keeps; past that the cache is cleared and refills on demand.
const CACHED_JOBS: usize = 50_000;
const CACHED_PVCS: usize = 200_000;

#[allow(clippy::large_enum_variant)] // moved once per request
pub(super) enum Request {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Done>>,
    },
    /// Remove change-log entries older than `older_than` (µs since the epoch) or beyond the newest
    /// `keep_at_most`; the newest entry always stays. Answers how many were removed.
    Prune {
        older_than: i64,
        keep_at_most: u64,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Commit what is queued, then stop.
    Close,
}

/// Jobs as committed, shared between the writer (the only one that changes it) and readers.
pub(super) type SharedJobs = Arc<RwLock<HashMap<ObjectId, Job>>>;

/// The records as committed, for the ones this writer touched recently.
struct Cache {
    jobs: SharedJobs,
    pvcs: HashMap<PvcKey, PvcProgress>,
}

impl Cache {
    fn job(&self, id: &ObjectId) -> Option<Job> {
        self.jobs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
    }
}

/// What the writer shares with the rest of the store.
pub(super) struct WriterLinks {
    pub jobs: SharedJobs,
    /// Every committed change, in commit order, published after its commit.
    pub feed: broadcast::Sender<Arc<Change>>,
    /// Position of the newest committed change.
    pub head: Arc<AtomicU64>,
}

pub(super) async fn run_writer(
    mut conn: SqliteConnection,
    mut queue: mpsc::Receiver<Request>,
    links: WriterLinks,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut cache = Cache {
        jobs: links.jobs,
        pvcs: HashMap::new(),
    };
    let mut next_seq = links.head.load(Ordering::Acquire) + 1;
    let mut closing = false;
    while !closing {
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write { op, reply } => batch.push((op, reply)),
                Request::Close => closing = true,
                Request::Prune {
                    older_than,
                    keep_at_most,
                    reply,
                } => {
                    let _ = reply.send(prune(&mut conn, older_than, keep_at_most).await);
                }
            }
            if batch.len() < MAX_BATCH && !closing {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let committed =
                commit_batch(&mut conn, &mut batch, &mut cache, next_seq, &links.head).await;
            if let Some(last) = committed.last() {
                next_seq = last.seq + 1;
            }
            for change in committed {
                // No receiver is fine: nobody watches.
                let _ = links.feed.send(change);
            }
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the SQLite writer connection failed");
    }
}

/// Applies a batch in one transaction and answers every caller after the commit. Returns the
/// committed changes, numbered from `first_seq`, for the live feed.
///
/// `head` moves to the last committed position before any caller hears of its write, so a
/// read that a client starts after its acknowledgement knows the position it must reflect.
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<(Op, oneshot::Sender<Result<Done>>)>,
    cache: &mut Cache,
    first_seq: u64,
    head: &AtomicU64,
) -> Vec<Arc<Change>> {
    let started = std::time::Instant::now();
    let mut results: Vec<Result<Done>> = Vec::with_capacity(batch.len());
    let outcome: Result<BatchState> = async {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let mut state = BatchState::load(conn, cache, batch.iter().map(|(op, _)| op)).await?;
        state.next_seq = first_seq;
        let now = now_micros();
        for (op, _) in batch.iter() {
            results.push(state.apply(op, now));
        }
        state.flush(conn).await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok(state)
    }
    .await;
    tracing::debug!(
        batch = batch.len(),
        micros = started.elapsed().as_micros() as u64,
        "write batch"
    );
    let committed = match outcome {
        Ok(state) => {
            let committed = state.commit_to(cache);
            if let Some(last) = committed.last() {
                head.store(last.seq, Ordering::Release);
            }
            committed
        }
        Err(e) => {
            tracing::error!(error = %e, batch = batch.len(), "write batch failed; rolled back");
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(e.clone()));
            }
            return Vec::new();
        }
    };
    for ((_, reply), result) in batch.drain(..).zip(results) {
        // The caller may have gone away; its write is committed all the same.
        let _ = reply.send(result);
    }
    committed
}

/// Prunes the change log in one transaction (pruning runs rarely and in bounded chunks).
async fn prune(conn: &mut SqliteConnection, older_than: i64, keep_at_most: u64) -> Result<u64> {
    // The newest entry stays, so that max(seq) is always the head; at most 50,000 rows go per
    // call, so that writers never wait long behind a prune.
    let result = sqlx::query(
        "DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes) \
         AND seq < (SELECT min(seq) FROM changes) + 50000 \
         AND (at < ? OR seq <= (SELECT max(seq) FROM changes) - ?)",
    )
    .bind(older_than)
    .bind(keep_at_most.min(i64::MAX as u64) as i64)
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected())
}

static SELECT_JOBS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
        Job::columns().list
    )
});
static SELECT_PVCS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM pvc_progress WHERE (job_id, namespace, name) IN \
         (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?))",
        PvcProgress::columns().list
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
async fn write_rows<T: Stored>(
    conn: &mut SqliteConnection,
    insert: &str,
    rows: Vec<(Option<Vec<Param>>, Vec<Param>)>,
) -> Result<()> {
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

impl BatchState {
    /// Gathers every job and PVC record the batch's operations name: from the cache, and the
    /// misses from the database in one statement per table.
    async fn load(
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
                match cache.job(id) {
                    Some(job) => {
                        state.stored_jobs.insert(id.clone(), job);
                    }
                    None => {
                        missing_jobs.insert(id.as_str());
                    }
                }
            }
            if let Some(key) = key {
                match cache.pvcs.get(&key) {
                    Some(pvc) => {
                        state.stored_pvcs.insert(key, pvc.clone());
                    }
                    None => {
                        missing_pvcs.insert(key);
                    }
                }
            }
        }
        if !missing_jobs.is_empty() {
            let ids = serde_json::to_string(&missing_jobs).unwrap_or_default();
            let rows = sqlx::query(AssertSqlSafe(SELECT_JOBS.as_str()))
                .bind(ids)
                .fetch_all(&mut *conn)
                .await?;
            for row in &rows {
                let job: Job = decode(row)?;
                state.stored_jobs.insert(job.id.clone(), job);
            }
        }
        if !missing_pvcs.is_empty() {
            let keys: Vec<[&str; 3]> = missing_pvcs
                .iter()
                .map(|(j, ns, n)| [j.as_str(), ns, n])
                .collect();
            let keys = serde_json::to_string(&keys).unwrap_or_default();
            let rows = sqlx::query(AssertSqlSafe(SELECT_PVCS.as_str()))
                .bind(keys)
                .fetch_all(&mut *conn)
                .await?;
            for row in &rows {
                let pvc: PvcProgress = decode(row)?;
                state.stored_pvcs.insert(pvc_key(&pvc), pvc);
            }
        }
        Ok(state)
    }

    /// Writes what the batch changed: deletions first, then inserts and column updates.
    async fn flush(&self, conn: &mut SqliteConnection) -> Result<()> {
        if !self.deleted_jobs.is_empty() {
            let ids: Vec<&str> = self.deleted_jobs.iter().map(ObjectId::as_str).collect();
            let ids = serde_json::to_string(&ids).unwrap_or_default();
            sqlx::query(
                "DELETE FROM pvc_progress WHERE job_id IN (SELECT value FROM json_each(?))",
            )
            .bind(ids.clone())
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))")
                .bind(ids)
                .execute(&mut *conn)
                .await?;
        }
        let jobs = self
            .dirty_jobs
            .iter()
            .filter_map(|id| {
                let job = self.jobs.get(id)?.as_ref()?;
                Some((self.stored_jobs.get(id).map(params), params(job)))
            })
            .collect();
        write_rows::<Job>(conn, &INSERT_JOBS, jobs).await?;
        let pvcs = self
            .dirty_pvcs
            .iter()
            .filter_map(|key| {
                let pvc = self.pvcs.get(key)?.as_ref()?;
                Some((self.stored_pvcs.get(key).map(params), params(pvc)))
            })
            .collect();
        write_rows::<PvcProgress>(conn, &INSERT_PVCS, pvcs).await?;
        if !self.changes.is_empty() {
            // Bound parameters, up to 64 rows a statement: the entries are large, and parsing
            // them out of one JSON document costs SQLite more than binding them.
            for chunk in self.changes.chunks(64) {
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

    /// After the commit: the cache takes what the batch read and wrote; returns its changes.
    fn commit_to(self, cache: &mut Cache) -> Vec<Arc<Change>> {
        let mut jobs = cache
            .jobs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in &self.deleted_jobs {
            jobs.remove(id);
        }
        if !self.deleted_jobs.is_empty() {
            let deleted: HashSet<&ObjectId> = self.deleted_jobs.iter().collect();
            cache.pvcs.retain(|key, _| !deleted.contains(&key.0));
        }
        jobs.extend(self.stored_jobs);
        cache.pvcs.extend(self.stored_pvcs);
        for (id, job) in self.jobs {
            match job {
                Some(job) => jobs.insert(id, job),
                None => jobs.remove(&id),
            };
        }
        for (key, pvc) in self.pvcs {
            match pvc {
                Some(pvc) => cache.pvcs.insert(key, pvc),
                None => cache.pvcs.remove(&key),
            };
        }
        if jobs.len() > CACHED_JOBS {
            jobs.clear();
        }
        if cache.pvcs.len() > CACHED_PVCS {
            cache.pvcs.clear();
        }
        self.changes.into_iter().map(Arc::new).collect()
    }
}
