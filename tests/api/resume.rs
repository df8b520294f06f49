//! Every event's token is a resume point (spec section 6, guarantee 4): resuming with the token
//! of a SNAPSHOT, of a snapshot's PVC_UPDATED, of SYNCED, of a HEARTBEAT or of any change gives
//! exactly what follows that event, once each, in order. Inside a snapshot, what follows is the
//! rest of the snapshot: first the changes, since the token, of the records the client has, then
//! the records it does not have yet (as they are now), then SYNCED.

use std::time::Duration;

use jobtrack::pb;
use jobtrack::pb::JobEventType as Ev;
use tonic::Code;

use crate::helpers::*;
use crate::watch::{Ledger, kind, next, next_change, watch_job, watch_jobs};

/// One event as a client tells it apart: its type, and the job's name or message, the PVC's
/// name and bytes transferred, or the job's `num_backup_resources`.
fn describe(event: &pb::JobEvent) -> String {
    let job = event.job.as_ref();
    let version = job
        .and_then(|j| j.num_backup_resources)
        .map_or("-".to_string(), |n| n.to_string());
    match kind(event) {
        Ev::Synced => "SYNCED".into(),
        Ev::Heartbeat => "HEARTBEAT".into(),
        Ev::PvcUpdated => {
            let pvc = event
                .pvc
                .as_ref()
                .expect("a PVC_UPDATED carries its record");
            let bytes = pvc.stats.as_ref().and_then(|s| s.transferred_size);
            format!("PVC {} {}", pvc.name, bytes.unwrap_or(0))
        }
        other => {
            let job = job.expect("a job");
            let label = job
                .message
                .clone()
                .or_else(|| job.name.clone())
                .unwrap_or_default();
            let name = other.as_str_name().trim_start_matches("JOB_EVENT_TYPE_");
            format!("{name} {label} {version}")
        }
    }
}

/// The events of a stream resumed from `token`, up to and including SYNCED (heartbeats left
/// out), as [`describe`] tells them.
async fn resumed_job(app: &TestApp, id: &str, token: &str) -> Vec<String> {
    let mut stream = watch_job(app, id, token).await.expect("resume");
    until_synced(&mut stream).await
}

async fn until_synced(stream: &mut tonic::Streaming<pb::JobEvent>) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let event = next_change(stream).await;
        seen.push(describe(&event));
        if kind(&event) == Ev::Synced {
            return seen;
        }
    }
}

fn report(job: &str, name: &str, transferred: i64) -> pb::PvcProgress {
    let mut record = pvc(job, name, OpType::K8sCopy, PvcState::Active);
    record.stats = Some(stats(transferred, 1));
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_job_resumed_from_each_event_token_gets_exactly_what_follows_it() {
    let app = spawn_app_with(|c| c.heartbeat = Duration::from_millis(300)).await;
    let mut created = job(JobType::K8sCopy, JobState::Running);
    created.message = Some("m0".into());
    let created = app.create(created).await;
    for name in ["a", "b", "c"] {
        app.report(report(&created.id, name, 1))
            .await
            .expect("report");
    }
    // The first stream: the snapshot (the job, its PVC records in id order), SYNCED, a beat.
    let mut stream = watch_job(&app, &created.id, "").await.expect("watch");
    let mut first = Vec::new();
    for _ in 0..6 {
        first.push(next(&mut stream).await.expect("an event"));
    }
    drop(stream);
    let told: Vec<String> = first.iter().map(describe).collect();
    assert_eq!(
        told,
        [
            "SNAPSHOT m0 -",
            "PVC a 1",
            "PVC b 1",
            "PVC c 1",
            "SYNCED",
            "HEARTBEAT"
        ]
    );
    // Nothing changed yet: each token gives the rest of the snapshot, then SYNCED.
    let rest = [
        vec!["PVC a 1", "PVC b 1", "PVC c 1", "SYNCED"],
        vec!["PVC b 1", "PVC c 1", "SYNCED"],
        vec!["PVC c 1", "SYNCED"],
        vec!["SYNCED"],
        vec!["SYNCED"],
        vec!["SYNCED"],
    ];
    for (event, expected) in first.iter().zip(&rest) {
        assert_eq!(
            resumed_job(&app, &created.id, &event.resume_token).await,
            *expected,
            "resumed after {}",
            describe(event)
        );
    }
    // Three changes: the job's message, PVC b's bytes, a new PVC d.
    app.set_message(&created.id, "m1").await;
    app.report(report(&created.id, "b", 2))
        .await
        .expect("report b");
    app.report(report(&created.id, "d", 1))
        .await
        .expect("report d");
    let expected = [
        // After the SNAPSHOT: the job's change, then every record as it is now.
        vec![
            "UPDATED m1 -",
            "PVC a 1",
            "PVC b 2",
            "PVC c 1",
            "PVC d 1",
            "SYNCED",
        ],
        // After PVC a: b's change is part of b's record, sent as it is now.
        vec!["UPDATED m1 -", "PVC b 2", "PVC c 1", "PVC d 1", "SYNCED"],
        // After PVC b: the client has b, so b's change arrives as a change.
        vec!["UPDATED m1 -", "PVC b 2", "PVC c 1", "PVC d 1", "SYNCED"],
        vec!["UPDATED m1 -", "PVC b 2", "PVC d 1", "SYNCED"],
        // After SYNCED and after a heartbeat: the three changes.
        vec!["UPDATED m1 -", "PVC b 2", "PVC d 1", "SYNCED"],
        vec!["UPDATED m1 -", "PVC b 2", "PVC d 1", "SYNCED"],
    ];
    for (event, expected) in first.iter().zip(&expected) {
        assert_eq!(
            resumed_job(&app, &created.id, &event.resume_token).await,
            *expected,
            "resumed after {} with three changes since",
            describe(event)
        );
    }
    // The tokens of changes: what follows each.
    let mut stream = watch_job(&app, &created.id, &first[4].resume_token)
        .await
        .expect("resume");
    let changes: Vec<pb::JobEvent> = vec![
        next_change(&mut stream).await,
        next_change(&mut stream).await,
        next_change(&mut stream).await,
        next_change(&mut stream).await,
    ];
    drop(stream);
    let after_changes = [
        vec!["PVC b 2", "PVC d 1", "SYNCED"],
        vec!["PVC d 1", "SYNCED"],
        vec!["SYNCED"],
        vec!["SYNCED"],
    ];
    for (event, expected) in changes.iter().zip(&after_changes) {
        assert_eq!(
            resumed_job(&app, &created.id, &event.resume_token).await,
            *expected,
            "resumed after {}",
            describe(event)
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_job_resumed_inside_its_snapshot_of_a_job_that_ended_since_finishes_it_and_ends() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    app.report(report(&created.id, "a", 1))
        .await
        .expect("report");
    let mut stream = watch_job(&app, &created.id, "").await.expect("watch");
    let snapshot = next_change(&mut stream).await;
    assert_eq!(kind(&snapshot), Ev::Snapshot);
    let pvc = next_change(&mut stream).await;
    let synced = next_change(&mut stream).await;
    drop(stream);
    app.set_state(&created.id, JobState::Completed)
        .await
        .expect("complete");
    // From inside the snapshot: the change, the rest of the snapshot, SYNCED, the end.
    let mut resumed = watch_job(&app, &created.id, &snapshot.resume_token)
        .await
        .expect("resume");
    let told = until_synced(&mut resumed).await;
    assert_eq!(
        told,
        ["UPDATED kubecluster-1598234357 -", "PVC a 1", "SYNCED"]
    );
    assert!(
        next(&mut resumed).await.is_none(),
        "then the stream ends OK"
    );
    // From after the PVC record, still inside the snapshot: the change, SYNCED, the end.
    let mut resumed = watch_job(&app, &created.id, &pvc.resume_token)
        .await
        .expect("resume");
    assert_eq!(
        until_synced(&mut resumed).await,
        ["UPDATED kubecluster-1598234357 -", "SYNCED"]
    );
    assert!(
        next(&mut resumed).await.is_none(),
        "then the stream ends OK"
    );
    // From after SYNCED: the change that ends the job, then the end (as a live stream would).
    let mut resumed = watch_job(&app, &created.id, &synced.resume_token)
        .await
        .expect("resume");
    let ended = next_change(&mut resumed).await;
    assert_eq!(kind(&ended), Ev::Updated);
    assert_eq!(ended.job.expect("job").state, JobState::Completed as i32);
    assert!(next(&mut resumed).await.is_none(), "the stream ends OK");
    // From the token of the terminal event itself: nothing follows; SYNCED, then the end.
    let mut again = watch_job(&app, &created.id, &synced.resume_token)
        .await
        .expect("resume");
    let terminal = next_change(&mut again).await;
    drop(again);
    let mut resumed = watch_job(&app, &created.id, &terminal.resume_token)
        .await
        .expect("resume");
    assert_eq!(kind(&next_change(&mut resumed).await), Ev::Synced);
    assert!(next(&mut resumed).await.is_none(), "the stream ends OK");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_jobs_resumed_inside_its_paged_snapshot_continues_it() {
    let app = spawn_app_with(|c| c.watch_snapshot_page = 3).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let mut j = job(JobType::K8sCopy, JobState::Running);
        j.name = Some(format!("j{n}"));
        ids.push(app.create(j).await.id);
    }
    let mut stream = watch_jobs(&app, "", "").await;
    let first = until_synced(&mut stream).await;
    let expected: Vec<String> = (0..10)
        .map(|n| format!("SNAPSHOT j{n} -"))
        .chain(["SYNCED".to_string()])
        .collect();
    assert_eq!(first, expected);
    drop(stream);
    // Again, keeping the token of the fourth SNAPSHOT (j3).
    let mut stream = watch_jobs(&app, "", "").await;
    let mut token = String::new();
    for _ in 0..4 {
        token = next_change(&mut stream).await.resume_token;
    }
    drop(stream);
    let set = |id: &str, n: i64| {
        let id = id.to_string();
        let app = &app;
        async move {
            app.update(
                &id,
                pb::Job {
                    num_backup_resources: Some(n),
                    ..Default::default()
                },
                &["num_backup_resources"],
                &[],
            )
            .await
            .expect("update");
        }
    };
    let delete = |id: &str| {
        let mut client = app.client();
        let id = id.to_string();
        async move {
            client
                .delete_job(pb::DeleteJobRequest {
                    id,
                    etag: String::new(),
                })
                .await
                .expect("delete");
        }
    };
    set(&ids[1], 1).await;
    set(&ids[7], 1).await;
    delete(&ids[2]).await;
    delete(&ids[8]).await;
    let mut j10 = job(JobType::K8sCopy, JobState::Running);
    j10.name = Some("j10".into());
    app.create(j10).await;
    // The client has j0..j3: their changes, then the jobs after j3 as they are now.
    let mut resumed = watch_jobs(&app, "", &token).await;
    let mut told = Vec::new();
    let mut token_after_j5 = String::new();
    loop {
        let event = next_change(&mut resumed).await;
        told.push(describe(&event));
        if describe(&event) == "SNAPSHOT j5 -" {
            token_after_j5 = event.resume_token.clone();
        }
        if kind(&event) == Ev::Synced {
            break;
        }
    }
    assert_eq!(
        told,
        [
            "UPDATED j1 1",
            "DELETED j2 -",
            "SNAPSHOT j4 -",
            "SNAPSHOT j5 -",
            "SNAPSHOT j6 -",
            "SNAPSHOT j7 1",
            "SNAPSHOT j9 -",
            "SNAPSHOT j10 -",
            "SYNCED"
        ]
    );
    drop(resumed);
    // From inside the resumed snapshot (after j5): j4's change, the jobs after j5 as they are.
    set(&ids[4], 1).await;
    set(&ids[9], 1).await;
    let mut resumed = watch_jobs(&app, "", &token_after_j5).await;
    assert_eq!(
        until_synced(&mut resumed).await,
        [
            "UPDATED j4 1",
            "SNAPSHOT j6 -",
            "SNAPSHOT j7 1",
            "SNAPSHOT j9 1",
            "SNAPSHOT j10 -",
            "SYNCED"
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_token_resumes_only_the_watch_it_came_from() {
    let app = spawn_app().await;
    let a = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let b = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut stream = watch_job(&app, &a.id, "").await.expect("watch");
    let of_a = next_change(&mut stream).await.resume_token;
    drop(stream);
    let mut stream = watch_jobs(&app, r#"{"state":"RUNNING"}"#, "").await;
    let of_running = next_change(&mut stream).await.resume_token;
    drop(stream);
    let refused = [
        watch_job(&app, &b.id, &of_a).await.map(|_| ()),
        watch_job(&app, &a.id, &of_running).await.map(|_| ()),
        app.client()
            .watch_jobs(pb::WatchJobsRequest {
                r#where: r#"{"state":"PENDING"}"#.into(),
                resume_token: of_running.clone(),
            })
            .await
            .map(|_| ()),
        app.client()
            .watch_jobs(pb::WatchJobsRequest {
                r#where: String::new(),
                resume_token: of_a.clone(),
            })
            .await
            .map(|_| ()),
    ];
    for (n, result) in refused.into_iter().enumerate() {
        let status = result.expect_err("a token of another watch's snapshot");
        assert_eq!(status.code(), Code::InvalidArgument, "case {n}: {status:?}");
        assert!(
            status.message().contains("snapshot of another watch"),
            "case {n}: {}",
            status.message()
        );
    }
    // With its own watch, the token resumes.
    let mut resumed = watch_job(&app, &a.id, &of_a).await.expect("resume");
    assert_eq!(kind(&next_change(&mut resumed).await), Ev::Synced);
    app.stop().await;
}

/// Every job of the store, by paging through ListJobs.
async fn all_jobs(app: &TestApp) -> Vec<pb::Job> {
    let mut client = app.client();
    let (mut jobs, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return jobs;
        }
        page_token = page.next_page_token;
    }
}

/// Creates `n` jobs over eight concurrent clients; answers their ids.
async fn create_many(app: &TestApp, n: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut client = app.client();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in (w..n).step_by(8) {
                let request = pb::CreateJobRequest {
                    job: Some(job(JobType::K8sSnap, JobState::Running)),
                };
                let created = within("a create", client.create_job(request))
                    .await
                    .expect("create")
                    .into_inner();
                ids.push(created.id);
            }
            ids
        }));
    }
    // Each create has its deadline; all of them take as long as they take.
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.expect("creator"));
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_keeps_dropping_inside_a_20000_job_snapshot_under_writers_reaches_synced_and_misses_nothing()
 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let app = spawn_app_with(|c| {
        c.watch_snapshot_page = 500;
        c.heartbeat = Duration::from_millis(500);
    })
    .await;
    let ids = Arc::new(create_many(&app, 20_000).await);
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let (mut client, ids, stop, acked) =
            (app.client(), ids.clone(), stop.clone(), acked.clone());
        let mut rng = Rng(seed("20,000-job snapshot writers") ^ w);
        writers.push(tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = ids[rng.below(ids.len() as u64) as usize].clone();
                let outcome = match n % 20 {
                    0 => client
                        .create_job(pb::CreateJobRequest {
                            job: Some(job(JobType::Restore, JobState::Pending)),
                        })
                        .await
                        .map(|_| ()),
                    // A job deleted twice, or updated after its delete: NOT_FOUND, as it should.
                    7 => client
                        .delete_job(pb::DeleteJobRequest {
                            id,
                            etag: String::new(),
                        })
                        .await
                        .map(|_| ()),
                    _ => client.update_job(step_request(&id, n)).await.map(|_| ()),
                };
                match outcome {
                    Ok(()) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) if status.code() == Code::NotFound => {}
                    Err(status) => panic!("write {n}: {status:?}"),
                }
            }
        }));
    }
    let mut ledger = Ledger::default();
    let mut rng = Rng(seed("20,000-job snapshot reader"));
    let (mut token, mut in_snapshot) = (String::new(), true);
    let (mut streams, mut snapshot_events) = (0u64, 0u64);
    let mut synced_at_acks = None;
    // Read in streams of a few hundred events, each resumed from the last token, until the
    // snapshot is done and 500 more writes have been acknowledged after it.
    while synced_at_acks.is_none_or(|at| acked.load(Ordering::Relaxed) < at + 500) {
        let mut stream = within("the watch call", watch_jobs(&app, "", &token)).await;
        streams += 1;
        for _ in 0..100 + rng.below(300) {
            let event = next(&mut stream).await.expect("an open stream");
            match kind(&event) {
                Ev::Heartbeat => {}
                Ev::Synced => {
                    in_snapshot = false;
                    synced_at_acks.get_or_insert(acked.load(Ordering::Relaxed));
                }
                Ev::Snapshot => {
                    assert!(in_snapshot, "a SNAPSHOT after SYNCED");
                    snapshot_events += 1;
                    ledger.see(&event);
                }
                _ => ledger.see(&event),
            }
            token = event.resume_token;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        within("a writer", writer).await.expect("writer");
    }
    // Every job as it is now: the watcher reaches each final revision, resuming as before.
    let all = all_jobs(&app).await;
    let target: std::collections::HashMap<String, u64> =
        all.iter().map(|j| (j.id.clone(), j.revision)).collect();
    within("the watcher reaching every job's final revision", async {
        while *ledger.live() != target {
            let mut stream = watch_jobs(&app, "", &token).await;
            streams += 1;
            for _ in 0..100 + rng.below(300) {
                let event = next_change(&mut stream).await;
                if kind(&event) != Ev::Synced {
                    ledger.see(&event);
                }
                token = event.resume_token;
                if *ledger.live() == target {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        snapshot_events >= 20_000 - 1_000,
        "the snapshot showed the jobs: {snapshot_events}"
    );
    assert!(
        streams >= 50,
        "the client dropped and resumed inside the snapshot: {streams} streams"
    );
    app.stop().await;
}

/// A client that goes away mid-snapshot has its watch dropped wherever it is, in the middle of
/// a snapshot page's read transaction included: the store must not hand that connection, still
/// inside its transaction, to the next reader.
#[tokio::test(flavor = "multi_thread")]
async fn watches_dropped_mid_snapshot_leave_every_later_read_working() {
    let app = spawn_app_with(|c| c.watch_snapshot_page = 1).await;
    for n in 0..6 {
        let mut j = job(JobType::K8sCopy, JobState::Running);
        j.name = Some(format!("j{n}"));
        app.create(j).await;
    }
    for _ in 0..30 {
        let mut stream = watch_jobs(&app, "", "").await;
        next_change(&mut stream).await;
        next_change(&mut stream).await;
        drop(stream);
    }
    let listed = app
        .client()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("a list after the dropped watches")
        .into_inner();
    assert_eq!(listed.total, 6);
    let mut stream = watch_jobs(&app, "", "").await;
    let told = until_synced(&mut stream).await;
    assert_eq!(told.len(), 7, "six snapshots and SYNCED: {told:?}");
}

/// SYNCED means caught up with the present: a stream resumed right after a write was
/// acknowledged sends that write before SYNCED, on every backend (on Postgres this replica's
/// feed follows the log a moment behind the acknowledgement), for WatchJobs and WatchJob.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_resumed_right_after_an_acknowledged_write_sends_it_before_synced() {
    let app = spawn_app().await;
    let mut stream = watch_jobs(&app, "", "").await;
    let synced = next_change(&mut stream).await;
    assert_eq!(kind(&synced), Ev::Synced);
    drop(stream);
    let mut token = synced.resume_token;
    for round in 0..40 {
        let created = app.create(job(JobType::Restore, JobState::Running)).await;
        let mut stream = watch_jobs(&app, "", &token).await;
        assert_eq!(
            until_synced(&mut stream).await,
            ["CREATED kubecluster-1598234357 -", "SYNCED"],
            "round {round}: the acknowledged create comes before SYNCED"
        );
        drop(stream);
        // The job's own stream, from the token of the create's event.
        let mut stream = watch_jobs(&app, "", &token).await;
        token = next_change(&mut stream).await.resume_token;
        drop(stream);

        let message = format!("round {round}");
        app.client()
            .update_job(pb::UpdateJobRequest {
                job: Some(pb::Job {
                    id: created.id.clone(),
                    message: Some(message.clone()),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["message".into()],
                }),
                ..Default::default()
            })
            .await
            .expect("update_job");
        assert_eq!(
            resumed_job(&app, &created.id, &token).await,
            [format!("UPDATED {message} -"), "SYNCED".to_string()],
            "round {round}: the acknowledged update comes before SYNCED"
        );
        // Next round resumes WatchJobs after the update.
        let mut stream = watch_jobs(&app, "", &token).await;
        let update = next_change(&mut stream).await;
        assert_eq!(kind(&update), Ev::Updated, "round {round}");
        token = update.resume_token;
    }
    app.stop().await;
}
