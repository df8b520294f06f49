//! The SQL that is the same on both backends, written once over any sqlx driver: reads of
//! records by id and in pages, counts, the change log's span and entries, API keys, and the
//! reads a snapshot makes inside its transaction. Statements differ only in their placeholders
//! (`?` or `$n`) and in the name of the change log's position column.

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool};
use sqlx::{Row, Type};

use crate::auth::ApiKey;
use crate::domain::query::{Filter, ListQuery};
use crate::domain::{Change, Job, JobState, ObjectId, PvcProgress, Sweep, Upkeep};
use crate::error::Result;
use crate::store::batch::decode_change;
use crate::store::schema::{KeyRow, Param, Stored, api_key, decode, select, states};
use crate::store::sql::{Dialect, Sql, page, snapshot_page};
use crate::store::sweeps::DueQueries;
use crate::store::txconn::TxConn;
use crate::store::{History, Page};

/// One backend's pool and its spelling of the shared statements.
pub(crate) struct Db<DB: Database> {
    pub pool: Pool<DB>,
    dialect: Dialect,
    statements: Statements,
}

/// The shared statements, in one dialect.
struct Statements {
    job_by_id: String,
    pvc_by_id: String,
    pvcs_of_job: String,
    changes_after: String,
    changes_of_job_after: String,
    history: String,
    head: String,
    /// The sweeps' candidate queries, each answered by one partial index (see the migrations).
    due: DueQueries,
}

impl Statements {
    /// `position` names the change log's position column.
    fn new(dialect: Dialect, position: &str) -> Statements {
        let p = |n| dialect.placeholder(n);
        Statements {
            job_by_id: select::<Job>(&format!("id = {}", p(1))),
            pvc_by_id: select::<PvcProgress>(&format!("id = {}", p(1))),
            pvcs_of_job: select::<PvcProgress>(&format!("job_id = {} ORDER BY created, id", p(1))),
            changes_after: format!(
                "SELECT {position}, change FROM changes WHERE {position} > {} \
                 ORDER BY {position} LIMIT {}",
                p(1),
                p(2)
            ),
            changes_of_job_after: format!(
                "SELECT {position}, change FROM changes WHERE job_id = {} AND {position} > {} \
                 ORDER BY {position} LIMIT {}",
                p(1),
                p(2),
                p(3)
            ),
            history: format!("SELECT min({position}), max({position}) FROM changes"),
            head: format!("SELECT coalesce(max({position}), 0) FROM changes"),
            due: DueQueries::new(dialect),
        }
    }
}

/// Binds `params` to `text`, in order.
pub(super) fn query<'q, DB>(text: &str, params: Vec<Param>) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'e> Option<i64>: Encode<'e, DB> + Type<DB>,
    for<'e> Option<String>: Encode<'e, DB> + Type<DB>,
{
    let mut query = sqlx::query(AssertSqlSafe(text.to_string()));
    for param in params {
        query = match param {
            Param::Int(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
        };
    }
    query
}

pub(super) fn text(s: &str) -> Param {
    Param::Text(Some(s.to_string()))
}

pub(super) fn int(n: i64) -> Param {
    Param::Int(Some(n))
}

impl<DB> Db<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'e> Option<i64>: Encode<'e, DB> + Type<DB>,
    for<'e> Option<String>: Encode<'e, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    /// `position` names the change log's position column.
    pub fn new(pool: Pool<DB>, dialect: Dialect, position: &str) -> Db<DB> {
        Db {
            pool,
            dialect,
            statements: Statements::new(dialect, position),
        }
    }

    /// The dialect its statements are written in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A connection of its own, for reads that need one (the pool's executor boxes its futures,
    /// so reads on the pool itself keep the callers' futures small).
    async fn conn(&self) -> Result<PoolConnection<DB>> {
        Ok(self.pool.acquire().await?)
    }

    pub async fn job(&self, id: &ObjectId) -> Result<Option<Job>> {
        self.one(&self.statements.job_by_id, id).await
    }

    pub async fn pvc(&self, id: &ObjectId) -> Result<Option<PvcProgress>> {
        self.one(&self.statements.pvc_by_id, id).await
    }

    async fn one<T: Stored>(&self, statement: &str, id: &ObjectId) -> Result<Option<T>> {
        let row = query::<DB>(statement, vec![text(id.as_str())])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// One page of `query` (a single indexed statement), beside the total of all matches.
    pub async fn page<T: Stored>(
        &self,
        query: &ListQuery<T>,
        total: impl Future<Output = Result<i64>>,
    ) -> Result<Page<T>> {
        let sql = page(self.dialect, query);
        let rows = async { self.rows::<T>(sql).await };
        let (items, total) = tokio::try_join!(rows, total)?;
        Ok(Page::from_rows(items, query, total))
    }

    async fn rows<T: Stored>(&self, sql: Sql) -> Result<Vec<T>> {
        let rows = query::<DB>(&sql.text, sql.params)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// The number of records matching `filter`, on `conn` (in the caller's transaction).
    pub async fn count<T: Stored>(
        &self,
        conn: &mut DB::Connection,
        filter: &Filter<T>,
    ) -> Result<i64> {
        let mut count = Sql::new(
            self.dialect,
            &format!("SELECT count(*) FROM {} WHERE ", T::TABLE),
        );
        count.filter(filter);
        let row = query::<DB>(&count.text, count.params)
            .fetch_one(&mut *conn)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The number of records matching `filter`, outside any snapshot.
    pub async fn count_now<T: Stored>(&self, filter: &Filter<T>) -> Result<i64> {
        self.count(&mut *self.conn().await?, filter).await
    }

    pub async fn jobs_by_state(&self) -> Result<Vec<(JobState, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(states(rows))
    }

    /// Up to `limit` jobs of each kind that `upkeep` finds due at `now`, oldest first. Each
    /// query reads one partial index, so when nothing is due it costs a lookup, however many
    /// jobs there are. Candidates only: the writer decides again ([`Upkeep::due`]).
    pub async fn due_jobs(
        &self,
        upkeep: &Upkeep,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(ObjectId, Sweep)>> {
        let mut found = Vec::new();
        for (sweep, sql, params) in self.statements.due.bound(upkeep, now, limit) {
            for row in query::<DB>(sql, params).fetch_all(&self.pool).await? {
                let id: String = row.try_get(0)?;
                found.push((ObjectId::from_stored(id), sweep));
            }
        }
        Ok(found)
    }

    /// The sweeps' queries as [`Db::due_jobs`] runs them at `now`, with their parameters.
    pub fn due_queries(&self, upkeep: &Upkeep, now: i64) -> Vec<(Sweep, &str, Vec<Param>)> {
        self.statements.due.bound(upkeep, now, 64).collect()
    }

    /// The newest position this database has numbered.
    pub async fn head(&self, conn: &mut DB::Connection) -> Result<u64> {
        let head: i64 = query::<DB>(&self.statements.head, Vec::new())
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        Ok(head.max(0) as u64)
    }

    /// Up to `limit` changes after position `after` (of one job, if given), in order, each
    /// with its position.
    pub async fn changes_after(
        &self,
        after: u64,
        job: Option<&ObjectId>,
        limit: u32,
    ) -> Result<Vec<Change>> {
        let after = int(after.min(i64::MAX as u64) as i64);
        let limit = int(i64::from(limit));
        let (statement, params) = match job {
            Some(job) => (
                &self.statements.changes_of_job_after,
                vec![text(job.as_str()), after, limit],
            ),
            None => (&self.statements.changes_after, vec![after, limit]),
        };
        let rows = query::<DB>(statement, params).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| positioned(row.try_get(0)?, &row.try_get::<Vec<u8>, _>(1)?))
            .collect()
    }

    /// The retained history: changes after `floor` are all still in the log.
    pub async fn history(&self) -> Result<History> {
        let row = query::<DB>(&self.statements.history, Vec::new())
            .fetch_one(&self.pool)
            .await?;
        let (min, max): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        let head = max.unwrap_or(0).max(0) as u64;
        let floor = min.map_or(head, |m| (m.max(1) - 1) as u64);
        Ok(History { floor, head })
    }

    /// A job and its PVC records, on `conn` (in the caller's transaction).
    pub async fn job_with_pvcs(
        &self,
        conn: &mut DB::Connection,
        id: &ObjectId,
    ) -> Result<(Option<Job>, Vec<PvcProgress>)> {
        let job = query::<DB>(&self.statements.job_by_id, vec![text(id.as_str())])
            .fetch_optional(&mut *conn)
            .await?
            .as_ref()
            .map(decode)
            .transpose()?;
        let pvcs = query::<DB>(&self.statements.pvcs_of_job, vec![text(id.as_str())])
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>>>()?;
        Ok((job, pvcs))
    }

    /// One page of a WatchJobs snapshot, on `conn` (in the caller's transaction).
    pub async fn snapshot_page(
        &self,
        conn: &mut DB::Connection,
        filter: &Filter<Job>,
        after: Option<&ObjectId>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let sql = snapshot_page(self.dialect, filter, after.map(ObjectId::as_str), limit);
        query::<DB>(&sql.text, sql.params)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Ends the read transaction a snapshot was read in; the connection goes back to the pool
    /// only if that worked.
    pub async fn end_snapshot(&self, mut conn: TxConn<DB>) {
        match sqlx::query("COMMIT").execute(&mut **conn).await {
            Ok(_) => drop(conn.ended()),
            Err(e) => tracing::debug!(error = %e, "ending a snapshot's read transaction failed"),
        }
    }

    /// Stores a new API key (its hash only).
    pub async fn create_key(&self, key: &ApiKey) -> Result<()> {
        let mut insert = Sql::new(
            self.dialect,
            "INSERT INTO api_keys (id, name, role, hash, created) VALUES (",
        );
        insert
            .bind(text(&key.id))
            .push(", ")
            .bind(text(&key.name))
            .push(", ");
        insert
            .bind(text(key.role.as_str()))
            .push(", ")
            .bind(text(&key.hash));
        insert.push(", ").bind(int(key.created)).push(")");
        query::<DB>(&insert.text, insert.params)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT id, name, role, hash, created, revoked FROM api_keys ORDER BY created, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(api_key).collect()
    }

    /// Revokes a key; false if there is no such key.
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<bool> {
        let mut update = Sql::new(
            self.dialect,
            "UPDATE api_keys SET revoked = coalesce(revoked, ",
        );
        update.bind(int(now)).push(") WHERE id = ").bind(text(id));
        update.push(" RETURNING id");
        let revoked = query::<DB>(&update.text, update.params)
            .fetch_optional(&self.pool)
            .await?;
        Ok(revoked.is_some())
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Decodes a change-log entry and gives it its position (a Postgres entry is encoded before
/// it has one).
pub(crate) fn positioned(position: i64, bytes: &[u8]) -> Result<Change> {
    let mut change = decode_change(bytes)?;
    change.seq = position.max(0) as u64;
    Ok(change)
}
