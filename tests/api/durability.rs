//! Every acknowledged write is durable: it survives a SIGKILL of the server under load, and on
//! SQLite it is on stable storage before it is acknowledged (the WAL is fsynced for it).
//!
//! What these prove and what they cannot: SIGKILL loses the process but not the page cache, so
//! the first test shows that acknowledged writes were committed (and that a restart recovers
//! them), not that they reached the disk. The second counts the fsyncs of the WAL under `strace`
//! while writes are acknowledged one at a time: a missing sync (`synchronous=NORMAL` or `OFF`,
//! a commit path that skips it) fails it. Neither can show that an fsync happens *before* the
//! acknowledgement it belongs to, nor that the disk honours it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use jobtrack::pb;

use crate::helpers::*;

/// The `strace` that counts a server's fsyncs (Debian's package; scripts/test.sh installs it).
const STRACE: &str = "/usr/bin/strace";

/// Starts the real binary on a free port and reads the address it logs.
fn start_binary(db: &str) -> (Child, SocketAddr) {
    start_binary_on(db, "127.0.0.1:0")
}

/// Starts the real binary listening on `listen` and reads the address it logs.
pub fn start_binary_on(db: &str, listen: &str) -> (Child, SocketAddr) {
    start(Command::new(env!("CARGO_BIN_EXE_jobtrack")), db, listen)
}

/// Starts the real binary on a free port with `serve`'s further arguments `args`.
pub fn start_binary_with(db: &str, args: &[&str]) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jobtrack"));
    command.args(["serve"]).args(args);
    start_serving(command, db, "127.0.0.1:0")
}

/// Runs `command` (the binary, or something that runs it) with `serve`'s arguments and reads
/// the address the server logs.
fn start(mut command: Command, db: &str, listen: &str) -> (Child, SocketAddr) {
    command.arg("serve");
    start_serving(command, db, listen)
}

/// Runs `command`, which already names `serve`, on `db` and `listen`; reads the address the
/// server logs.
fn start_serving(mut command: Command, db: &str, listen: &str) -> (Child, SocketAddr) {
    let mut child = command
        .args(["--listen", listen, "--database"])
        .arg(db)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split("local_addr=").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(addr);
                sent = true;
            }
            // Keep draining so the server never blocks on a full pipe.
        }
    });
    let addr = rx.recv_timeout(WAIT).expect("the server logs its address");
    (child, addr.parse().expect("a socket address"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_a_sigkill_under_load() {
    let db = test_db().await;
    let (mut child, addr) = start_binary(&db.url);

    // id -> highest acknowledged revision.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let acked = acked.clone();
        let mut client = connect(addr).await;
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let job = pb::Job {
                    name: Some(format!("w{w}-{i}")),
                    ..job(JobType::K8sCopy, JobState::Running)
                };
                let Ok(created) = client
                    .create_job(pb::CreateJobRequest { job: Some(job) })
                    .await
                else {
                    return;
                };
                let created = created.into_inner();
                acked
                    .lock()
                    .expect("lock")
                    .insert(created.id.clone(), created.revision);
                for n in 0..3 {
                    let update = step_request(&created.id, n);
                    let Ok(updated) = client.update_job(update).await else {
                        return;
                    };
                    acked
                        .lock()
                        .expect("lock")
                        .insert(created.id.clone(), updated.into_inner().revision);
                }
            }
        }));
    }
    // Kill it mid-load: once 100 jobs are acknowledged, with the writers still writing.
    eventually("100 acknowledged jobs", || {
        let n = acked.lock().expect("lock").len();
        async move { (n >= 100).then_some(()) }
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    for w in writers {
        within("a writer to notice the kill", w)
            .await
            .expect("writer ends after the kill");
    }
    let acked = acked.lock().expect("lock").clone();

    let (mut child, addr) = start_binary(&db.url);
    let mut client = connect(addr).await;
    for (id, revision) in &acked {
        let job = client
            .get_job(pb::GetJobRequest { id: id.clone() })
            .await
            .expect("an acknowledged job exists")
            .into_inner();
        assert!(
            job.revision >= *revision,
            "job {id}: revision {} < acknowledged {revision}",
            job.revision
        );
        assert_eq!(
            job.activity.len() as u64,
            job.revision - 1,
            "activity and revision were committed together"
        );
    }
    child.kill().expect("stop");
    child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_calls_finish_and_exits_zero_with_the_data_kept() {
    let db = test_db().await;
    let (mut child, addr) = start_binary(&db.url);
    let mut client = connect(addr).await;
    let created = client
        .create_job(pb::CreateJobRequest {
            job: Some(job(JobType::K8sSnap, JobState::Running)),
        })
        .await
        .expect("create")
        .into_inner();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("the server exits");
    assert_eq!(exit.code(), Some(0), "a clean shutdown exits 0");

    let (mut child, addr) = start_binary(&db.url);
    let mut client = connect(addr).await;
    let again = client
        .get_job(pb::GetJobRequest {
            id: created.id.clone(),
        })
        .await
        .expect("kept")
        .into_inner();
    assert_eq!(again, created);
    child.kill().expect("stop");
    child.wait().expect("reaped");
}

/// Acknowledged writes, one at a time so that each is a commit of its own, each fsync the WAL
/// on SQLite before it is acknowledged: at least one WAL fsync per acknowledged write, counted
/// by `strace` on the real binary, in the one thread that commits. (Each thread is traced to a
/// file of its own: the checkpoints beside the writer fsync too, and counted together their
/// syncs could stand in for a missing one of the writer's.)
#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_on_sqlite_fsyncs_the_wal() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("jobtrack.db");
    let traces = dir.path().join("traces");
    std::fs::create_dir(&traces).expect("a folder for the traces");
    let mut command = Command::new(STRACE);
    command
        .args(["-ff", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(traces.join("fsyncs"))
        .arg(env!("CARGO_BIN_EXE_jobtrack"));
    let (mut child, addr) = start(command, db.to_str().expect("utf-8"), "127.0.0.1:0");
    // The WAL fsyncs of the thread that has made the most of them: the writer's connection.
    let wal_syncs = || {
        std::fs::read_dir(&traces)
            .expect("strace writes its logs")
            .map(|entry| {
                let path = entry.expect("a trace").path();
                std::fs::read_to_string(path)
                    .expect("a readable trace")
                    .lines()
                    .filter(|l| l.contains("jobtrack.db-wal>") && l.ends_with("= 0"))
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    let mut client = connect(addr).await;
    let first = client
        .create_job(pb::CreateJobRequest {
            job: Some(job(JobType::K8sCopy, JobState::Running)),
        })
        .await
        .expect("create")
        .into_inner();
    let before = wal_syncs();
    let writes = 40;
    for n in 0..writes {
        let update = step_request(&first.id, n);
        within("an update", client.update_job(update))
            .await
            .expect("update");
    }
    let synced = wal_syncs() - before;
    // SIGKILL of strace would detach the server and leave it running: stop the server itself
    // first (its main thread's trace has the lowest id), then strace.
    let server_pid = std::fs::read_dir(&traces)
        .expect("strace writes its logs")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.rsplit('.').next()?.parse::<u32>().ok()
        })
        .min()
        .expect("a trace of the server's main thread");
    let killed = Command::new("kill")
        .args(["-9", &server_pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success(), "the server {server_pid} is stopped");
    child.wait().expect("strace ends with its tracee");
    assert!(
        synced >= writes as usize,
        "{writes} acknowledged writes, each its own commit, but only {synced} fsyncs of the WAL"
    );
}
