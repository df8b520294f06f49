//! Jobs that look after themselves, with short durations: finished jobs expire (by the server's
//! retention or their own TTL) as real deletions every watcher sees; a job whose executor goes
//! silent is marked stalled, cleared by its next write, and FAILED if the silence goes on; a
//! write racing the abandon either wins or is refused; a restart in the middle changes nothing.

use std::time::Duration;

use jobtrack::config::Config;
use jobtrack::domain::Upkeep;
use jobtrack::pb;
use jobtrack::pb::JobEventType as Ev;
use tonic::Code;

use crate::helpers::*;
use crate::http::{encode, get};
use crate::watch::{kind, next_change, watch_job, watch_jobs};

pub(crate) const ABANDONED: &str = "executor stopped reporting";

/// Sweeps every 50 ms with the given policy (`None`: never).
pub(crate) fn with_upkeep(
    retain: Option<Duration>,
    stall: Option<Duration>,
    abandon: Option<Duration>,
) -> impl Fn(&mut Config) {
    move |c: &mut Config| {
        c.upkeep = Upkeep {
            retain_finished: retain,
            stall_after: stall,
            abandon_after: abandon,
        };
        c.sweep_interval = Duration::from_millis(50);
    }
}

const SECOND: Option<Duration> = Some(Duration::from_secs(1));

/// The next change of `stream` that is of `ev` for job `id`.
async fn next_of(stream: &mut tonic::Streaming<pb::JobEvent>, ev: Ev, id: &str) -> pb::JobEvent {
    loop {
        let event = next_change(stream).await;
        if kind(&event) == ev && event.job.as_ref().is_some_and(|j| j.id == id) {
            return event;
        }
    }
}

/// The job of the next UPDATED change of `id` whose `stalled_since` is set (`true`) or
/// cleared (`false`).
pub(crate) async fn next_stall_change(
    stream: &mut tonic::Streaming<pb::JobEvent>,
    id: &str,
    stalled: bool,
) -> pb::Job {
    loop {
        let job = next_of(stream, Ev::Updated, id).await.job.expect("a job");
        if job.stalled_since.is_some() == stalled {
            return job;
        }
    }
}

fn running() -> pb::Job {
    job(JobType::K8sCopy, JobState::Running)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_job_expires_as_a_deletion_every_watcher_sees_and_a_running_one_stays() {
    let app = spawn_app_with(with_upkeep(SECOND, None, None)).await;
    let stays = app.create(running()).await;
    let finishing = app.create(running()).await;
    let mut all = watch_jobs(&app, "", "").await;
    let mut sse = crate::sse::watch(app.addr, "/api/v1/jobs?watch=1", &[]).await;
    let mut web = crate::grpc_web::grpc_web_client(&app)
        .watch_jobs(pb::WatchJobsRequest::default())
        .await
        .expect("WatchJobs over gRPC-web")
        .into_inner();
    app.set_state(&finishing.id, JobState::Completed)
        .await
        .expect("complete");
    let deleted = next_of(&mut all, Ev::Deleted, &finishing.id).await;
    assert_eq!(
        deleted.job.expect("the job").state,
        JobState::Completed as i32
    );
    let deleted_web = next_of(&mut web, Ev::Deleted, &finishing.id).await;
    assert_eq!(deleted_web.job.expect("the job").id, finishing.id);
    within("the SSE watcher's DELETED", async {
        loop {
            let event = sse.next_change().await;
            if event.event == "deleted" && event.data["job"]["_id"] == finishing.id.as_str() {
                return;
            }
        }
    })
    .await;
    assert_eq!(app.get_status(&finishing.id).await, Code::NotFound);
    assert_eq!(
        get(app.addr, &format!("/api/v1/jobs/{}", finishing.id))
            .await
            .status,
        404
    );
    // Older than the retention too, but RUNNING: it never expires; the totals are exact.
    assert_eq!(app.get(&stays.id).await.state, JobState::Running as i32);
    assert_eq!(app.count_jobs().await, 1);
    let metrics = get(app.addr, "/metrics").await.text();
    assert!(
        metrics.contains("jobtrack_jobs_purged_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_its_own_ttl_expires_while_the_default_keeps_the_others() {
    // The server keeps finished jobs 30 days; two jobs ask for less, on create and on update.
    let app = spawn_app_with(with_upkeep(
        Some(Duration::from_secs(30 * 86_400)),
        None,
        None,
    ))
    .await;
    let at_once = app
        .create(pb::Job {
            ttl_seconds_after_finished: Some(0),
            ..running()
        })
        .await;
    assert_eq!(at_once.ttl_seconds_after_finished, Some(0));
    let later = app.create(running()).await;
    let ttl = pb::Job {
        ttl_seconds_after_finished: Some(1),
        ..Default::default()
    };
    app.update(&later.id, ttl, &["ttl_seconds_after_finished"], &[])
        .await
        .expect("set the TTL");
    let kept = app.create(running()).await;
    let mut all = watch_jobs(&app, "", "").await;
    for id in [&at_once.id, &later.id, &kept.id] {
        app.set_state(id, JobState::Failed).await.expect("fail");
    }
    let mut gone = vec![];
    while gone.len() < 2 {
        let event = next_change(&mut all).await;
        if kind(&event) == Ev::Deleted {
            gone.push(event.job.expect("a job").id);
        }
    }
    gone.sort();
    let mut expected = vec![at_once.id.clone(), later.id.clone()];
    expected.sort();
    assert_eq!(gone, expected);
    assert_eq!(app.get(&kept.id).await.state, JobState::Failed as i32);
    assert_eq!(app.count_jobs().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_job_is_marked_stalled_and_the_next_write_clears_it() {
    let app = spawn_app_with(with_upkeep(None, SECOND, None)).await;
    let created = app.create(running()).await;
    let mut events = watch_job(&app, &created.id, "").await.expect("watch");
    // SSE watchers see the mark when they ask for it, and the documented item when they do not.
    let asked = format!(
        "/api/v1/jobs/{}?watch=1&projection={}",
        created.id,
        encode(r#"{"state": 1, "stalled_since": 1}"#)
    );
    let mut sse_asked = crate::sse::watch(app.addr, &asked, &[]).await;
    let plain = format!("/api/v1/jobs/{}?watch=1", created.id);
    let mut sse_plain = crate::sse::watch(app.addr, &plain, &[]).await;
    let stalled = next_stall_change(&mut events, &created.id, true).await;
    assert_eq!(stalled.state, JobState::Running as i32);
    let marked = within("the SSE watcher's stall mark", async {
        loop {
            let event = sse_asked.next_change().await;
            if event.event == "updated" {
                return event.data;
            }
        }
    })
    .await;
    assert!(
        marked["job"]["stalled_since"].as_str().is_some(),
        "{marked}"
    );
    assert_eq!(marked["job"]["state"], "RUNNING");
    assert!(marked["job"].get("name").is_none(), "{marked}");
    let documented = within("the plain SSE watcher's update", async {
        loop {
            let event = sse_plain.next_change().await;
            if event.event == "updated" {
                return event.data;
            }
        }
    })
    .await;
    assert!(
        documented["job"].get("stalled_since").is_none(),
        "{documented}"
    );
    assert_eq!(documented["job"]["name"], "kubecluster-1598234357");
    let since = stalled.stalled_since.expect("stalled_since");
    let report = stalled.last_report_time.expect("last_report_time");
    assert!(
        since.seconds * 1_000_000_000 + i64::from(since.nanos)
            >= report.seconds * 1_000_000_000 + i64::from(report.nanos) + 1_000_000_000,
        "marked after a full stall-after of silence: {since:?} vs {report:?}"
    );
    assert_eq!(
        stalled.abandon_time, None,
        "--abandon-after 0: never abandoned"
    );

    // Every client finds it: the filter, and REST only when the projection asks.
    let filter = r#"{"stalled_since": {"$exists": true}}"#;
    let listed = app.list(filter, "").await.expect("list");
    assert_eq!(listed.total, 1);
    let item = get(app.addr, &format!("/api/v1/jobs/{}", created.id))
        .await
        .json();
    assert!(item.get("stalled_since").is_none(), "{item}");
    let projected = get(
        app.addr,
        &format!(
            "/api/v1/jobs/{}?projection={}",
            created.id,
            encode(r#"{"stalled_since": 1}"#)
        ),
    )
    .await
    .json();
    assert!(
        projected["stalled_since"]
            .as_str()
            .is_some_and(|s| s.ends_with(" GMT")),
        "{projected}"
    );

    // A PVC report clears it, in an UPDATED change of its own.
    app.report(pvc(
        &created.id,
        "data-0",
        OpType::K8sCopy,
        PvcState::Active,
    ))
    .await
    .expect("report");
    let cleared = next_stall_change(&mut events, &created.id, false).await;
    assert_eq!(cleared.stalled_since, None);
    assert_eq!(app.list(filter, "").await.expect("list").total, 0);

    // Silent again: stalled again; the heartbeat (UpdateJob naming nothing) clears it.
    next_stall_change(&mut events, &created.id, true).await;
    app.update(&created.id, pb::Job::default(), &[], &[])
        .await
        .expect("heartbeat");
    let cleared = next_stall_change(&mut events, &created.id, false).await;
    assert_eq!(
        cleared.message, created.message,
        "a heartbeat changes no field"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_job_is_abandoned_failed_and_a_later_report_is_refused() {
    let app = spawn_app_with(with_upkeep(None, SECOND, Some(Duration::from_secs(2)))).await;
    let created = app.create(running()).await;
    let mut events = watch_job(&app, &created.id, "").await.expect("watch");
    let stalled = next_stall_change(&mut events, &created.id, true).await;
    assert!(stalled.abandon_time.is_some(), "{stalled:?}");
    let failed = loop {
        let job = next_of(&mut events, Ev::Updated, &created.id)
            .await
            .job
            .expect("a job");
        if job.state != JobState::Running as i32 {
            break job;
        }
    };
    assert_eq!(failed.state, JobState::Failed as i32);
    assert_eq!(failed.message.as_deref(), Some(ABANDONED));
    assert!(failed.end_time.is_some());
    assert_eq!((failed.stalled_since, failed.abandon_time), (None, None));
    let line = failed.activity.last().expect("an activity line");
    assert!(
        line.contains("stopped reporting") && line.contains("GMT"),
        "{line}"
    );
    // The watch of the job ends after its terminal change.
    assert!(crate::watch::next(&mut events).await.is_none());

    let late = app.report(pvc(
        &created.id,
        "data-0",
        OpType::K8sCopy,
        PvcState::Active,
    ));
    assert_eq!(code(late.await), Code::FailedPrecondition);
    let update = app.update(&created.id, pb::Job::default(), &[], &[]).await;
    assert_eq!(code(update), Code::FailedPrecondition);
    assert_eq!(app.get(&created.id).await, failed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_racing_the_abandon_either_wins_cleanly_or_is_refused() {
    let app = spawn_app_with(with_upkeep(None, None, None)).await;
    let mut rng = Rng(seed("a_write_racing_the_abandon"));
    // Each job stalls after 1 s and is abandoned at once (its abandon-after is the stall's):
    // its executor's one write lands around that moment.
    let mut jobs = vec![];
    for _ in 0..24 {
        let created = app
            .create(pb::Job {
                stall_after_seconds: Some(1),
                abandon_after_seconds: Some(1),
                ..running()
            })
            .await;
        jobs.push((created, rng.below(400)));
    }
    let mut all = watch_jobs(&app, "", "").await;
    let writes = jobs.iter().map(|(created, delay)| {
        let (app_client, id, delay) = (app.client(), created.id.clone(), *delay);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(900 + delay)).await;
            let mut client = app_client;
            let job = pb::Job {
                id: id.clone(),
                message: Some(format!("alive {id}")),
                stall_after_seconds: Some(0),
                ..Default::default()
            };
            let mask = prost_types::FieldMask {
                paths: vec!["message".into(), "stall_after_seconds".into()],
            };
            client
                .update_job(pb::UpdateJobRequest {
                    job: Some(job),
                    update_mask: Some(mask),
                    append_activity: vec![],
                    etag: String::new(),
                })
                .await
                .map(tonic::Response::into_inner)
        })
    });
    let outcomes: Vec<_> = futures_util::future::join_all(writes).await;
    // Every job has settled: a write that won turned stalling off, a refused one met FAILED.
    let mut history: std::collections::HashMap<String, Vec<pb::Job>> = Default::default();
    let mut settled = 0;
    while settled < jobs.len() {
        let event = next_change(&mut all).await;
        let updated = kind(&event) == Ev::Updated;
        let Some(job) = event.job.filter(|_| updated) else {
            continue; // the snapshot of the jobs, as they were created
        };
        let done = job.state == JobState::Failed as i32 || job.stall_after_seconds == Some(0);
        if done {
            settled += 1;
        }
        history.entry(job.id.clone()).or_default().push(job);
    }
    let (mut won, mut refused) = (0, 0);
    for ((created, _), outcome) in jobs.iter().zip(outcomes) {
        let seen = &history[&created.id];
        let now = app.get(&created.id).await;
        match outcome.expect("the writer task") {
            Ok(written) => {
                won += 1;
                assert_eq!(written.state, JobState::Running as i32);
                assert_eq!(now.state, JobState::Running as i32, "{seen:?}");
                assert!(
                    seen.iter().all(|j| j.state == JobState::Running as i32),
                    "an accepted write and an abandon both happened: {seen:?}"
                );
            }
            Err(status) => {
                refused += 1;
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(now.state, JobState::Failed as i32);
                assert_eq!(now.message.as_deref(), Some(ABANDONED));
                assert!(
                    seen.iter().all(|j| j.stall_after_seconds != Some(0)),
                    "a refused write was applied: {seen:?}"
                );
            }
        }
    }
    println!("{won} writes won, {refused} were refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_in_the_middle_keeps_the_stall_and_the_abandon_on_time() {
    let db = test_db().await;
    let policy = with_upkeep(None, SECOND, Some(Duration::from_secs(3)));
    let first = spawn_app_on(&db.url, &policy).await;
    let created = first.create(running()).await;
    let mut events = watch_job(&first, &created.id, "").await.expect("watch");
    let stalled = next_stall_change(&mut events, &created.id, true).await;
    first.stop().await;

    // Nothing in memory survives: the next server decides from the stored times.
    let mut second = spawn_app_on(&db.url, &policy).await;
    second.keep(db);
    let mut events = watch_job(&second, &created.id, "").await.expect("watch");
    let failed = loop {
        let event = next_change(&mut events).await;
        match event.job {
            Some(job) if job.state == JobState::Failed as i32 => break job,
            _ => continue,
        }
    };
    assert_eq!(failed.message.as_deref(), Some(ABANDONED));
    let at = |job: &pb::Job| job.updated.map(|t| (t.seconds, t.nanos));
    assert!(at(&failed) > at(&stalled), "{failed:?} after {stalled:?}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn overrides_out_of_range_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let created = app.create(running()).await;
    for (field, job) in [
        (
            "ttl_seconds_after_finished",
            pb::Job {
                ttl_seconds_after_finished: Some(-1),
                ..Default::default()
            },
        ),
        (
            "stall_after_seconds",
            pb::Job {
                stall_after_seconds: Some(4_000_000_000),
                ..Default::default()
            },
        ),
    ] {
        let status = app
            .update(&created.id, job, &[field], &[])
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
    for path in ["last_report_time", "stalled_since", "abandon_time"] {
        let status = app
            .update(&created.id, pb::Job::default(), &[path], &[])
            .await
            .expect_err(path);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("output only"), "{status:?}");
    }
    assert_eq!(app.get(&created.id).await, created);
}
