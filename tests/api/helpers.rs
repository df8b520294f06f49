//! `spawn_app()`, small builders, and the habits every test follows: a wait waits *for an
//! event* and fails with a message after [`WAIT`] ([`within`], [`eventually`]), never a sleep
//! that hopes; a randomized test prints its seed ([`seed`]) so a failure can be replayed.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use jobtrack::config::Config;
use jobtrack::pb;
use jobtrack::pb::job_service_client::JobServiceClient;
use jobtrack::server::Server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;

pub use pb::{JobState, JobType, OpType, PvcState};

/// How long any one wait in a test may take before the test fails: far longer than anything
/// takes on a loaded 2-core machine, far shorter than a CI run's limit. A bound, not a target:
/// how fast things are is measured by benchmarks, never by tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// The output of `future`, or a failure naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Asks `check` until it answers `Some` (briefly pausing between tries), for a condition no
/// event tells the client about; fails naming `what` after [`WAIT`].
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    within(what, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The seed of a randomized test: `JOBTRACK_TEST_SEED` to replay one, else a fresh one. Printed
/// either way (the test harness shows it when the test fails).
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("JOBTRACK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32) | 1
        });
    println!("{test}: seed {seed} (replay with JOBTRACK_TEST_SEED={seed})");
    seed
}

/// A small xorshift generator for randomized tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: JobServiceClient<Channel>,
    /// The database the server runs on (another replica may share it).
    pub database: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _db: Option<TestDb>,
}

/// A fresh, empty database for one test. The suite runs once per backend (`scripts/test.sh`):
/// by default on a SQLite file in a temporary directory; with `JOBTRACK_TEST_POSTGRES` set to a
/// server's URL, on a new database created on that server.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// The Postgres server the suite may use, if any.
pub fn postgres_server() -> Option<String> {
    std::env::var("JOBTRACK_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
}

pub async fn test_db() -> TestDb {
    match postgres_server() {
        Some(server) => TestDb {
            url: fresh_postgres_database(&server).await,
            _dir: None,
        },
        None => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("jobtrack.db");
            TestDb {
                url: path.to_str().expect("utf-8 path").to_string(),
                _dir: Some(dir),
            }
        }
    }
}

/// Creates a database with a unique name on `server` and returns its URL.
pub async fn fresh_postgres_database(server: &str) -> String {
    use sqlx::Connection;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("jt_{}_{n}_{nanos}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .expect("the test Postgres server answers (JOBTRACK_TEST_POSTGRES)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let _ = conn.close().await;
    match server.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && base.len() > "postgres://".len() => {
            format!("{base}/{name}")
        }
        _ => format!("{server}/{name}"),
    }
}

/// Starts the real server on a free port with a fresh SQLite file, and connects a client.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = test_db().await;
    let mut app = spawn_app_on(&db.url, configure).await;
    app._db = Some(db);
    app
}

/// Starts a server on an existing database: another replica of a fleet, or a restart.
pub async fn spawn_app_on(database: &str, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::for_database(database);
    configure(&mut config);
    let tls = config.tls_cert.is_some();
    let app = Server::build(config).await.expect("the server starts");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // A TLS server does not speak plain HTTP/2: its tests make their own clients.
    let client = if tls {
        JobServiceClient::new(
            Channel::from_shared(format!("http://{addr}"))
                .expect("a valid URL")
                .connect_lazy(),
        )
    } else {
        connect(addr).await
    };
    TestApp {
        addr,
        client,
        database: database.to_string(),
        stop: Some(stop),
        server: Some(server),
        _db: None,
    }
}

pub async fn connect(addr: SocketAddr) -> JobServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URL")
        .connect()
        .await
        .expect("the client connects");
    JobServiceClient::new(channel)
}

impl TestApp {
    /// Keeps a database alive as long as the app (for apps started with [`spawn_app_on`]).
    pub fn keep(&mut self, db: TestDb) {
        self._db = Some(db);
    }

    pub fn client(&self) -> JobServiceClient<Channel> {
        self.client.clone()
    }

    /// Stops the server the way SIGTERM does and waits until it has closed the database.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task ends")
                .expect("the server stops cleanly");
        }
    }

    pub async fn create(&self, job: pb::Job) -> pb::Job {
        self.client()
            .create_job(pb::CreateJobRequest { job: Some(job) })
            .await
            .expect("create_job")
            .into_inner()
    }

    pub async fn get(&self, id: &str) -> pb::Job {
        self.client()
            .get_job(pb::GetJobRequest { id: id.to_string() })
            .await
            .expect("get_job")
            .into_inner()
    }

    pub async fn get_status(&self, id: &str) -> Code {
        match self
            .client()
            .get_job(pb::GetJobRequest { id: id.to_string() })
            .await
        {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }

    pub async fn set_state(&self, id: &str, state: JobState) -> Result<pb::Job, tonic::Status> {
        self.update(
            id,
            pb::Job {
                state: state as i32,
                ..Default::default()
            },
            &["state"],
            &[],
        )
        .await
    }

    pub async fn update(
        &self,
        id: &str,
        mut job: pb::Job,
        mask: &[&str],
        append: &[&str],
    ) -> Result<pb::Job, tonic::Status> {
        job.id = id.to_string();
        self.client()
            .update_job(pb::UpdateJobRequest {
                job: Some(job),
                update_mask: Some(prost_types::FieldMask {
                    paths: mask.iter().map(|p| p.to_string()).collect(),
                }),
                append_activity: append.iter().map(|a| a.to_string()).collect(),
                etag: String::new(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Sets the job's message (nothing else), as an executor reports what it is doing.
    pub async fn set_message(&self, id: &str, message: &str) -> pb::Job {
        let job = pb::Job {
            message: Some(message.into()),
            ..Default::default()
        };
        self.update(id, job, &["message"], &[])
            .await
            .expect("update the message")
    }

    pub async fn report(&self, pvc: pb::PvcProgress) -> Result<pb::PvcProgress, tonic::Status> {
        self.client()
            .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(pvc) })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn list(
        &self,
        where_: &str,
        sort: &str,
    ) -> Result<pb::ListJobsResponse, tonic::Status> {
        self.client()
            .list_jobs(pb::ListJobsRequest {
                r#where: where_.to_string(),
                sort: sort.to_string(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn count_jobs(&self) -> i64 {
        self.list("", "").await.expect("list_jobs").total
    }
}

pub fn job(job_type: JobType, state: JobState) -> pb::Job {
    pb::Job {
        name: Some("kubecluster-1598234357".into()),
        r#type: job_type as i32,
        state: state as i32,
        ..Default::default()
    }
}

pub fn pvc(job_id: &str, name: &str, op_type: OpType, state: PvcState) -> pb::PvcProgress {
    pb::PvcProgress {
        job_id: job_id.to_string(),
        namespace: "default".into(),
        name: name.to_string(),
        op_type: op_type as i32,
        state: state as i32,
        ..Default::default()
    }
}

pub fn stats(transferred: i64, files: i64) -> pb::TransferStats {
    pb::TransferStats {
        estimated_size: Some(1000),
        estimated_number_of_files: Some(10),
        io_size: Some(transferred),
        io_number_of_files: Some(files),
        transferred_size: Some(transferred),
        transferred_number_of_files: Some(files),
    }
}

pub fn code<T>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// An UpdateJob that sets num_backup_resources to `n` and appends the activity line "step n".
pub fn step_request(id: &str, n: i64) -> pb::UpdateJobRequest {
    pb::UpdateJobRequest {
        job: Some(pb::Job {
            id: id.to_string(),
            num_backup_resources: Some(n),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["num_backup_resources".into()],
        }),
        append_activity: vec![format!("step {n}")],
        etag: String::new(),
    }
}
