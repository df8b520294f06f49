//! The SQL of webhook subscriptions, the same on both backends: the subscriptions themselves,
//! the leases that let exactly one replica deliver each, their fenced progress, and the record
//! of delivery attempts.

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::domain::ObjectId;
use crate::domain::subscription::{Attempt, Events, Outcome, Progress, Status, Subscription};
use crate::error::{Error, Result};
use crate::store::db::{Db, int, query, text};
use crate::store::schema::Param;
use crate::store::sql::{Dialect, Sql};

/// Attempts kept per subscription (a ring of slots).
pub const ATTEMPTS_KEPT: u64 = 100;

/// What one save of a replica's deliveries records: each subscription's progress, and its
/// attempts, oldest first.
#[derive(Clone, Default)]
pub struct DeliveryRecord {
    pub progress: Vec<(ObjectId, Progress)>,
    pub attempts: Vec<Attempt>,
}

/// Subscriptions updated by one statement (6 parameters each).
const SUBSCRIPTIONS_PER_STATEMENT: usize = 1000;

/// Attempts written by one statement (11 parameters each: well under either database's limit).
const ATTEMPT_ROWS_PER_STATEMENT: usize = 500;

const COLUMNS: &str = "id, url, filter, events, secret, created, cursor, status, failing_since, \
                       last_error, delivered";

fn unreadable(what: &str, value: &str) -> Error {
    Error::Internal(format!(
        "unreadable subscription {what} {value:?} in the database"
    ))
}

impl<DB> Db<DB>
where
    DB: Database + sqlx::database::HasStatementCache,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'e> Option<i64>: Encode<'e, DB> + Type<DB>,
    for<'e> Option<String>: Encode<'e, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    fn subscription(row: &DB::Row) -> Result<Subscription> {
        let events: String = row.try_get(3)?;
        let status: String = row.try_get(7)?;
        let id: String = row.try_get(0)?;
        Ok(Subscription {
            id: ObjectId::parse("subscription id", &id)?,
            url: row.try_get(1)?,
            where_: row.try_get(2)?,
            events: Events::parse(&events).ok_or_else(|| unreadable("events", &events))?,
            secret: row.try_get(4)?,
            created: row.try_get(5)?,
            cursor: row.try_get::<i64, _>(6)?.max(0) as u64,
            status: Status::parse(&status).ok_or_else(|| unreadable("status", &status))?,
            failing_since: row.try_get(8)?,
            last_error: row.try_get(9)?,
            delivered: row.try_get::<i64, _>(10)?.max(0) as u64,
        })
    }

    pub async fn create_subscription(&self, s: &Subscription) -> Result<()> {
        let mut insert = Sql::new(
            self.dialect(),
            &format!("INSERT INTO subscriptions ({COLUMNS}) VALUES ("),
        );
        insert
            .bind(text(s.id.as_str()))
            .push(", ")
            .bind(text(&s.url))
            .push(", ");
        insert
            .bind(text(&s.where_))
            .push(", ")
            .bind(text(s.events.as_str()))
            .push(", ");
        insert
            .bind(text(&s.secret))
            .push(", ")
            .bind(int(s.created))
            .push(", ");
        insert
            .bind(int(s.cursor as i64))
            .push(", ")
            .bind(text(s.status.as_str()))
            .push(", ");
        insert
            .bind(Param::Int(s.failing_since))
            .push(", ")
            .bind(text(&s.last_error))
            .push(", ");
        insert.bind(int(s.delivered as i64)).push(")");
        query::<DB>(&insert.text, insert.params)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_subscription(&self, id: &ObjectId) -> Result<Option<Subscription>> {
        let mut select = Sql::new(
            self.dialect(),
            &format!("SELECT {COLUMNS} FROM subscriptions WHERE id = "),
        );
        select.bind(text(id.as_str()));
        let row = query::<DB>(&select.text, select.params)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::subscription).transpose()
    }

    /// Every subscription, oldest first.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        let text = format!("SELECT {COLUMNS} FROM subscriptions ORDER BY created, id");
        let rows = query::<DB>(&text, vec![]).fetch_all(&self.pool).await?;
        rows.iter().map(Self::subscription).collect()
    }

    /// Deletes a subscription and its record of attempts; false if there was none.
    pub async fn delete_subscription(&self, id: &ObjectId) -> Result<bool> {
        let mut attempts = Sql::new(
            self.dialect(),
            "DELETE FROM deliveries WHERE subscription_id = ",
        );
        attempts.bind(text(id.as_str()));
        let mut delete = Sql::new(self.dialect(), "DELETE FROM subscriptions WHERE id = ");
        delete.bind(text(id.as_str())).push(" RETURNING id");
        let deleted = query::<DB>(&delete.text, delete.params)
            .fetch_optional(&self.pool)
            .await?;
        query::<DB>(&attempts.text, attempts.params)
            .execute(&self.pool)
            .await?;
        Ok(deleted.is_some())
    }

    /// Takes or renews, until `until`, the lease of every subscription that `owner` holds or
    /// whose lease has run out by `now`; answers the subscriptions `owner` now holds. Two
    /// replicas claiming at once: each row goes to one of them.
    pub async fn claim_subscriptions(
        &self,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Vec<Subscription>> {
        let mut claim = Sql::new(self.dialect(), "UPDATE subscriptions SET lease_owner = ");
        claim
            .bind(text(owner))
            .push(", lease_until = ")
            .bind(int(until));
        claim.push(" WHERE lease_owner = ").bind(text(owner));
        claim
            .push(" OR lease_owner IS NULL OR lease_until < ")
            .bind(int(now));
        claim.push(&format!(" RETURNING {COLUMNS}"));
        let rows = query::<DB>(&claim.text, claim.params)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::subscription).collect()
    }

    /// Gives up every lease `owner` holds (a replica shutting down hands over at once).
    pub async fn release_subscriptions(&self, owner: &str) -> Result<()> {
        let mut release = Sql::new(
            self.dialect(),
            "UPDATE subscriptions SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ",
        );
        release.bind(text(owner));
        query::<DB>(&release.text, release.params)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records, in one transaction, the progress of the subscriptions `owner` still holds and
    /// their attempts; answers the ids whose lease `owner` no longer holds
    /// ([`Db::record_deliveries`]).
    pub async fn save_deliveries(
        &self,
        owner: &str,
        record: &DeliveryRecord,
    ) -> Result<Vec<ObjectId>> {
        let mut tx = self.pool.begin().await?;
        let lost = Self::record_deliveries(self.dialect(), &mut tx, owner, record).await?;
        tx.commit().await?;
        Ok(lost)
    }

    /// Records, on `conn` (in a transaction), the progress of the subscriptions `owner` still
    /// holds and their attempts (each in its slot of the subscription's ring); answers the ids
    /// whose lease `owner` no longer holds (another replica took over, or the subscription was
    /// deleted): their progress is not recorded and their delivery must stop. A few set-wide
    /// statements whatever the number of subscriptions (one per subscription cost the writer
    /// 200 statements a save beside 100 busy subscriptions), none kept prepared: their text
    /// changes with the count, and they would push the writer's own out of its cache.
    pub(crate) async fn record_deliveries(
        dialect: Dialect,
        conn: &mut DB::Connection,
        owner: &str,
        record: &DeliveryRecord,
    ) -> Result<Vec<ObjectId>> {
        let mut lost = Self::record_progress(dialect, conn, owner, &record.progress).await?;
        let slotted =
            Self::reserve_slots(dialect, conn, owner, &record.attempts, &mut lost).await?;
        Self::record_attempts(dialect, conn, &slotted).await?;
        Ok(lost)
    }

    /// Updates the subscriptions `owner` holds to their `progress`; answers those it no longer
    /// holds.
    async fn record_progress(
        dialect: Dialect,
        conn: &mut DB::Connection,
        owner: &str,
        progress: &[(ObjectId, Progress)],
    ) -> Result<Vec<ObjectId>> {
        let mut lost = Vec::new();
        for chunk in progress.chunks(SUBSCRIPTIONS_PER_STATEMENT) {
            let mut update = Sql::new(
                dialect,
                "UPDATE subscriptions SET cursor = v.column2, delivered = delivered + v.column3, \
                 status = v.column4, failing_since = v.column5, last_error = v.column6 FROM (VALUES ",
            );
            for (i, (id, p)) in chunk.iter().enumerate() {
                update.push(if i == 0 { "(" } else { ", (" });
                update
                    .bind(text(id.as_str()))
                    .push(", ")
                    .bind(int(p.cursor as i64))
                    .push(", ");
                update
                    .bind(int(p.delivered as i64))
                    .push(", ")
                    .bind(text(p.status.as_str()))
                    .push(", ");
                update
                    .bind(Param::Int(p.failing_since))
                    .push(", ")
                    .bind(text(&p.last_error))
                    .push(")");
            }
            update
                .push(") AS v WHERE subscriptions.id = v.column1 AND lease_owner = ")
                .bind(text(owner))
                .push(" RETURNING id");
            let held: Vec<String> = query::<DB>(&update.text, update.params)
                .persistent(false)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<std::result::Result<_, _>>()?;
            lost.extend(
                chunk
                    .iter()
                    .filter(|(id, _)| !held.iter().any(|h| h == id.as_str()))
                    .map(|(id, _)| id.clone()),
            );
        }
        Ok(lost)
    }

    /// Writes each attempt into its slot of its subscription's ring.
    async fn record_attempts(
        dialect: Dialect,
        conn: &mut DB::Connection,
        slotted: &[(u64, &Attempt)],
    ) -> Result<()> {
        for chunk in slotted.chunks(ATTEMPT_ROWS_PER_STATEMENT) {
            let mut insert = Sql::new(
                dialect,
                "INSERT INTO deliveries (subscription_id, slot, position, attempt, at, job_id, type, status_code, error, micros, outcome) VALUES ",
            );
            for (i, (slot, a)) in chunk.iter().enumerate() {
                insert.push(if i == 0 { "(" } else { ", (" });
                insert
                    .bind(text(a.subscription_id.as_str()))
                    .push(", ")
                    .bind(int(*slot as i64))
                    .push(", ");
                insert
                    .bind(int(a.position as i64))
                    .push(", ")
                    .bind(int(i64::from(a.attempt)))
                    .push(", ");
                insert
                    .bind(int(a.at))
                    .push(", ")
                    .bind(text(&a.job_id))
                    .push(", ");
                insert
                    .bind(text(&a.type_))
                    .push(", ")
                    .bind(int(i64::from(a.status_code)))
                    .push(", ");
                insert
                    .bind(text(&a.error))
                    .push(", ")
                    .bind(int(a.micros.min(i64::MAX as u64) as i64));
                insert.push(", ").bind(text(a.outcome.as_str())).push(")");
            }
            insert.push(" ON CONFLICT (subscription_id, slot) DO UPDATE SET position = excluded.position, \
                         attempt = excluded.attempt, at = excluded.at, job_id = excluded.job_id, \
                         type = excluded.type, status_code = excluded.status_code, \
                         error = excluded.error, micros = excluded.micros, outcome = excluded.outcome");
            query::<DB>(&insert.text, insert.params)
                .persistent(false)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Takes, for each subscription `owner` still holds, the next slots of its ring for its
    /// `attempts` (counted in its row); answers each attempt that is kept with its slot: of a
    /// subscription's attempts only the newest [`ATTEMPTS_KEPT`], so that no slot comes twice
    /// (one statement may not upsert a row twice). Those no longer held join `lost`.
    async fn reserve_slots<'a>(
        dialect: Dialect,
        conn: &mut DB::Connection,
        owner: &str,
        attempts: &'a [Attempt],
        lost: &mut Vec<ObjectId>,
    ) -> Result<Vec<(u64, &'a Attempt)>> {
        let mut made: Vec<(&ObjectId, i64)> = Vec::new();
        for a in attempts
            .iter()
            .filter(|a| !lost.contains(&a.subscription_id))
        {
            match made.iter_mut().find(|(id, _)| **id == a.subscription_id) {
                Some((_, n)) => *n += 1,
                None => made.push((&a.subscription_id, 1)),
            }
        }
        // Per subscription: the slot counter before these attempts, and how many are skipped.
        let mut first: Vec<(&ObjectId, u64, i64)> = Vec::with_capacity(made.len());
        for chunk in made.chunks(SUBSCRIPTIONS_PER_STATEMENT) {
            let mut update = Sql::new(
                dialect,
                "UPDATE subscriptions SET attempts_made = attempts_made + v.column2 FROM (VALUES ",
            );
            for (i, (id, n)) in chunk.iter().enumerate() {
                update.push(if i == 0 { "(" } else { ", (" });
                update
                    .bind(text(id.as_str()))
                    .push(", ")
                    .bind(int(*n))
                    .push(")");
            }
            update
                .push(") AS v WHERE subscriptions.id = v.column1 AND lease_owner = ")
                .bind(text(owner))
                .push(" RETURNING id, attempts_made");
            let rows = query::<DB>(&update.text, update.params)
                .persistent(false)
                .fetch_all(&mut *conn)
                .await?;
            for (id, n) in chunk {
                let mut after = None;
                for row in &rows {
                    if row.try_get::<String, _>(0)? == id.as_str() {
                        after = Some(row.try_get::<i64, _>(1)?);
                    }
                }
                match after {
                    Some(after) => {
                        let skipped = (n - ATTEMPTS_KEPT as i64).max(0);
                        first.push((id, (after - n).max(0) as u64, skipped));
                    }
                    None => lost.push((*id).clone()),
                }
            }
        }
        let mut slotted = Vec::with_capacity(attempts.len());
        for a in attempts {
            let Some((_, next, skipped)) = first
                .iter_mut()
                .find(|(id, _, _)| **id == a.subscription_id)
            else {
                continue;
            };
            let slot = *next % ATTEMPTS_KEPT;
            *next += 1;
            if *skipped > 0 {
                *skipped -= 1;
                continue;
            }
            slotted.push((slot, a));
        }
        Ok(slotted)
    }

    /// The newest `limit` attempts of a subscription, newest first.
    pub async fn list_attempts(&self, id: &ObjectId, limit: usize) -> Result<Vec<Attempt>> {
        let mut select = Sql::new(
            self.dialect(),
            "SELECT position, attempt, at, job_id, type, status_code, error, micros, outcome FROM deliveries WHERE subscription_id = ",
        );
        select.bind(text(id.as_str()));
        select
            .push(" ORDER BY at DESC, position DESC, attempt DESC LIMIT ")
            .bind(int(limit as i64));
        let rows = query::<DB>(&select.text, select.params)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get(8)?;
                Ok(Attempt {
                    subscription_id: id.clone(),
                    position: row.try_get::<i64, _>(0)?.max(0) as u64,
                    attempt: row.try_get::<i64, _>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                    at: row.try_get(2)?,
                    job_id: row.try_get(3)?,
                    type_: row.try_get(4)?,
                    status_code: row.try_get::<i64, _>(5)?.clamp(0, 999) as u16,
                    error: row.try_get(6)?,
                    micros: row.try_get::<i64, _>(7)?.max(0) as u64,
                    outcome: Outcome::parse(&outcome)
                        .ok_or_else(|| unreadable("outcome", &outcome))?,
                })
            })
            .collect()
    }
}
