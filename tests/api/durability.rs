//! Every acknowledged write survives a SIGKILL of the server under load.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobtrack::pb;

use crate::helpers::*;

/// Starts the real binary on a free port and reads the address it logs.
fn start_binary(db: &str) -> (Child, SocketAddr) {
    start_binary_on(db, "127.0.0.1:0")
}

/// Starts the real binary listening on `listen` and reads the address it logs.
pub fn start_binary_on(db: &str, listen: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args(["serve", "--listen", listen, "--database"])
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
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs its address");
    (child, addr.parse().expect("a socket address"))
}

#[tokio::test]
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
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    for w in writers {
        w.await.expect("writer ends after the kill");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 50,
        "the load ran ({} jobs acknowledged)",
        acked.len()
    );

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

#[tokio::test]
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
