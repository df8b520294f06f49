//! The client CLI as a person runs it: `jobtrack watch` survives a server restart without loss.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use jobtrack::pb;

use crate::durability::start_binary_on;
use crate::helpers::*;

#[tokio::test]
async fn jobtrack_watch_reconnects_after_a_server_restart_and_misses_nothing() {
    let db = test_db().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let (mut server, addr) = start_binary_on(&db.url, &listen);
    let app_client = connect(addr).await;
    let mut client = app_client.clone();
    let job = client
        .create_job(pb::CreateJobRequest {
            job: Some(job(JobType::K8sCopy, JobState::Running)),
        })
        .await
        .expect("create")
        .into_inner();

    let mut watcher = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args(["watch", &job.id, "--server", &format!("http://{listen}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("jobtrack watch starts");
    let step = |client: &mut jobtrack::pb::job_service_client::JobServiceClient<
        tonic::transport::Channel,
    >,
                n: i64| {
        let mut client = client.clone();
        let id = job.id.clone();
        async move {
            client
                .update_job(step_request(&id, n))
                .await
                .expect("update");
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..5 {
        step(&mut client, n).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    let (mut server, addr) = start_binary_on(&db.url, &listen);
    let mut client = connect(addr).await;
    for n in 5..10 {
        step(&mut client, n).await;
    }
    client
        .update_job(pb::UpdateJobRequest {
            job: Some(pb::Job {
                id: job.id.clone(),
                state: JobState::Completed as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
            append_activity: vec!["done".into()],
            etag: String::new(),
        })
        .await
        .expect("complete");

    // The watcher ends by itself once it has seen the terminal event.
    let mut finished = None;
    for _ in 0..300 {
        if let Some(status) = watcher.try_wait().expect("poll") {
            finished = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = finished.unwrap_or_else(|| {
        let _ = watcher.kill();
        panic!("jobtrack watch did not finish after the job ended")
    });
    let mut output = String::new();
    watcher
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut output)
        .expect("read");
    assert!(status.success(), "{output}");
    for n in 0..10 {
        let needle = format!("\"step {n}\"");
        assert_eq!(
            output.matches(&needle).count(),
            1,
            "step {n} shown exactly once in:\n{output}"
        );
    }
    assert!(output.contains("COMPLETED"), "{output}");
    assert!(output.contains("the job has ended"), "{output}");
    server.kill().expect("stop");
    server.wait().expect("reaped");
}
