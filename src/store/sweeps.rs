//! The store's side of upkeep: the sweeps' candidate queries, each the predicate of one partial
//! index (migrations `*_upkeep.sql`), so that when nothing is due a sweep costs a few index
//! lookups however many jobs there are; and, for benchmarks of that claim, synthetic jobs
//! loaded in bulk and the databases' own query plans.

use sqlx::{PgPool, Row, SqlitePool};

use crate::domain::{Sweep, Upkeep};
use crate::error::Result;
use crate::store::schema::Param;
use crate::store::sql::Dialect;

/// The five candidate queries in one dialect.
pub(crate) struct DueQueries {
    queries: [(Sweep, Due, String); 5],
}

impl DueQueries {
    pub(crate) fn new(dialect: Dialect) -> DueQueries {
        let p = |n| dialect.placeholder(n);
        DueQueries {
            queries: Due::ALL.map(|(sweep, due, condition, order)| {
                // SQLite's planner, without statistics, prefers `jobs_state_id` for `state IN`
                // (reading every active job): name the index, which also fails the query
                // loudly should it ever not apply. Postgres picks it by its statistics.
                let from = match dialect {
                    Dialect::Sqlite => format!("jobs INDEXED BY {}", due.index()),
                    Dialect::Postgres => "jobs".to_string(),
                };
                let sql = format!(
                    "SELECT id FROM {from} WHERE {condition} AND {order} <= {} ORDER BY {order} LIMIT {}",
                    p(1),
                    p(2)
                );
                (sweep, due, sql)
            }),
        }
    }

    /// The queries worth running under `upkeep` at `now`, each with its bound and `limit`.
    pub(crate) fn bound(
        &self,
        upkeep: &Upkeep,
        now: i64,
        limit: usize,
    ) -> impl Iterator<Item = (Sweep, &str, Vec<Param>)> {
        let limit = Param::Int(Some(limit.min(i64::MAX as usize) as i64));
        self.queries.iter().filter_map(move |(sweep, due, sql)| {
            let cutoff = due.cutoff(upkeep, now)?;
            Some((
                *sweep,
                sql.as_str(),
                vec![Param::Int(Some(cutoff)), limit.clone()],
            ))
        })
    }
}

/// Which jobs a sweep query finds, and the bound its index is read up to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Due {
    /// Finished, kept for the server's retention: `end_time` (s) at most now − retention.
    Retention,
    /// Finished with a `ttl_seconds_after_finished`: its `ttl_expiry` (`end_time` + ttl) at
    /// most now (s).
    OwnTtl,
    /// Active, not stalled, the server's stall-after: `last_report_time` at most now −
    /// stall-after − its resolution (a twentieth of it).
    StallAfter,
    /// Active, not stalled, its own `stall_after_seconds`: the same bound, computed per row.
    OwnStallAfter,
    /// Stalled: `abandon_time` at most now.
    Abandon,
}

impl Due {
    /// (what it finds, which, the condition, the ordered expression): the conditions are the
    /// partial indexes' own predicates, word for word, so that both databases use them.
    const ALL: [(Sweep, Due, &'static str, &'static str); 5] = [
        (
            Sweep::Expire,
            Due::Retention,
            "state NOT IN ('PENDING', 'RUNNING') AND ttl_seconds_after_finished IS NULL",
            "end_time",
        ),
        (
            Sweep::Expire,
            Due::OwnTtl,
            "ttl_expiry IS NOT NULL",
            "ttl_expiry",
        ),
        (
            Sweep::Stall,
            Due::StallAfter,
            "state IN ('PENDING', 'RUNNING') AND stalled_since IS NULL AND stall_after_seconds IS NULL",
            "last_report_time",
        ),
        (
            Sweep::Stall,
            Due::OwnStallAfter,
            "state IN ('PENDING', 'RUNNING') AND stalled_since IS NULL AND stall_after_seconds > 0",
            // STALL_MICROS_PER_SECOND (a test checks that they agree).
            "(last_report_time + stall_after_seconds * 1050000)",
        ),
        (
            Sweep::Abandon,
            Due::Abandon,
            "abandon_time IS NOT NULL",
            "abandon_time",
        ),
    ];

    /// The partial index that answers the query (migrations `*_upkeep.sql`).
    fn index(self) -> &'static str {
        match self {
            Due::Retention => "jobs_expire",
            Due::OwnTtl => "jobs_expire_own",
            Due::StallAfter => "jobs_stall",
            Due::OwnStallAfter => "jobs_stall_own",
            Due::Abandon => "jobs_abandon",
        }
    }

    /// The bound of the query at `now`; `None` when the policy makes the query pointless.
    fn cutoff(self, upkeep: &Upkeep, now: i64) -> Option<i64> {
        match self {
            Due::Retention => upkeep.retention_cutoff(now),
            Due::OwnTtl => Some(now.div_euclid(1_000_000)),
            Due::StallAfter => upkeep.stall_cutoff(now),
            Due::OwnStallAfter | Due::Abandon => Some(now),
        }
    }
}

/// Synthetic jobs to load: `finished` ones (a third each COMPLETED, FAILED and PARTIAL, each
/// with three COPY PVC records, ended over `spread_secs` up to `age_secs` ago) and `active`
/// RUNNING ones (last report within the last 5 minutes).
#[derive(Clone, Copy, Debug)]
pub struct Synthetic {
    pub finished: u64,
    pub active: u64,
    pub spread_secs: i64,
    pub age_secs: i64,
}

/// Loads `what` in bulk, with ids after every id in use; the database does the work, a chunk
/// per statement. For benchmarks only: it bypasses the writer, so a server must be (re)started
/// on it afterwards.
pub(crate) async fn load_synthetic(
    db: SyntheticTarget<'_>,
    what: Synthetic,
    now: i64,
) -> Result<()> {
    let Synthetic {
        finished,
        active,
        spread_secs,
        age_secs,
    } = what;
    const CHUNK: u64 = 50_000;
    let start: i64 = match db {
        SyntheticTarget::Sqlite(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM jobs")
                .fetch_one(pool)
                .await?
        }
        SyntheticTarget::Postgres(pool) => {
            sqlx::query_scalar("SELECT count(*) FROM jobs")
                .fetch_one(pool)
                .await?
        }
    };
    let (start, total) = (start.max(0) as u64, finished + active);
    let mut from = 0;
    while from < total {
        let to = (from + CHUNK).min(total);
        // Jobs below `finished` are finished; the rest are RUNNING.
        let rows = [
            (start + from) as i64,
            (start + to) as i64,
            (start + finished) as i64,
        ];
        // The same parameters on either driver: first n, last n, first RUNNING n, now, spread,
        // age.
        macro_rules! insert {
            ($sql:expr, $pool:expr) => {
                sqlx::query($sql)
                    .bind(rows[0])
                    .bind(rows[1] - 1)
                    .bind(rows[2])
                    .bind(now)
                    .bind(spread_secs.max(1))
                    .bind(age_secs.max(0))
                    .execute($pool)
                    .await?
            };
        }
        match db {
            SyntheticTarget::Sqlite(pool) => {
                insert!(SYNTHETIC_SQLITE, pool);
                insert!(SYNTHETIC_PVCS_SQLITE, pool);
            }
            SyntheticTarget::Postgres(pool) => {
                insert!(SYNTHETIC_POSTGRES, pool);
                insert!(SYNTHETIC_PVCS_POSTGRES, pool);
            }
        }
        from = to;
    }
    if let SyntheticTarget::Postgres(pool) = db {
        sqlx::query("ANALYZE jobs").execute(pool).await?;
    }
    Ok(())
}

/// Which database [`load_synthetic`] and [`explain`] work on.
#[derive(Clone, Copy)]
pub(crate) enum SyntheticTarget<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

/// Parameters: first n, last n, first RUNNING n, now (µs), spread of end times (s), age of the
/// newest end time (s). Synthetic ids start with `ff` (jobs) and `fe` (PVC records), after every
/// real id.
const SYNTHETIC_SQLITE: &str = "\
INSERT INTO jobs (id, name, type, state, start_time, end_time, activity, created, updated, revision, etag, last_report_time)
WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
SELECT printf('ff%022x', i), 'synthetic-' || i, 'K8S_COPY',
    CASE WHEN i >= ?3 THEN 'RUNNING' WHEN i % 3 = 0 THEN 'COMPLETED' WHEN i % 3 = 1 THEN 'FAILED' ELSE 'PARTIAL' END,
    ?4 / 1000000 - ?6 - i % ?5 - 3600,
    CASE WHEN i >= ?3 THEN NULL ELSE ?4 / 1000000 - ?6 - i % ?5 END,
    '[]', ?4 - (?6 + i % ?5 + 3600) * 1000000, ?4 - (?6 + i % ?5) * 1000000, 2, printf('%040x', i),
    CASE WHEN i >= ?3 THEN ?4 - (i % 300) * 1000000 ELSE ?4 - (?6 + i % ?5) * 1000000 END
FROM n";

const SYNTHETIC_PVCS_SQLITE: &str = "\
INSERT INTO pvc_progress (id, job_id, namespace, name, state, op_type, estimated_size, transferred_size, created, updated, revision, etag)
WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2),
    k(j) AS (VALUES (0), (1), (2))
SELECT printf('fe%022x', i * 3 + j), printf('ff%022x', i), 'production', 'data-' || j, 'COMPLETED',
    'K8S_COPY', 1073741824, 1073741824, ?4 - (?6 + i % ?5) * 1000000, ?4 - (?6 + i % ?5) * 1000000,
    2, printf('%040x', i * 3 + j)
FROM n, k WHERE i < ?3";

const SYNTHETIC_POSTGRES: &str = "\
INSERT INTO jobs (id, name, type, state, start_time, end_time, activity, created, updated, revision, etag, last_report_time)
SELECT 'ff' || lpad(to_hex(i), 22, '0'), 'synthetic-' || i, 'K8S_COPY',
    CASE WHEN i >= $3 THEN 'RUNNING' WHEN i % 3 = 0 THEN 'COMPLETED' WHEN i % 3 = 1 THEN 'FAILED' ELSE 'PARTIAL' END,
    $4 / 1000000 - $6 - i % $5 - 3600,
    CASE WHEN i >= $3 THEN NULL ELSE $4 / 1000000 - $6 - i % $5 END,
    '[]', $4 - ($6 + i % $5 + 3600) * 1000000, $4 - ($6 + i % $5) * 1000000, 2, lpad(to_hex(i), 40, '0'),
    CASE WHEN i >= $3 THEN $4 - (i % 300) * 1000000 ELSE $4 - ($6 + i % $5) * 1000000 END
FROM generate_series($1::bigint, $2::bigint) AS i";

const SYNTHETIC_PVCS_POSTGRES: &str = "\
INSERT INTO pvc_progress (id, job_id, namespace, name, state, op_type, estimated_size, transferred_size, created, updated, revision, etag)
SELECT 'fe' || lpad(to_hex(i * 3 + j), 22, '0'), 'ff' || lpad(to_hex(i), 22, '0'), 'production', 'data-' || j,
    'COMPLETED', 'K8S_COPY', 1073741824, 1073741824, $4 - ($6 + i % $5) * 1000000, $4 - ($6 + i % $5) * 1000000,
    2, lpad(to_hex(i * 3 + j), 40, '0')
FROM generate_series($1::bigint, $2::bigint) AS i, generate_series(0, 2) AS j WHERE i < $3";

/// The database's plan for `sql` with `params`, a line per step.
pub(crate) async fn explain(
    db: SyntheticTarget<'_>,
    sql: &str,
    params: &[Param],
) -> Result<Vec<String>> {
    let ints = params.iter().map(|p| match p {
        Param::Int(v) => v.unwrap_or_default(),
        Param::Text(_) => 0,
    });
    match db {
        SyntheticTarget::Sqlite(pool) => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
            for v in ints {
                query = query.bind(v);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok(r.try_get::<String, _>(3)?))
                .collect()
        }
        SyntheticTarget::Postgres(pool) => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "EXPLAIN (ANALYZE, BUFFERS) {sql}"
            )));
            for v in ints {
                query = query.bind(v);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok(r.try_get::<String, _>(0)?))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::upkeep::STALL_MICROS_PER_SECOND;

    const MIGRATIONS: [(&str, &str); 2] = [
        (
            "sqlite",
            include_str!("../../migrations/sqlite/0005_upkeep.sql"),
        ),
        (
            "postgres",
            include_str!("../../migrations/postgres/0003_upkeep.sql"),
        ),
    ];

    #[test]
    fn each_query_is_its_partial_index_word_for_word() {
        for (_, due, condition, order) in Due::ALL {
            for (backend, migration) in MIGRATIONS {
                let index = format!("CREATE INDEX {} ON jobs ({order})", due.index());
                assert!(
                    migration.contains(&index),
                    "{backend}: the index of {due:?} is not `{index}`"
                );
                assert!(
                    migration.contains(&format!("WHERE {condition};")),
                    "{backend}: the index of {due:?} is not partial on `{condition}`"
                );
            }
        }
    }

    #[test]
    fn the_stall_expression_is_the_domains() {
        let (_, _, _, order) = Due::ALL[3];
        assert!(
            order.contains(&format!("* {STALL_MICROS_PER_SECOND})")),
            "{order} against {STALL_MICROS_PER_SECOND}"
        );
    }
}
