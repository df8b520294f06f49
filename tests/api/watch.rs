//! The live-update contract (spec section 6), with real tonic clients on real streams.

use std::collections::HashMap;
use std::time::Duration;

use jobtrack::pb;
use jobtrack::pb::JobEventType as Ev;
use tonic::Code;
use tonic::Streaming;

use jobtrack::watch::{ResumePoint, decode_token};

use crate::helpers::*;

pub(crate) async fn watch_job(
    app: &TestApp,
    id: &str,
    token: &str,
) -> Result<Streaming<pb::JobEvent>, tonic::Status> {
    app.client()
        .watch_job(pb::WatchJobRequest {
            id: id.into(),
            resume_token: token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub(crate) async fn watch_jobs(
    app: &TestApp,
    where_: &str,
    token: &str,
) -> Streaming<pb::JobEvent> {
    app.client()
        .watch_jobs(pb::WatchJobsRequest {
            r#where: where_.into(),
            resume_token: token.into(),
        })
        .await
        .expect("watch_jobs")
        .into_inner()
}

/// The next event, or `None` when the stream ended OK.
pub(crate) async fn next(stream: &mut Streaming<pb::JobEvent>) -> Option<pb::JobEvent> {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("an event within 20 s")
        .expect("no stream error")
}

/// The next event that is not a heartbeat.
pub(crate) async fn next_change(stream: &mut Streaming<pb::JobEvent>) -> pb::JobEvent {
    loop {
        let event = next(stream).await.expect("the stream goes on");
        if event.r#type != Ev::Heartbeat as i32 {
            return event;
        }
    }
}

pub(crate) fn kind(event: &pb::JobEvent) -> Ev {
    Ev::try_from(event.r#type).expect("a known event type")
}

#[tokio::test]
async fn watch_job_sends_the_snapshot_then_synced_then_each_change_and_ends_after_the_terminal_one()
{
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    app.report(pvc(&job.id, "a", OpType::K8sCopy, PvcState::Active))
        .await
        .expect("report");
    app.report(pvc(&job.id, "b", OpType::K8sCopy, PvcState::Pending))
        .await
        .expect("report");

    let mut stream = watch_job(&app, &job.id, "").await.expect("watch");
    let snapshot = next_change(&mut stream).await;
    assert_eq!(kind(&snapshot), Ev::Snapshot);
    assert_eq!(snapshot.job.as_ref().map(|j| j.revision), Some(3));
    let names: Vec<String> = [
        next_change(&mut stream).await,
        next_change(&mut stream).await,
    ]
    .iter()
    .map(|e| {
        assert_eq!(kind(e), Ev::PvcUpdated);
        e.pvc.as_ref().expect("the record").name.clone()
    })
    .collect();
    assert_eq!(names, vec!["a", "b"]);
    let synced = next_change(&mut stream).await;
    assert_eq!(kind(&synced), Ev::Synced);
    assert!(!synced.resume_token.is_empty());

    app.update(
        &job.id,
        pb::Job {
            message: Some("copying".into()),
            ..Default::default()
        },
        &["message"],
        &["Copying data"],
    )
    .await
    .expect("update");
    let updated = next_change(&mut stream).await;
    assert_eq!(kind(&updated), Ev::Updated);
    let updated_job = updated.job.expect("job");
    assert_eq!(updated_job.message.as_deref(), Some("copying"));
    assert_eq!(
        updated_job.activity.last().map(String::as_str),
        Some("Copying data"),
        "state and its activity line in one event"
    );

    let mut done = pvc(&job.id, "a", OpType::K8sCopy, PvcState::Completed);
    done.stats = Some(stats(10, 1));
    app.report(done).await.expect("report");
    let progress = next_change(&mut stream).await;
    assert_eq!(kind(&progress), Ev::PvcUpdated);
    assert_eq!(
        progress
            .job
            .and_then(|j| j.kube_copy_progress)
            .map(|c| c.completed_pvs),
        Some(1)
    );

    app.set_state(&job.id, JobState::Completed)
        .await
        .expect("complete");
    let last = next_change(&mut stream).await;
    assert_eq!(kind(&last), Ev::Updated);
    assert_eq!(last.job.map(|j| j.state), Some(JobState::Completed as i32));
    assert!(
        next(&mut stream).await.is_none(),
        "the stream ends OK after the terminal event"
    );
    app.stop().await;
}

#[tokio::test]
async fn watching_a_terminal_job_sends_its_snapshot_and_synced_then_ends() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sSnap, JobState::Failed)).await;
    let mut stream = watch_job(&app, &job.id, "").await.expect("watch");
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Snapshot);
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Synced);
    assert!(next(&mut stream).await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn watch_job_of_a_deleted_job_ends_after_deleted_and_unknown_or_bad_requests_are_refused() {
    let app = spawn_app().await;
    assert_eq!(
        code(watch_job(&app, "5f431ef6a7690b60975f6664", "").await),
        Code::NotFound
    );
    assert_eq!(
        code(watch_job(&app, "nope", "").await),
        Code::InvalidArgument
    );
    let job = app.create(job(JobType::K8sSnap, JobState::Running)).await;
    assert_eq!(
        code(watch_job(&app, &job.id, "garbage").await),
        Code::InvalidArgument
    );
    let future = jobtrack::watch::encode_token(ResumePoint::After(1_000_000));
    assert_eq!(
        code(watch_job(&app, &job.id, &future).await),
        Code::InvalidArgument,
        "a token from another database"
    );

    let mut stream = watch_job(&app, &job.id, "").await.expect("watch");
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Snapshot);
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Synced);
    app.client()
        .delete_job(pb::DeleteJobRequest {
            id: job.id.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete");
    let deleted = next_change(&mut stream).await;
    assert_eq!(kind(&deleted), Ev::Deleted);
    assert_eq!(
        deleted.job.map(|j| j.id),
        Some(job.id.clone()),
        "DELETED shows the job as it was last"
    );
    assert!(next(&mut stream).await.is_none());
    app.stop().await;
}

/// Records, per job, the revisions seen, and checks each arrives once and in order.
#[derive(Default)]
pub(crate) struct Ledger {
    last: HashMap<String, u64>,
}

impl Ledger {
    /// Updates reflected so far (each job is created at revision 1, each update adds one),
    /// whether they arrived as events or were already part of a snapshot.
    pub(crate) fn updates(&self) -> u64 {
        self.last.values().map(|r| r - 1).sum()
    }

    /// The last revision seen of job `id`.
    pub(crate) fn revision_of(&self, id: &str) -> Option<u64> {
        self.last.get(id).copied()
    }

    pub(crate) fn see(&mut self, event: &pb::JobEvent) {
        let job = event.job.as_ref().expect("a change carries its job");
        let previous = self.last.insert(job.id.clone(), job.revision);
        if kind(event) == Ev::Snapshot {
            // A fresh snapshot restates the job; it never goes back in time.
            assert!(
                previous.is_none_or(|p| job.revision >= p),
                "snapshot of {} went back",
                job.id
            );
            return;
        }
        match previous {
            None => assert!(
                job.revision == 1 || kind(event) == Ev::Snapshot,
                "first sight of {} at revision {}",
                job.id,
                job.revision
            ),
            Some(p) => assert_eq!(
                job.revision,
                p + 1,
                "job {}: revision {} after {p}: a change was skipped or repeated",
                job.id,
                job.revision
            ),
        }
    }
}

#[tokio::test]
async fn every_change_arrives_exactly_once_in_commit_order_under_eight_concurrent_writers() {
    let app = spawn_app().await;
    let mut stream = watch_jobs(&app, "", "").await;
    assert_eq!(
        kind(&next_change(&mut stream).await),
        Ev::Synced,
        "no jobs yet: just SYNCED"
    );
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut client = app.client();
        writers.push(tokio::spawn(async move {
            let created = client
                .create_job(pb::CreateJobRequest {
                    job: Some(job(JobType::K8sCopy, JobState::Running)),
                })
                .await
                .expect("create")
                .into_inner();
            for i in 0..60 {
                if i % 3 == 0 {
                    let mut record = pvc(
                        &created.id,
                        &format!("pvc-{}", i % 4),
                        OpType::K8sCopy,
                        PvcState::Active,
                    );
                    record.stats = Some(stats(i, i));
                    client
                        .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(record) })
                        .await
                        .expect("report");
                } else {
                    let update = pb::UpdateJobRequest {
                        job: Some(pb::Job {
                            id: created.id.clone(),
                            num_backup_resources: Some(i),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["num_backup_resources".into()],
                        }),
                        append_activity: vec![format!("writer {w} step {i}")],
                        etag: String::new(),
                    };
                    client.update_job(update).await.expect("update");
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let mut ledger = Ledger::default();
    let mut tokens = Vec::new();
    for _ in 0..8 * 61 {
        let event = next_change(&mut stream).await;
        ledger.see(&event);
        match decode_token(&event.resume_token).expect("token") {
            ResumePoint::After(p) => tokens.push(p),
            other => panic!("a live event with a snapshot token {other:?}"),
        }
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "events come in commit order"
    );
    assert_eq!(ledger.last.len(), 8);
    assert!(ledger.last.values().all(|r| *r == 61));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_drops_its_stream_at_random_points_and_resumes_sees_every_change_exactly_once()
 {
    // Heartbeats every 500 ms: a stream that only beats while the writer is done is a lost change.
    let app = spawn_app_with(|c| c.heartbeat = Duration::from_millis(500)).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            app.create(job(JobType::K8sCopy, JobState::Running))
                .await
                .id,
        );
    }
    let writer = {
        let mut client = app.client();
        let ids = ids.clone();
        tokio::spawn(async move {
            for i in 0..2000 {
                let update = pb::UpdateJobRequest {
                    job: Some(pb::Job {
                        id: ids[i % 4].clone(),
                        num_backup_resources: Some(i as i64),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["num_backup_resources".into()],
                    }),
                    ..Default::default()
                };
                if let Err(status) = client.update_job(update).await {
                    return Err(format!("update {i} failed: {status:?}"));
                }
            }
            Ok(())
        })
    };
    let mut writer = writer;
    let mut quiet_beats = 0;
    let mut ledger = Ledger::default();
    let mut token = String::new();
    let mut seen = 0;
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut reconnects = 0;
    // The first snapshot may already include some updates (the writer starts first), so the
    // test waits for the updates *reflected*, not for 2,000 events.
    while ledger.updates() < 2000 {
        let mut stream =
            tokio::time::timeout(Duration::from_secs(20), watch_jobs(&app, "", &token))
                .await
                .expect("the watch call returns within 20 s");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let take = 1 + (seed % 150) as usize;
        for _ in 0..take {
            let event = next(&mut stream).await.expect("an open stream");
            match kind(&event) {
                Ev::Snapshot => {
                    let restarted = token.is_empty()
                        || matches!(decode_token(&token), Ok(ResumePoint::InSnapshot(_)));
                    assert!(
                        restarted,
                        "a resume within the history never re-sends a snapshot"
                    );
                    ledger.see(&event);
                }
                Ev::Synced => {}
                Ev::Heartbeat => {
                    // Several beats of silence after the last acknowledged update: a change is
                    // missing (or the writer failed).
                    quiet_beats = if writer.is_finished() {
                        quiet_beats + 1
                    } else {
                        0
                    };
                    if quiet_beats >= 4 {
                        let outcome = (&mut writer).await.expect("the writer task");
                        panic!(
                            "the writer ended ({outcome:?}) but only {} of 2000 updates \
                             arrived ({seen} events); token {token}, {reconnects} reconnects",
                            ledger.updates()
                        );
                    }
                }
                _ => {
                    ledger.see(&event);
                    seen += 1;
                }
            }
            token = event.resume_token;
            if ledger.updates() >= 2000 {
                break;
            }
        }
        drop(stream);
        reconnects += 1;
    }
    tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer finishes within 60 s")
        .expect("writer")
        .expect("every update succeeds");
    assert!(
        reconnects > 10,
        "the test resumed many times ({reconnects})"
    );
    assert_eq!(ledger.updates(), 2000);
    assert!(seen >= 1900, "most updates arrived as events ({seen})");
    app.stop().await;
}

#[tokio::test]
async fn a_token_older_than_the_retained_history_gets_a_fresh_snapshot() {
    let app = spawn_app_with(|c| {
        c.history_retention = Duration::from_millis(300);
        c.history_prune_interval = Duration::from_millis(100);
    })
    .await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut stream = watch_job(&app, &job.id, "").await.expect("watch");
    next_change(&mut stream).await;
    let old_token = next_change(&mut stream).await.resume_token;
    drop(stream);
    for i in 0..5 {
        app.update(
            &job.id,
            pb::Job {
                num_backup_resources: Some(i),
                ..Default::default()
            },
            &["num_backup_resources"],
            &[],
        )
        .await
        .expect("update");
    }
    // Wait (bounded) until pruning has removed the history after the old token.
    let mut fresh = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut stream = watch_job(&app, &job.id, &old_token).await.expect("resume");
        let first = next_change(&mut stream).await;
        if kind(&first) == Ev::Snapshot {
            fresh = Some((first, stream));
            break;
        }
    }
    let (snapshot, mut stream) =
        fresh.expect("the old token eventually yields a snapshot, never an error");
    assert_eq!(snapshot.job.map(|j| j.revision), Some(6));
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Synced);
    app.stop().await;
}

#[tokio::test]
async fn watch_jobs_sees_a_job_enter_and_leave_its_filter() {
    let app = spawn_app().await;
    let mut stream = watch_jobs(&app, r#"{"state":"RUNNING"}"#, "").await;
    let pending_then_running = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Synced);
    let created = next_change(&mut stream).await;
    assert_eq!(
        (kind(&created), created.job.map(|j| j.id)),
        (Ev::Created, Some(pending_then_running.id.clone()))
    );

    let outsider = app.create(job(JobType::K8sCopy, JobState::Pending)).await;
    app.set_state(&outsider.id, JobState::Running)
        .await
        .expect("enters the filter");
    let entered = next_change(&mut stream).await;
    assert_eq!(
        kind(&entered),
        Ev::Updated,
        "a job that starts matching arrives as UPDATED"
    );
    assert_eq!(
        entered.job.as_ref().map(|j| j.id.clone()),
        Some(outsider.id.clone())
    );

    app.set_state(&outsider.id, JobState::Completed)
        .await
        .expect("leaves the filter");
    let left = next_change(&mut stream).await;
    assert_eq!(kind(&left), Ev::Updated);
    assert_eq!(
        left.job.map(|j| j.state),
        Some(JobState::Completed as i32),
        "shows the state that no longer matches"
    );

    let never = app.create(job(JobType::Restore, JobState::Pending)).await;
    app.update(
        &never.id,
        pb::Job {
            name: Some("x".into()),
            ..Default::default()
        },
        &["name"],
        &[],
    )
    .await
    .expect("update");
    app.client()
        .delete_job(pb::DeleteJobRequest {
            id: pending_then_running.id.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete");
    let deleted = next_change(&mut stream).await;
    assert_eq!(
        kind(&deleted),
        Ev::Deleted,
        "changes of jobs that never matched were not sent"
    );
    app.stop().await;
}

#[tokio::test]
async fn heartbeats_carry_the_current_resume_token_on_an_idle_stream() {
    let app = spawn_app_with(|c| c.heartbeat = Duration::from_millis(200)).await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut stream = watch_job(&app, &job.id, "").await.expect("watch");
    next(&mut stream).await;
    let synced = next(&mut stream).await.expect("synced");
    for _ in 0..3 {
        let beat = next(&mut stream).await.expect("heartbeat");
        assert_eq!(kind(&beat), Ev::Heartbeat);
        assert_eq!(beat.resume_token, synced.resume_token);
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_ends_every_stream_with_unavailable() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut streams = vec![
        watch_job(&app, &job.id, "").await.expect("watch"),
        watch_jobs(&app, "", "").await,
    ];
    for s in &mut streams {
        while kind(&next_change(s).await) != Ev::Synced {}
    }
    app.stop().await;
    for mut s in streams {
        let ended = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("ends promptly");
        assert_eq!(
            ended.expect_err("an error status").code(),
            Code::Unavailable
        );
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn a_watcher_that_never_reads_holds_up_nobody_and_later_catches_up_with_everything() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut stalled = watch_jobs(&app, "", "").await;
    let mut active = watch_jobs(&app, "", "").await;
    for s in [&mut stalled, &mut active] {
        while kind(&next_change(s).await) != Ev::Synced {}
    }
    let before = rss_kib();
    // Far more changes than the live feed holds (4,096), while one watcher reads nothing.
    let total = 6000;
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut client = app.client();
        let id = job.id.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..total / 4 {
                let record = pvc(
                    &id,
                    &format!("w{w}-{}", i % 50),
                    OpType::K8sCopy,
                    PvcState::Active,
                );
                client
                    .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(record) })
                    .await
                    .expect("report");
            }
        }));
    }
    let mut ledger = Ledger::default();
    ledger.last.insert(job.id.clone(), 1);
    for _ in 0..total {
        ledger.see(&next_change(&mut active).await);
    }
    for w in writers {
        w.await
            .expect("writers finished although a watcher never read");
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "memory grew by {grown_mib} MiB with a stalled watcher"
    );
    let mut late = Ledger::default();
    late.last.insert(job.id.clone(), 1);
    for _ in 0..total {
        late.see(&next_change(&mut stalled).await);
    }
    assert_eq!(
        late.last[&job.id],
        1 + total as u64,
        "the stalled watcher got every change, caught up from the log"
    );
    app.stop().await;
}

/// WatchJobs reads its snapshot in pages (here of 7 jobs), each at its own position, while
/// writers change the jobs: every job is in the snapshot once, every later change arrives once
/// and in order (a job's page already shows the changes before it was read), every token before
/// SYNCED starts a fresh snapshot, and the watcher ends in the database's final state.
#[tokio::test]
async fn a_snapshot_read_in_pages_while_jobs_change_misses_and_repeats_nothing() {
    let app = spawn_app_with(|c| c.watch_snapshot_page = 7).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(
            app.create(job(JobType::K8sCopy, JobState::Running))
                .await
                .id,
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (mut client, ids, stop) = (app.client(), ids.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Walk the ids from both ends, so early and late pages change alike.
                let id = if w == 0 {
                    ids[n % ids.len()].clone()
                } else {
                    ids[ids.len() - 1 - n % ids.len()].clone()
                };
                client
                    .update_job(step_request(&id, n as i64))
                    .await
                    .expect("update");
                if n.is_multiple_of(10) {
                    client
                        .create_job(pb::CreateJobRequest {
                            job: Some(job(JobType::K8sSnap, JobState::Pending)),
                        })
                        .await
                        .expect("create");
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut stream = watch_jobs(&app, "", "").await;
    let mut ledger = Ledger::default();
    let mut in_snapshot = std::collections::HashSet::new();
    loop {
        let event = next_change(&mut stream).await;
        if kind(&event) == Ev::Synced {
            break;
        }
        assert!(
            matches!(
                decode_token(&event.resume_token),
                Ok(ResumePoint::InSnapshot(_))
            ),
            "a token before SYNCED starts a fresh snapshot"
        );
        if kind(&event) == Ev::Snapshot {
            let id = event.job.as_ref().expect("a job").id.clone();
            assert!(in_snapshot.insert(id), "a job twice in the snapshot");
        }
        ledger.see(&event);
        // A slow reader: the writers get ahead between pages.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(
        in_snapshot.len() >= 40,
        "every job in the snapshot: {}",
        in_snapshot.len()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let all = app
        .client()
        .list_jobs(pb::ListJobsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .jobs;
    for job in &all {
        while ledger.revision_of(&job.id) != Some(job.revision) {
            ledger.see(&next_change(&mut stream).await);
        }
    }
    app.stop().await;
}
