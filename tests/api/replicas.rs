//! Many replicas on one Postgres: two real servers share a database, and every guarantee holds
//! across them. These tests need Postgres (`JOBTRACK_TEST_POSTGRES`, provisioned by
//! `scripts/test.sh`), whichever backend the rest of the pass uses.

use std::time::Duration;

use jobtrack::pb;
use jobtrack::pb::JobEventType as Ev;
use tonic::Code;

use crate::helpers::*;
use crate::watch::{Ledger, kind, next, next_change, watch_job, watch_jobs};

/// Two servers on one fresh Postgres database.
async fn two_replicas() -> (TestApp, TestApp) {
    let server = postgres_server().expect(
        "the replica tests need Postgres: set JOBTRACK_TEST_POSTGRES (scripts/test.sh does)",
    );
    let url = fresh_postgres_database(&server).await;
    let a = spawn_app_on(&url, |_| {}).await;
    let b = spawn_app_on(&url, |_| {}).await;
    (a, b)
}

async fn set_resources(
    app: &TestApp,
    id: &str,
    n: i64,
    etag: &str,
) -> Result<pb::Job, tonic::Status> {
    app.client()
        .update_job(pb::UpdateJobRequest {
            job: Some(pb::Job {
                id: id.to_string(),
                num_backup_resources: Some(n),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["num_backup_resources".into()],
            }),
            append_activity: vec![],
            etag: etag.to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_change_written_on_one_replica_reaches_watchers_on_the_other_in_order() {
    let (a, b) = two_replicas().await;
    let mut all = watch_jobs(&b, "", "").await;
    assert_eq!(kind(&next(&mut all).await.expect("synced")), Ev::Synced);
    let created = a.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut one = watch_job(&b, &created.id, "")
        .await
        .expect("watch_job on B");
    assert_eq!(kind(&next_change(&mut one).await), Ev::Snapshot);
    assert_eq!(kind(&next_change(&mut one).await), Ev::Synced);
    let first = next_change(&mut all).await;
    assert_eq!(kind(&first), Ev::Created);
    for n in 1..=50 {
        // Alternate the replica that writes: the order is the fleet's, not a replica's.
        let writer = if n % 2 == 0 { &a } else { &b };
        set_resources(writer, &created.id, n, "")
            .await
            .expect("update");
    }
    for n in 1..=50 {
        for stream in [&mut all, &mut one] {
            let event = next_change(stream).await;
            assert_eq!(kind(&event), Ev::Updated);
            assert_eq!(event.job.expect("job").num_backup_resources, Some(n));
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_resume_token_from_replica_a_resumes_on_replica_b_without_loss() {
    let (a, b) = two_replicas().await;
    let created = a.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut ledger = Ledger::default();
    let mut on_a = watch_jobs(&a, "", "").await;
    loop {
        let event = next_change(&mut on_a).await;
        if kind(&event) == Ev::Synced {
            break;
        }
        ledger.see(&event);
    }
    let mut token = String::new();
    for n in 1..=20 {
        set_resources(&a, &created.id, n, "").await.expect("update");
    }
    for _ in 0..10 {
        let event = next_change(&mut on_a).await;
        ledger.see(&event);
        token = event.resume_token;
    }
    drop(on_a);
    for n in 21..=40 {
        set_resources(&b, &created.id, n, "").await.expect("update");
    }
    // Replica B continues exactly where A's stream stopped.
    let mut on_b = watch_jobs(&b, "", &token).await;
    while ledger.updates() < 40 {
        let event = next_change(&mut on_b).await;
        assert_ne!(
            kind(&event),
            Ev::Snapshot,
            "a resume within the history needs no snapshot"
        );
        if kind(&event) != Ev::Synced {
            ledger.see(&event);
        }
    }
    assert_eq!(ledger.updates(), 40);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn of_two_replicas_writing_with_the_same_etag_exactly_one_wins() {
    let (a, b) = two_replicas().await;
    let created = a.create(job(JobType::K8sCopy, JobState::Running)).await;
    for round in 0..30 {
        let current = b.get(&created.id).await;
        let (x, y) = tokio::join!(
            set_resources(&a, &created.id, 2 * round, &current.etag),
            set_resources(&b, &created.id, 2 * round + 1, &current.etag)
        );
        let mut codes = [code(x), code(y)];
        codes.sort_by_key(|c| *c as i32);
        assert_eq!(codes, [Code::Ok, Code::Aborted], "round {round}");
        assert_eq!(a.get(&created.id).await.revision, current.revision + 1);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn cancel_racing_a_progress_report_ends_cancelled_and_the_late_report_is_refused() {
    let (a, b) = two_replicas().await;
    for round in 0..20 {
        let created = a.create(job(JobType::K8sCopy, JobState::Running)).await;
        let mut cancel_client = a.client();
        let id = created.id.clone();
        let report = pvc(
            &created.id,
            &format!("data-{round}"),
            OpType::K8sCopy,
            PvcState::Active,
        );
        let (cancelled, reported) = tokio::join!(
            cancel_client.cancel_job(pb::CancelJobRequest { id }),
            b.report(report)
        );
        let cancelled = cancelled.expect("cancel succeeds").into_inner();
        assert_eq!(cancelled.state, JobState::Cancelled as i32);
        let stored = b.get(&created.id).await;
        assert_eq!(stored.state, JobState::Cancelled as i32, "round {round}");
        match reported {
            // The report landed first: the cancel saw its aggregate.
            Ok(_) => assert!(stored.kube_copy_progress.is_some(), "round {round}"),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "round {round}");
                assert!(stored.kube_copy_progress.is_none());
            }
        }
        // Any report after the cancel is refused, on either replica.
        let late = pvc(&created.id, "late", OpType::K8sCopy, PvcState::Active);
        assert_eq!(code(a.report(late.clone()).await), Code::FailedPrecondition);
        assert_eq!(code(b.report(late).await), Code::FailedPrecondition);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_replicas_creating_the_same_client_supplied_id_get_one_already_exists() {
    let (a, b) = two_replicas().await;
    for round in 0..30 {
        let id = format!("5f431ef6a7690b60975f{round:04x}");
        let make = || pb::Job {
            id: id.clone(),
            ..job(JobType::K8sSnap, JobState::Pending)
        };
        let mut ca = a.client();
        let mut cb = b.client();
        let (x, y) = tokio::join!(
            ca.create_job(pb::CreateJobRequest { job: Some(make()) }),
            cb.create_job(pb::CreateJobRequest { job: Some(make()) })
        );
        let mut codes = [code(x), code(y)];
        codes.sort_by_key(|c| *c as i32);
        assert_eq!(codes, [Code::Ok, Code::AlreadyExists], "round {round}");
        assert_eq!(a.get(&id).await.revision, 1);
    }
    a.stop().await;
    b.stop().await;
}

/// A transaction that commits after a later one (here: its COMMIT waits on a lock held by the
/// test) still gets its change delivered, exactly once, after the one that committed first; no
/// position is skipped or given twice.
#[tokio::test]
async fn a_write_that_commits_out_of_order_is_still_delivered_exactly_once() {
    use sqlx::Connection;
    let (a, b) = two_replicas().await;
    let slow = a.create(job(JobType::K8sCopy, JobState::Running)).await;
    let fast = a.create(job(JobType::K8sCopy, JobState::Running)).await;
    // The slow job's change-log entries make COMMIT wait for advisory lock 4242.
    let mut admin = sqlx::PgConnection::connect(&a.database)
        .await
        .expect("connect");
    sqlx::query(
        "CREATE FUNCTION test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$",
    )
    .execute(&mut admin)
    .await
    .expect("function");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE CONSTRAINT TRIGGER test_hold_commit AFTER INSERT ON changes \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.job_id = '{}') \
         EXECUTE FUNCTION test_hold_commit()",
        slow.id
    )))
    .execute(&mut admin)
    .await
    .expect("trigger");
    let mut holder = sqlx::PgConnection::connect(&a.database)
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(4242)")
        .execute(&mut holder)
        .await
        .expect("lock");

    let mut stream = watch_jobs(&b, "", "").await;
    let mut ledger = Ledger::default();
    loop {
        let event = next_change(&mut stream).await;
        if kind(&event) == Ev::Synced {
            break;
        }
        ledger.see(&event);
    }
    // The slow write inserts its entry first, then waits in COMMIT.
    let slow_write = {
        let client_app = a.client();
        let id = slow.id.clone();
        tokio::spawn(async move {
            let mut client = client_app;
            client
                .update_job(pb::UpdateJobRequest {
                    job: Some(pb::Job {
                        id,
                        message: Some("slow".into()),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["message".into()],
                    }),
                    append_activity: vec![],
                    etag: String::new(),
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!slow_write.is_finished(), "the slow write waits in COMMIT");
    for n in 1..=5 {
        set_resources(&b, &fast.id, n, "")
            .await
            .expect("fast update");
    }
    for _ in 1..=5 {
        let event = next_change(&mut stream).await;
        assert_eq!(event.job.as_ref().expect("job").id, fast.id);
        ledger.see(&event);
    }
    // Let the slow one commit: it arrives now, once, after the later ones.
    sqlx::query("COMMIT")
        .execute(&mut holder)
        .await
        .expect("unlock");
    slow_write
        .await
        .expect("task")
        .expect("the slow write succeeds");
    let event = next_change(&mut stream).await;
    assert_eq!(kind(&event), Ev::Updated);
    assert_eq!(event.job.as_ref().expect("job").id, slow.id);
    ledger.see(&event);
    // Its token resumes after everything: nothing is delivered twice.
    let mut resumed = watch_jobs(&a, "", &event.resume_token).await;
    assert_eq!(kind(&next_change(&mut resumed).await), Ev::Synced);
    set_resources(&a, &fast.id, 6, "").await.expect("update");
    let last = next_change(&mut resumed).await;
    assert_eq!(last.job.expect("job").num_backup_resources, Some(6));
    a.stop().await;
    b.stop().await;
}
