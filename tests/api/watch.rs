//! The live-update contract (spec section 6), with real tonic clients on real streams.

use std::collections::HashMap;
use std::time::Duration;

use jobtrack::pb;
use jobtrack::pb::JobEventType as Ev;
use tonic::Code;
use tonic::Streaming;

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
    within("the next event", stream.message())
        .await
        .expect("no stream error")
}

/// The next event that is not a heartbeat. The deadline covers the heartbeats too: a stream
/// that only beats while a change is due has lost it, and fails here instead of waiting forever.
pub(crate) async fn next_change(stream: &mut Streaming<pb::JobEvent>) -> pb::JobEvent {
    within("the next change (heartbeats do not count)", async {
        loop {
            let event = next(stream).await.expect("the stream goes on");
            if event.r#type != Ev::Heartbeat as i32 {
                return event;
            }
        }
    })
    .await
}

pub(crate) fn kind(event: &pb::JobEvent) -> Ev {
    Ev::try_from(event.r#type).expect("a known event type")
}

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
async fn watching_a_terminal_job_sends_its_snapshot_and_synced_then_ends() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sSnap, JobState::Failed)).await;
    let mut stream = watch_job(&app, &job.id, "").await.expect("watch");
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Snapshot);
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Synced);
    assert!(next(&mut stream).await.is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
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
    // A token of another database whose history is ahead of this one's.
    let other = spawn_app().await;
    let mut ahead = String::new();
    for _ in 0..3 {
        let theirs = other
            .create(crate::helpers::job(JobType::K8sSnap, JobState::Running))
            .await;
        let mut stream = watch_job(&other, &theirs.id, "").await.expect("watch");
        while let Some(event) = next(&mut stream).await {
            if kind(&event) == Ev::Synced {
                ahead = event.resume_token;
                break;
            }
        }
    }
    assert_eq!(
        code(watch_job(&app, &job.id, &ahead).await),
        Code::InvalidArgument,
        "a token from another database"
    );
    other.stop().await;

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

/// Records, per job, the revisions seen, and checks each arrives once and in order. A job is
/// arrives in a SNAPSHOT at most once, before any change of it: every token resumes exactly,
/// so a resumed stream never restates what the client has.
#[derive(Default)]
pub(crate) struct Ledger {
    last: HashMap<String, u64>,
    /// Jobs whose DELETED arrived: nothing more may come of them.
    gone: std::collections::HashSet<String>,
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

    /// The jobs seen and not deleted, with their last revision.
    pub(crate) fn live(&self) -> &HashMap<String, u64> {
        &self.last
    }

    pub(crate) fn see(&mut self, event: &pb::JobEvent) {
        let job = event.job.as_ref().expect("a change carries its job");
        assert!(
            !self.gone.contains(&job.id),
            "job {}: {:?} after its DELETED",
            job.id,
            kind(event)
        );
        if kind(event) == Ev::Deleted {
            // The job as it was last: the client has seen that revision.
            let previous = self.last.remove(&job.id);
            assert_eq!(
                previous,
                Some(job.revision),
                "job {}: DELETED of revision {} after {previous:?}",
                job.id,
                job.revision
            );
            self.gone.insert(job.id.clone());
            return;
        }
        let previous = self.last.insert(job.id.clone(), job.revision);
        if kind(event) == Ev::Snapshot {
            assert!(
                previous.is_none(),
                "job {} restated by a SNAPSHOT after revision {previous:?}",
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

#[tokio::test(flavor = "multi_thread")]
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
        within("a writer", w).await.expect("writer");
    }
    let mut ledger = Ledger::default();
    let mut events = Vec::new();
    for _ in 0..8 * 61 {
        let event = next_change(&mut stream).await;
        ledger.see(&event);
        events.push(event);
    }
    assert_eq!(ledger.last.len(), 8);
    assert!(ledger.last.values().all(|r| *r == 61));
    // The order is the log's: resuming from any event's token replays exactly the events after
    // it, in the same order, then SYNCED.
    let mut rng = Rng(seed("eight writers"));
    let mut resume_at: Vec<usize> = (0..5)
        .map(|_| rng.below(events.len() as u64) as usize)
        .collect();
    resume_at.extend([0, events.len() - 1]);
    for at in resume_at {
        let mut resumed = watch_jobs(&app, "", &events[at].resume_token).await;
        for expected in &events[at + 1..] {
            let replayed = next_change(&mut resumed).await;
            assert_eq!(
                (
                    kind(&replayed),
                    replayed.job.as_ref().map(|j| (&j.id, j.revision))
                ),
                (
                    kind(expected),
                    expected.job.as_ref().map(|j| (&j.id, j.revision))
                ),
                "resumed after event {at}"
            );
        }
        assert_eq!(
            kind(&next_change(&mut resumed).await),
            Ev::Synced,
            "after event {at}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_drops_its_stream_at_random_points_and_resumes_sees_every_change_exactly_once()
 {
    // Heartbeats every 500 ms: a stream that only beats while the writer is done is a lost change.
    let app = spawn_app_with(|c| c.heartbeat = Duration::from_millis(500)).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
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
                        id: ids[i % 12].clone(),
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
    let mut rng = Rng(seed("random reconnects"));
    // What the client knows of its token: whether it came from inside the snapshot (before the
    // SYNCED of the first stream). Resuming from such a token continues the snapshot: the jobs
    // not yet sent, never one already seen; from any other, the changes after it, never a
    // snapshot.
    let (mut token, mut token_in_snapshot) = (String::new(), false);
    let (mut reconnects, mut snapshot_drops) = (0, 0);
    // The first snapshot may already include some updates (the writer starts first), so the
    // test waits for the updates *reflected*, not for 2,000 events.
    while ledger.updates() < 2000 {
        let mut stream = within("the watch call", watch_jobs(&app, "", &token)).await;
        // The first three streams take at most three events each: with twelve jobs in the
        // snapshot, each is dropped inside it, and the next continues it from its token.
        let take = if reconnects < 3 {
            1 + rng.below(3)
        } else {
            1 + rng.below(150)
        };
        let mut in_snapshot = token.is_empty() || token_in_snapshot;
        for _ in 0..take {
            let event = next(&mut stream).await.expect("an open stream");
            match kind(&event) {
                Ev::Snapshot => {
                    assert!(
                        in_snapshot,
                        "a SNAPSHOT after SYNCED, or on a resume from a token after SYNCED"
                    );
                    ledger.see(&event);
                }
                Ev::Synced => in_snapshot = false,
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
                             arrived; token {token}, {reconnects} reconnects",
                            ledger.updates()
                        );
                    }
                }
                _ => ledger.see(&event),
            }
            token = event.resume_token;
            token_in_snapshot = in_snapshot;
            if ledger.updates() >= 2000 {
                break;
            }
        }
        snapshot_drops += usize::from(in_snapshot);
        drop(stream);
        reconnects += 1;
    }
    within("the writer", writer)
        .await
        .expect("writer")
        .expect("every update succeeds");
    assert!(
        snapshot_drops >= 3,
        "dropped inside a snapshot {snapshot_drops} times"
    );
    assert!(
        reconnects > 10,
        "the test resumed many times ({reconnects})"
    );
    assert_eq!(ledger.updates(), 2000);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
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
    // Pruning runs every 100 ms: until it has removed the history after the old token, resuming
    // replays the changes; afterwards it gives a fresh snapshot, never an error.
    let (snapshot, mut stream) = eventually("the old token to give a snapshot", || async {
        let mut stream = watch_job(&app, &job.id, &old_token).await.expect("resume");
        let first = next_change(&mut stream).await;
        (kind(&first) == Ev::Snapshot).then_some((first, stream))
    })
    .await;
    assert_eq!(snapshot.job.map(|j| j.revision), Some(6));
    assert_eq!(kind(&next_change(&mut stream).await), Ev::Synced);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
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
        let ended = within("the stream to end on shutdown", s.message()).await;
        assert_eq!(
            ended.expect_err("an error status").code(),
            Code::Unavailable
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_never_reads_holds_up_nobody_and_later_catches_up_with_everything() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut stalled = watch_jobs(&app, "", "").await;
    let mut active = watch_jobs(&app, "", "").await;
    for s in [&mut stalled, &mut active] {
        while kind(&next_change(s).await) != Ev::Synced {}
    }
    // (How much memory a stalled watcher costs is a benchmark: `jobtrack bench --op fanout
    // --stalled-watchers N --server-pid P`, figures in the README.)
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
        within("the writers, although a watcher never reads", w)
            .await
            .expect("writers finished although a watcher never read");
    }
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
/// and in order (a job's page already shows the changes before it was read), and the watcher
/// ends in the database's final state. The client holds back after the first event until the
/// writers have acknowledged more writes, so writes land between the pages for certain.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_read_in_pages_while_jobs_change_misses_and_repeats_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let app = spawn_app_with(|c| c.watch_snapshot_page = 7).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(
            app.create(job(JobType::K8sCopy, JobState::Running))
                .await
                .id,
        );
    }
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut writers = Vec::new();
    for w in 0..2 {
        let (mut client, ids, stop, acked) =
            (app.client(), ids.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
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
                acked.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let mut stream = watch_jobs(&app, "", "").await;
    let mut ledger = Ledger::default();
    let mut in_snapshot = std::collections::HashSet::new();
    let mut first = true;
    loop {
        let event = next_change(&mut stream).await;
        if kind(&event) == Ev::Synced {
            break;
        }
        if kind(&event) == Ev::Snapshot {
            let id = event.job.as_ref().expect("a job").id.clone();
            assert!(in_snapshot.insert(id), "a job twice in the snapshot");
        }
        ledger.see(&event);
        if first {
            // The server has read the first page, not yet the rest (it sends ahead only a few
            // events): these writes land between the pages.
            let from = acked.load(Ordering::Relaxed);
            eventually("50 more acknowledged writes", || {
                let now = acked.load(Ordering::Relaxed);
                async move { (now >= from + 50).then_some(()) }
            })
            .await;
            first = false;
        }
    }
    assert!(
        in_snapshot.len() >= 40,
        "every job in the snapshot: {}",
        in_snapshot.len()
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        within("a writer", writer).await.expect("writer");
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
    within("the watcher reaching every job's final revision", async {
        for job in &all {
            while ledger.revision_of(&job.id) != Some(job.revision) {
                ledger.see(&next_change(&mut stream).await);
            }
        }
    })
    .await;
    app.stop().await;
}
