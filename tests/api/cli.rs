//! The client CLI as a person runs it: `jobtrack watch` survives a server restart without loss.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;

use jobtrack::pb;

use crate::durability::start_binary_on;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn jobtrack_watch_reconnects_after_a_server_restart_and_misses_nothing() {
    let db = test_db().await;
    let listen = free_listen_address();
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

    let (mut watcher, lines) =
        spawn_jobtrack(&["watch", &job.id, "--server", &format!("http://{listen}")]);
    let mut output = Vec::new();
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
    wait_for_line(&lines, &mut output, "SYNCED");
    for n in 0..5 {
        step(&mut client, n).await;
    }
    // Kill the server once the watcher has shown the last of these.
    wait_for_line(&lines, &mut output, "\"step 4\"");
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    let (mut server, addr) = start_binary_on(&db.url, &listen);
    let mut client = connect(addr).await;
    for n in 5..10 {
        step(&mut client, n).await;
    }
    client
        .update_job(complete_request(&job.id))
        .await
        .expect("complete");

    // The watcher ends by itself once it has seen the terminal event: its output closes.
    while let Ok(line) = lines.recv_timeout(WAIT) {
        output.push(line);
    }
    let pid = watcher.id();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(watcher.wait()));
    let status = exit.recv_timeout(WAIT).unwrap_or_else(|_| {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!(
            "jobtrack watch did not finish after the job ended:\n{}",
            output.join("\n")
        )
    });
    let status = status.expect("the watcher's exit status");
    let output = output.join("\n");
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

/// `jobtrack ARGS…` with its output piped: the child and its stdout's lines as they come.
fn spawn_jobtrack(args: &[&str]) -> (std::process::Child, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("jobtrack starts");
    let lines = read_lines(child.stdout.take().expect("stdout"));
    (child, lines)
}

/// Completes job `id`, appending the activity line "done".
fn complete_request(id: &str) -> pb::UpdateJobRequest {
    pb::UpdateJobRequest {
        job: Some(pb::Job {
            id: id.to_string(),
            state: JobState::Completed as i32,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["state".into()],
        }),
        append_activity: vec!["done".into()],
        etag: String::new(),
    }
}

/// A loopback address with a free port, for a server that is restarted on the same address.
pub fn free_listen_address() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = probe.local_addr().expect("addr").port();
    format!("127.0.0.1:{port}")
}

/// The lines a child writes to `out`, as they come.
pub fn read_lines(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Collects lines into `output` until one contains `needle`; fails after [`WAIT`].
pub fn wait_for_line(lines: &Receiver<String>, output: &mut Vec<String>, needle: &str) {
    loop {
        let line = lines.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "no line with {needle:?} after {WAIT:?} in:\n{}",
                output.join("\n")
            )
        });
        let found = line.contains(needle);
        output.push(line);
        if found {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jobtrack_watch_and_jobs_list_show_a_stalled_job() {
    let app = spawn_app_with(crate::upkeep::with_upkeep(
        None,
        Some(std::time::Duration::from_secs(1)),
        None,
    ))
    .await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let server = format!("http://{}", app.addr);
    let (mut watcher, lines) = spawn_jobtrack(&["watch", &created.id, "--server", &server]);
    let mut output = Vec::new();
    wait_for_line(&lines, &mut output, "STALLED");
    let last = output.last().expect("a line");
    assert!(
        last.contains("UPDATED") && last.contains("no report since"),
        "{last}"
    );
    watcher.kill().expect("stop the watcher");
    watcher.wait().expect("reaped");

    let listed = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args(["jobs", "list", "--server", &server, "--where"])
        .arg(r#"{"stalled_since": {"$exists": true}}"#)
        .output()
        .expect("jobtrack jobs list runs");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{text}");
    assert!(
        text.contains(&created.id) && text.contains("STALLED"),
        "{text}"
    );
    assert!(text.contains("1 of 1 jobs"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobtrack_simulate_carries_on_across_a_server_restart() {
    let db = test_db().await;
    let listen = free_listen_address();
    let (mut server, _) = start_binary_on(&db.url, &listen);
    let mut simulate = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
        .args([
            "simulate",
            "--speed",
            "8",
            "--server",
            &format!("http://{listen}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("jobtrack simulate starts");
    let lines = read_lines(simulate.stdout.take().expect("stdout"));
    let mut output = Vec::new();
    // Every job created, and one already finished: the jobs are mid-way. Then a restart.
    for _ in 0..6 {
        wait_for_line(&lines, &mut output, "simulate: created");
    }
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    let (mut server, addr) = start_binary_on(&db.url, &listen);
    wait_for_line(&lines, &mut output, "simulate: done");
    let pid = simulate.id();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(simulate.wait()));
    let status = exit.recv_timeout(WAIT).unwrap_or_else(|_| {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!("jobtrack simulate did not finish:\n{}", output.join("\n"))
    });
    assert!(
        status.expect("exit status").success(),
        "{}",
        output.join("\n")
    );
    // No job is left RUNNING: each ended, and the executor that dies is given up on.
    let client = connect(addr).await;
    eventually("every simulated job to end", || {
        let mut client = client.clone();
        async move {
            let page = client
                .list_jobs(pb::ListJobsRequest {
                    r#where: r#"{"state": {"$in": ["PENDING", "RUNNING"]}}"#.into(),
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            (page.total == 0).then_some(())
        }
    })
    .await;
    let all = client
        .clone()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.total, 6, "{:?}", all.jobs);
    server.kill().expect("stop");
    server.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobtrack_watch_output_json_prints_each_event_as_one_json_object() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let (mut watcher, lines) = spawn_jobtrack(&[
        "watch",
        &created.id,
        "--output",
        "json",
        "--server",
        &format!("http://{}", app.addr),
    ]);
    let mut output = Vec::new();
    wait_for_line(&lines, &mut output, "JOB_EVENT_TYPE_SYNCED");
    app.client()
        .update_job(complete_request(&created.id))
        .await
        .expect("complete");
    // The stream ends with the job, and so does the output.
    while let Ok(line) = lines.recv_timeout(WAIT) {
        output.push(line);
    }
    assert!(watcher.wait().expect("exit status").success());
    let events: Vec<serde_json::Value> = output
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "JOB_EVENT_TYPE_SNAPSHOT",
            "JOB_EVENT_TYPE_SYNCED",
            "JOB_EVENT_TYPE_UPDATED"
        ],
        "{output:?}"
    );
    assert_eq!(events[0]["job"]["id"], created.id.as_str());
    assert_eq!(events[0]["job"]["state"], "JOB_STATE_RUNNING");
    assert_eq!(events[2]["job"]["state"], "JOB_STATE_COMPLETED");
    assert_eq!(
        events[2]["job"]["activity"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        "done"
    );
    assert!(
        events
            .iter()
            .all(|e| e["resume_token"].as_str().is_some_and(|t| !t.is_empty()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_commands_end_quietly_when_their_reader_goes_away() {
    let app = spawn_app().await;
    app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let server = format!("http://{}", app.addr);
    for args in [
        vec!["jobs", "list", "--server", &server],
        vec!["watch", "--output", "lines", "--server", &server],
        vec!["watch", "--output", "json", "--server", &server],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("jobtrack starts");
        // The reader goes away before the command has anything to print (`| head -0`).
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("the command ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_refuses_pvcs_outside_the_live_view() {
    let app = spawn_app().await;
    for output in ["lines", "json"] {
        let run = Command::new(env!("CARGO_BIN_EXE_jobtrack"))
            .args(["watch", "--pvcs", "--output", output, "--server"])
            .arg(format!("http://{}", app.addr))
            .output()
            .expect("jobtrack runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{output}: {stderr}");
        assert!(
            stderr.contains("--pvcs adds PVC lines to the live view"),
            "{stderr}"
        );
        assert!(run.stdout.is_empty(), "{output}: nothing printed");
    }
}
