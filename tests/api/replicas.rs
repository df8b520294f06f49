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
    two_replicas_with(|_| {}).await
}

/// Two replicas on one fresh Postgres database, both with settings changed by `configure`.
async fn two_replicas_with(
    configure: impl Fn(&mut jobtrack::config::Config),
) -> (TestApp, TestApp) {
    let server = postgres_server().expect(
        "the replica tests need Postgres: set JOBTRACK_TEST_POSTGRES (scripts/test.sh does)",
    );
    let url = fresh_postgres_database(&server).await;
    let a = spawn_app_on(&url, &configure).await;
    let b = spawn_app_on(&url, &configure).await;
    (a, b)
}

/// UpdateJob of `num_backup_resources` alone (no activity line), at `etag` when not empty.
fn resources_update(id: &str, n: i64, etag: &str) -> pb::UpdateJobRequest {
    pb::UpdateJobRequest {
        append_activity: vec![],
        etag: etag.to_string(),
        ..step_request(id, n)
    }
}

async fn set_resources(
    app: &TestApp,
    id: &str,
    n: i64,
    etag: &str,
) -> Result<pb::Job, tonic::Status> {
    app.client()
        .update_job(resources_update(id, n, etag))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
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

/// A read through either replica reflects every write acknowledged before it, wherever it was
/// written: GetJob answers from the replica's own copy only once it has caught up with the
/// fleet, so alternating writes and reads never see an older revision, nor a deleted job.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_through_one_replica_is_read_at_once_through_either() {
    let (a, b) = two_replicas().await;
    let created = a.create(job(JobType::K8sCopy, JobState::Running)).await;
    let get = |app: &TestApp, id: String| {
        let mut client = app.client();
        async move {
            client
                .get_job(pb::GetJobRequest { id })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    for n in 1..=100 {
        let (writer, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let written = set_resources(writer, &created.id, n, "")
            .await
            .expect("update");
        // The other replica first, as soon as the write is acknowledged.
        for (name, app) in [
            ("the other replica", other),
            ("the writing replica", writer),
        ] {
            let read = get(app, created.id.clone()).await.expect("get");
            assert_eq!(read.num_backup_resources, Some(n), "{name}, write {n}");
            assert_eq!(read.etag, written.etag, "{name}, write {n}");
        }
    }
    // A replica started after those writes has not seen the job change: it reads the row, keeps
    // it, and writes through another replica still reach its next reads.
    let c = spawn_app_on(&a.database, |_| {}).await;
    for n in 101..=150 {
        let before = get(&c, created.id.clone()).await.expect("get");
        assert_eq!(
            before.num_backup_resources,
            Some(n - 1),
            "the late replica, before {n}"
        );
        let written = set_resources(&a, &created.id, n, "").await.expect("update");
        let read = get(&c, created.id.clone()).await.expect("get");
        assert_eq!(
            read.num_backup_resources,
            Some(n),
            "the late replica, write {n}"
        );
        assert_eq!(read.etag, written.etag);
    }
    b.client()
        .delete_job(pb::DeleteJobRequest {
            id: created.id.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete");
    for app in [&a, &b, &c] {
        let status = get(app, created.id.clone()).await.expect_err("deleted");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
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

/// A token from inside a paged WatchJobs snapshot on replica A continues that snapshot on
/// replica B: the jobs not yet sent, each once, and the changes of those already sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_inside_a_snapshot_on_replica_a_continues_it_on_replica_b() {
    let (a, b) = two_replicas_with(|c| c.watch_snapshot_page = 2).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(a.create(job(JobType::K8sCopy, JobState::Running)).await.id);
    }
    let mut on_a = watch_jobs(&a, "", "").await;
    let mut ledger = Ledger::default();
    let mut token = String::new();
    for _ in 0..3 {
        let event = next_change(&mut on_a).await;
        assert_eq!(kind(&event), Ev::Snapshot);
        ledger.see(&event);
        token = event.resume_token;
    }
    drop(on_a);
    // Through B: a job the client has, and one it has not yet.
    set_resources(&b, &ids[0], 1, "").await.expect("update");
    set_resources(&b, &ids[4], 1, "").await.expect("update");
    let mut on_b = watch_jobs(&b, "", &token).await;
    let mut rest = Vec::new();
    loop {
        let event = next_change(&mut on_b).await;
        if kind(&event) == Ev::Synced {
            break;
        }
        ledger.see(&event);
        rest.push((kind(&event), event.job.expect("job").id));
    }
    let expected = vec![
        (Ev::Updated, ids[0].clone()),
        (Ev::Snapshot, ids[3].clone()),
        (Ev::Snapshot, ids[4].clone()),
        (Ev::Snapshot, ids[5].clone()),
    ];
    assert_eq!(rest, expected);
    assert_eq!(ledger.revision_of(&ids[4]), Some(2), "job 4 as it is now");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
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

/// Group commit: many creates at once on two replicas, half with ids both replicas use. A batch
/// that meets the other replica's insert of one id falls back to one transaction per operation:
/// exactly one create of each shared id wins everywhere, and every other create in the batch
/// still succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn batched_creates_racing_on_shared_ids_lose_only_the_shared_ones() {
    let (a, b) = two_replicas().await;
    let shared: Vec<String> = (0..40)
        .map(|i| format!("5f431ef6a7690b60976f{i:04x}"))
        .collect();
    let creates = |app: &TestApp| {
        let mut calls = Vec::new();
        for (i, id) in shared.iter().enumerate() {
            for own in [Some(id.clone()), None] {
                let mut client = app.client();
                let job = pb::Job {
                    id: own.clone().unwrap_or_default(),
                    name: Some(format!("create {i}")),
                    ..job(JobType::K8sSnap, JobState::Pending)
                };
                calls.push(tokio::spawn(async move {
                    let result = client
                        .create_job(pb::CreateJobRequest { job: Some(job) })
                        .await;
                    (own, code(result))
                }));
            }
        }
        calls
    };
    let (calls_a, calls_b) = (creates(&a), creates(&b));
    let mut wins = std::collections::HashMap::<String, usize>::new();
    for call in calls_a.into_iter().chain(calls_b) {
        let (own, code) = call.await.expect("a create");
        match own {
            Some(id) => {
                assert!(
                    matches!(code, Code::Ok | Code::AlreadyExists),
                    "{id}: {code:?}"
                );
                *wins.entry(id).or_default() += usize::from(code == Code::Ok);
            }
            None => assert_eq!(code, Code::Ok, "a create with a fresh id"),
        }
    }
    for id in &shared {
        assert_eq!(wins.get(id), Some(&1), "{id}: exactly one create wins");
        assert_eq!(a.get(id).await.revision, 1);
    }
    let total = a
        .client()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .total;
    assert_eq!(
        total,
        40 + 2 * 40,
        "the shared ids once, every fresh create"
    );
    a.stop().await;
    b.stop().await;
}

/// A write that stalls in its COMMIT (here: the commit waits on a lock held by the test) holds
/// back the positions of every later write in the fleet, which commit after it: positions follow
/// commit order, so nothing can be numbered past a write that is not yet visible. When it
/// commits, it is delivered first, then the later ones, each exactly once; no position is skipped
/// or given twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_stalls_in_its_commit_holds_back_later_positions_and_loses_nothing() {
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
    // The slow write is in its COMMIT when Postgres shows it waiting for the advisory lock.
    let locks = sqlx::PgPool::connect(&a.database).await.expect("connect");
    eventually("the slow write to wait in COMMIT", || {
        let locks = locks.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            )
            .fetch_one(&locks)
            .await
            .expect("pg_locks");
            (waiting > 0).then_some(())
        }
    })
    .await;
    assert!(!slow_write.is_finished(), "the slow write waits in COMMIT");
    // Later writes, through the other replica, wait for the fleet's numbering lock that the
    // stalled commit holds.
    let fast_writes = {
        let client_app = b.client();
        let id = fast.id.clone();
        tokio::spawn(async move {
            let mut client = client_app;
            for n in 1..=5 {
                client.update_job(resources_update(&id, n, "")).await?;
            }
            Ok::<(), tonic::Status>(())
        })
    };
    eventually("a later write to wait for the numbering lock", || {
        let locks = locks.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks \
                 WHERE relation = 'change_sequencer'::regclass AND NOT granted",
            )
            .fetch_one(&locks)
            .await
            .expect("pg_locks");
            (waiting > 0).then_some(())
        }
    })
    .await;
    assert!(!fast_writes.is_finished(), "the later writes wait");
    // Let the slow one commit: it arrives first, once, then the later ones in order.
    sqlx::query("COMMIT")
        .execute(&mut holder)
        .await
        .expect("unlock");
    slow_write
        .await
        .expect("task")
        .expect("the slow write succeeds");
    fast_writes
        .await
        .expect("task")
        .expect("the later writes succeed");
    let event = next_change(&mut stream).await;
    assert_eq!(kind(&event), Ev::Updated);
    assert_eq!(event.job.as_ref().expect("job").id, slow.id);
    ledger.see(&event);
    let mut event = event;
    for n in 1..=5 {
        event = next_change(&mut stream).await;
        let job = event.job.as_ref().expect("job");
        assert_eq!(job.id, fast.id);
        assert_eq!(job.num_backup_resources, Some(n));
        ledger.see(&event);
    }
    // Its token resumes after everything: nothing is delivered twice.
    let mut resumed = watch_jobs(&a, "", &event.resume_token).await;
    assert_eq!(kind(&next_change(&mut resumed).await), Ev::Synced);
    set_resources(&a, &fast.id, 6, "").await.expect("update");
    let last = next_change(&mut resumed).await;
    assert_eq!(last.job.expect("job").num_backup_resources, Some(6));
    a.stop().await;
    b.stop().await;
}

/// A Postgres server of this test's own, so it can be stopped and started under load without
/// touching the server the other tests share.
struct PgCluster {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PgCluster {
    fn pg(&self, program: &str, args: &[&str]) -> std::process::Output {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        command
            .args(args)
            .output()
            .expect("a Postgres program runs")
    }

    fn create() -> PgCluster {
        let bin = std::env::var("JOBTRACK_TEST_PG_BIN")
            .map(std::path::PathBuf::from)
            .expect("JOBTRACK_TEST_PG_BIN (scripts/test.sh sets it)");
        let dir = tempfile::tempdir().expect("a temporary directory");
        if is_root() {
            let chown = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(chown.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = PgCluster { bin, dir, port };
        let data = cluster.data();
        let out = cluster.pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let out = self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

async fn health(app: &TestApp) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    match client
        .check(tonic_health::pb::HealthCheckRequest {
            service: "jobtrack.v1.JobService".into(),
        })
        .await
    {
        Ok(reply) => reply.into_inner().status,
        Err(_) => -1,
    }
}

async fn wait_for_health(app: &TestApp, status: tonic_health::ServingStatus, what: &str) {
    eventually(&format!("health to become {what}"), || async {
        (health(app).await == status as i32).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_and_restarted_under_load_loses_no_acknowledged_write() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let cluster = PgCluster::create();
    let url = fresh_postgres_database(&cluster.url()).await;
    let app = spawn_app_on(&url, |c| {
        c.health_check_interval = Duration::from_millis(200);
        c.heartbeat = Duration::from_millis(500);
    })
    .await;
    wait_for_health(&app, tonic_health::ServingStatus::Serving, "SERVING").await;

    // Writers: create a job, then update it; remember the highest acknowledged revision and
    // every status code seen.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let codes: Arc<Mutex<HashMap<i32, u64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (acked, codes, stop) = (acked.clone(), codes.clone(), stop.clone());
        let mut client = app.client();
        writers.push(tokio::spawn(async move {
            let mut current: Option<pb::Job> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let result = match &current {
                    None => {
                        client
                            .create_job(pb::CreateJobRequest {
                                job: Some(job(JobType::K8sCopy, JobState::Running)),
                            })
                            .await
                    }
                    Some(j) => {
                        client
                            .update_job(pb::UpdateJobRequest {
                                job: Some(pb::Job {
                                    id: j.id.clone(),
                                    num_backup_resources: Some(j.revision as i64),
                                    ..Default::default()
                                }),
                                update_mask: Some(prost_types::FieldMask {
                                    paths: vec!["num_backup_resources".into()],
                                }),
                                append_activity: vec![],
                                etag: String::new(),
                            })
                            .await
                    }
                };
                let code = match result {
                    Ok(reply) => {
                        let j = reply.into_inner();
                        acked.lock().expect("lock").insert(j.id.clone(), j.revision);
                        current = (j.revision < 20).then_some(j);
                        0
                    }
                    Err(status) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        status.code() as i32
                    }
                };
                *codes.lock().expect("lock").entry(code).or_default() += 1;
            }
        }));
    }
    // A watcher that lives through the outage, resuming with its last token when its stream
    // ends, and checks every change arrives once and in order.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let watcher = {
        let (ledger, stop) = (ledger.clone(), stop.clone());
        let channel = app.client();
        tokio::spawn(async move {
            let mut client = channel;
            let mut token = String::new();
            loop {
                let opened = client
                    .watch_jobs(pb::WatchJobsRequest {
                        r#where: String::new(),
                        resume_token: token.clone(),
                    })
                    .await;
                let Ok(stream) = opened else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let mut stream = stream.into_inner();
                while let Ok(Some(event)) = within("an event", stream.message()).await {
                    if !matches!(kind(&event), Ev::Heartbeat | Ev::Synced) {
                        ledger.lock().expect("lock").see(&event);
                    }
                    token = event.resume_token.clone();
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        && kind(&event) == Ev::Heartbeat
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // Stop Postgres mid-load: once writes have been acknowledged and the watcher is following.
    eventually("20 acknowledged jobs", || {
        let n = acked.lock().expect("lock").len();
        async move { (n >= 20).then_some(()) }
    })
    .await;
    eventually("the watcher to follow", || {
        let seen = ledger.lock().expect("lock").updates();
        async move { (seen > 0).then_some(()) }
    })
    .await;
    cluster.stop();
    wait_for_health(&app, tonic_health::ServingStatus::NotServing, "NOT_SERVING").await;
    // During the outage every call is UNAVAILABLE.
    let during = app
        .client()
        .get_job(pb::GetJobRequest {
            id: "5f431ef6a7690b60975f6664".into(),
        })
        .await;
    assert_eq!(code(during), Code::Unavailable);
    // The outage lasts until a writer has heard UNAVAILABLE (a write waits for the pool's
    // connection timeout first; a short outage may pass unseen, as batched writes wait it out).
    eventually("a writer to hear UNAVAILABLE", || {
        let seen = codes
            .lock()
            .expect("lock")
            .contains_key(&(Code::Unavailable as i32));
        async move { seen.then_some(()) }
    })
    .await;
    cluster.start();
    wait_for_health(&app, tonic_health::ServingStatus::Serving, "SERVING again").await;
    let acked_before_recovery = acked.lock().expect("lock").len();
    eventually("writes acknowledged after the restart", || {
        let n = acked.lock().expect("lock").len();
        async move { (n > acked_before_recovery + 10).then_some(()) }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        within("a writer", writer).await.expect("writer");
    }
    let codes = codes.lock().expect("lock").clone();
    let acked = acked.lock().expect("lock").clone();
    for code in codes.keys() {
        assert!(
            *code == 0 || *code == Code::Unavailable as i32,
            "only OK and UNAVAILABLE, never {:?}: {codes:?}",
            Code::from_i32(*code)
        );
    }
    assert!(
        codes.contains_key(&(Code::Unavailable as i32)),
        "the outage was seen: {codes:?}"
    );
    assert!(
        acked.len() > acked_before_recovery,
        "writes resumed after the restart"
    );
    // Every acknowledged write is there.
    for (id, revision) in &acked {
        let stored = app.get(id).await;
        assert!(
            stored.revision >= *revision,
            "job {id}: revision {} < acknowledged {revision}",
            stored.revision
        );
    }
    // The watcher that lived through the outage has every change of every job (it stops at
    // the first heartbeat after the writers, i.e. once it is quiet).
    within("the watcher to catch up", watcher)
        .await
        .expect("watcher");
    for id in acked.keys() {
        let stored = app.get(id).await;
        let seen = ledger.lock().expect("lock").revision_of(id);
        assert_eq!(seen, Some(stored.revision), "job {id}");
    }
    app.stop().await;
}

/// The value of the counter `name` on `app`'s `/metrics`.
async fn counter(app: &TestApp, name: &str) -> u64 {
    let page = crate::http::get(app.addr, "/metrics").await.text();
    page.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not on /metrics: {page}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_sweeping_one_database_mark_fail_and_purge_each_job_once() {
    use std::collections::HashMap;
    let policy = crate::upkeep::with_upkeep(
        None,
        Some(Duration::from_secs(1)),
        Some(Duration::from_secs(2)),
    );
    let (a, b) = two_replicas_with(policy).await;
    let mut all = watch_jobs(&a, "", "").await;
    let mut running = HashMap::new();
    let mut expiring = HashMap::new();
    for i in 0..16 {
        let app = if i % 2 == 0 { &a } else { &b };
        let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
        running.insert(created.id, (0, 0)); // (marks seen, FAILED seen)
        let finished = pb::Job {
            ttl_seconds_after_finished: Some(0),
            ..job(JobType::K8sCopy, JobState::Completed)
        };
        expiring.insert(app.create(finished).await.id, 0); // DELETED seen
    }
    let settled = |running: &HashMap<String, (u32, u32)>, expiring: &HashMap<String, u32>| {
        running.values().all(|&(_, failed)| failed > 0) && expiring.values().all(|&d| d > 0)
    };
    while !settled(&running, &expiring) {
        let event = next_change(&mut all).await;
        let Some(job) = event.job.clone() else {
            continue;
        };
        match kind(&event) {
            Ev::Updated if running.contains_key(&job.id) => {
                // Nothing else writes these jobs: every UPDATED of a RUNNING one is a mark.
                let seen = running.get_mut(&job.id).expect("a running job");
                if job.state == JobState::Running as i32 {
                    assert!(job.stalled_since.is_some(), "{job:?}");
                    seen.0 += 1;
                }
                if job.state == JobState::Failed as i32 {
                    seen.1 += 1;
                }
            }
            Ev::Deleted => *expiring.get_mut(&job.id).expect("an expiring job") += 1,
            _ => {}
        }
    }
    for (id, &(marks, failed)) in &running {
        assert_eq!(
            (marks, failed),
            (1, 1),
            "job {id}: marked stalled, then FAILED, once"
        );
    }
    for name in [
        "jobtrack_jobs_stalled_total",
        "jobtrack_jobs_abandoned_total",
        "jobtrack_jobs_purged_total",
    ] {
        let (on_a, on_b) = (counter(&a, name).await, counter(&b, name).await);
        assert_eq!(on_a + on_b, 16, "{name}: {on_a} on A, {on_b} on B");
    }
}

/// A webhook subscription on a fleet: while both replicas live, one of them delivers it (no
/// change twice, whichever replica wrote it); when that one stops, the other carries on from
/// its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_is_delivered_by_one_replica_at_a_time_and_handed_over() {
    use crate::webhooks::{Receiver, subscribe};
    let server = postgres_server().expect("the replica tests need Postgres");
    let url = fresh_postgres_database(&server).await;
    let allow = |c: &mut jobtrack::config::Config| c.webhooks.allow_private = true;
    let a = spawn_app_on(&url, allow).await;
    let receiver = Receiver::start().await;
    let sub = subscribe(&a, &receiver.url(), "", pb::SubscriptionEvents::All).await;
    let created = a.create(job(JobType::K8sCopy, JobState::Running)).await;
    receiver
        .wait_for(1, "the first delivery, from the only replica")
        .await;
    let b = spawn_app_on(&url, allow).await;
    for n in 0..10 {
        let through = if n % 2 == 0 { &a } else { &b };
        through.set_message(&created.id, &format!("step {n}")).await;
    }
    receiver
        .wait_for(11, "every change, through either replica")
        .await;
    a.stop().await;
    for n in 10..15 {
        b.set_message(&created.id, &format!("step {n}")).await;
    }
    let got = receiver
        .wait_for(16, "the changes after the hand-over")
        .await;
    let positions: Vec<u64> = got
        .iter()
        .map(|r| r.id.rsplit('_').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[1] == w[0] + 1),
        "each change once, in commit order: {positions:?}"
    );
    for r in &got {
        r.verify(&sub.secret);
    }
    assert_eq!(
        got.last().unwrap().json()["data"]["job"]["message"],
        "step 14"
    );
    b.stop().await;
}
