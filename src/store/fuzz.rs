//! The SQL built from every `where` and `sort` the query language accepts runs on a real SQLite
//! (the migrated schema, `$regex` through its regexp function, a few rows to read), for jobs and
//! PVC records, with and without a keyset page token: whatever parses must execute, and every
//! row it returns must decode, without a database error.

use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Sqlite, SqliteConnection};
use tokio::runtime::Runtime;

use crate::domain::query::tests::fuzz::{
    Verdict, answer, filter_kind, fuzz, order_kind, rounds, text,
};
use crate::domain::query::{ListQuery, PageAt};
use crate::domain::{Job, JobFields, JobState, NewJob, ObjectId, PvcProgress, PvcReport};
use crate::error::{Error, Result};
use crate::store::db::query;
use crate::store::schema::{Stored, decode, params};
use crate::store::sql::{Dialect, page, snapshot_page};

/// A migrated in-memory database holding one job and one of its PVC records.
fn database(runtime: &Runtime) -> (SqliteConnection, Job, PvcProgress) {
    let options = SqliteConnectOptions::from_str("sqlite::memory:")
        .expect("options")
        .with_regexp();
    runtime.block_on(async {
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .expect("SQLite");
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .expect("migrations");
        let job = NewJob {
            id: Some(ObjectId::generate()),
            fields: JobFields {
                name: Some("prod-eu-1".into()),
                start_time: Some(1_598_234_357),
                ..Default::default()
            },
            state: Some(JobState::Running),
            activity: vec!["started".into()],
        }
        .into_job(1_598_234_357_000_000)
        .expect("a job");
        let report = PvcReport {
            job_id: job.id.clone(),
            namespace: "ns".into(),
            name: "data".into(),
            id: None,
            state: None,
            start_time: None,
            end_time: None,
            message: Some("copying".into()),
            op_type: None,
            snapshot_progress_percentage: Some(40),
            stats: None,
        };
        let pvc = report.apply(None, 1_598_234_357_000_000).expect("a record");
        insert(&mut conn, &job).await;
        insert(&mut conn, &pvc).await;
        (conn, job, pvc)
    })
}

async fn insert<T: Stored>(conn: &mut SqliteConnection, record: &T) {
    let marks = vec!["?"; crate::store::schema::stored::<T>().count()].join(", ");
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({marks})",
        T::TABLE,
        T::columns().list
    );
    query::<Sqlite>(&sql, params(record))
        .execute(&mut *conn)
        .await
        .expect("insert");
}

/// Runs the page SQL of `query` and decodes its rows.
fn execute<T: Stored>(
    runtime: &Runtime,
    conn: &mut SqliteConnection,
    query: &ListQuery<T>,
) -> Result<()> {
    let sql = page(Dialect::Sqlite, query);
    let rows = runtime
        .block_on(crate::store::db::query::<Sqlite>(&sql.text, sql.params).fetch_all(&mut *conn))?;
    rows.iter()
        .map(decode::<T, _>)
        .collect::<Result<Vec<_>>>()?;
    Ok(())
}

/// Parses `where_`/`sort` as a list of `T`, then runs its first page and the page after
/// `record` (a keyset position) on the database. A database error is a bug.
fn list<T: Stored>(
    runtime: &Runtime,
    conn: &mut SqliteConnection,
    record: &T,
    where_: &str,
    sort: &str,
) -> Verdict {
    let first = match ListQuery::<T>::parse(where_, sort, 10, PageAt::Token(""), 1000, None) {
        Ok(query) => query,
        Err(e) => return answer(Err(e)),
    };
    let token = first.token_after(record);
    let after = ListQuery::<T>::parse(where_, sort, 10, PageAt::Token(&token), 1000, None)
        .map_err(|e| format!("its own page token was refused: {e}"))?;
    for query in [&first, &after] {
        execute(runtime, conn, query).map_err(|e| format!("the SQL failed: {e:?}"))?;
    }
    Ok(format!(
        "{} by {}",
        filter_kind(&first.filter),
        order_kind(&first.order)
    ))
}

#[test]
fn the_sql_of_every_job_where_that_parses_executes() {
    let runtime = Runtime::new().expect("runtime");
    let (mut conn, job, _) = database(&runtime);
    fuzz("where", rounds(100_000) / 5 + 1, |input| {
        let Some(where_) = text(input) else {
            return Ok("not UTF-8".into());
        };
        let verdict = list(&runtime, &mut conn, &job, where_, "-_created")?;
        // A WatchJobs snapshot page of the same filter, after the job's id.
        if let Ok(filter) = crate::domain::query::parse_where::<Job>(where_) {
            let sql = snapshot_page(Dialect::Sqlite, &filter, Some(job.id.as_str()), 5);
            runtime
                .block_on(query::<Sqlite>(&sql.text, sql.params).fetch_all(&mut conn))
                .map_err(|e| format!("the snapshot SQL failed: {:?}", Error::from(e)))?;
        }
        Ok(verdict)
    });
}

#[test]
fn the_sql_of_every_pvc_where_that_parses_executes() {
    let runtime = Runtime::new().expect("runtime");
    let (mut conn, _, pvc) = database(&runtime);
    fuzz("pvcwhere", rounds(100_000) / 5 + 1, |input| {
        let Some(where_) = text(input) else {
            return Ok("not UTF-8".into());
        };
        list(&runtime, &mut conn, &pvc, where_, "")
    });
}

#[test]
fn the_sql_of_every_sort_that_parses_executes_with_and_without_a_page_token() {
    let runtime = Runtime::new().expect("runtime");
    let (mut conn, job, _) = database(&runtime);
    fuzz("sort", rounds(100_000) / 5 + 1, |input| {
        let Some(sort) = text(input) else {
            return Ok("not UTF-8".into());
        };
        list(&runtime, &mut conn, &job, r#"{"state":"RUNNING"}"#, sort)
    });
}
