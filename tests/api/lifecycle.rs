use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

const STATES: [JobState; 7] = [
    JobState::Pending,
    JobState::Running,
    JobState::Completed,
    JobState::Failed,
    JobState::Skipped,
    JobState::Partial,
    JobState::Cancelled,
];

fn legal(from: JobState, to: JobState) -> bool {
    use JobState::*;
    matches!(
        (from, to),
        (Pending, Pending | Running | Skipped | Failed | Cancelled)
            | (Running, Running | Completed | Failed | Partial | Cancelled)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_transition_is_allowed_or_refused_exactly_as_documented_and_refusals_change_nothing()
{
    let app = spawn_app().await;
    for from in STATES {
        for to in STATES {
            let created = app.create(job(JobType::K8sCopy, from)).await;
            let result = app.set_state(&created.id, to).await;
            if legal(from, to) {
                let updated = result.unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"));
                assert_eq!(updated.state, to as i32);
            } else {
                let status = result.expect_err("illegal transition");
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "{from:?} -> {to:?}"
                );
                let (from_name, to_name) = (from.as_str_name(), to.as_str_name());
                let message = status.message();
                assert!(
                    message.contains(from_name.trim_start_matches("JOB_STATE_")),
                    "{from:?} -> {to:?}: message names the current state: {message}"
                );
                if from == JobState::Pending || from == JobState::Running || from != to {
                    assert!(
                        message.contains(to_name.trim_start_matches("JOB_STATE_")),
                        "names the attempted state: {message}"
                    );
                }
                assert_eq!(
                    app.get(&created.id).await,
                    created,
                    "{from:?} -> {to:?} changed the job"
                );
            }
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_directly_in_any_state_is_allowed_but_never_unknown() {
    let app = spawn_app().await;
    for state in STATES {
        assert_eq!(
            app.create(job(JobType::K8sSnap, state)).await.state,
            state as i32
        );
    }
    let unknown = app.create(job(JobType::K8sSnap, JobState::Unknown)).await;
    assert_eq!(
        unknown.state,
        JobState::Pending as i32,
        "UNKNOWN in a create means the default"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn running_sets_start_time_and_a_terminal_state_sets_end_time_once() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sSnap, JobState::Pending)).await;
    assert_eq!((created.start_time, created.end_time), (None, None));
    let running = app
        .set_state(&created.id, JobState::Running)
        .await
        .expect("running");
    let start = running.start_time.expect("start_time set");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((now - start).abs() < 60);
    let done = app
        .set_state(&created.id, JobState::Completed)
        .await
        .expect("completed");
    assert_eq!(done.start_time, Some(start));
    assert!(done.end_time.is_some());

    let with_times = app
        .create(pb::Job {
            start_time: Some(100),
            end_time: Some(200),
            ..job(JobType::K8sSnap, JobState::Running)
        })
        .await;
    let failed = app
        .set_state(&with_times.id, JobState::Failed)
        .await
        .expect("failed");
    assert_eq!(
        (failed.start_time, failed.end_time),
        (Some(100), Some(200)),
        "set times are kept"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn setting_the_current_state_again_applies_the_other_fields() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sSnap, JobState::Running)).await;
    let updated = app
        .update(
            &created.id,
            pb::Job {
                state: JobState::Running as i32,
                num_backup_resources: Some(10),
                ..Default::default()
            },
            &["state", "num_backup_resources"],
            &[],
        )
        .await
        .expect("same state is not a transition");
    assert_eq!(updated.num_backup_resources, Some(10));
    assert_eq!(updated.state, JobState::Running as i32);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_job_refuses_every_update_append_and_pvc_report() {
    let app = spawn_app().await;
    for terminal in [
        JobState::Completed,
        JobState::Failed,
        JobState::Skipped,
        JobState::Partial,
        JobState::Cancelled,
    ] {
        let created = app.create(job(JobType::K8sCopy, terminal)).await;
        let rename = app
            .update(
                &created.id,
                pb::Job {
                    name: Some("x".into()),
                    ..Default::default()
                },
                &["name"],
                &[],
            )
            .await;
        assert_eq!(code(rename), Code::FailedPrecondition);
        let append = app
            .update(&created.id, pb::Job::default(), &[], &["late line"])
            .await;
        assert_eq!(code(append), Code::FailedPrecondition);
        let same_state = app.set_state(&created.id, terminal).await;
        assert_eq!(code(same_state), Code::FailedPrecondition);
        let report = app
            .report(pvc(&created.id, "data", OpType::K8sCopy, PvcState::Active))
            .await;
        assert_eq!(code(report), Code::FailedPrecondition);
        assert_eq!(
            app.get(&created.id).await,
            created,
            "{terminal:?} job changed"
        );
        // Delete remains.
        app.client()
            .delete_job(pb::DeleteJobRequest {
                id: created.id,
                etag: String::new(),
            })
            .await
            .expect("delete");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_counters_and_times_are_invalid_and_change_nothing() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    for (job, path) in [
        (
            pb::Job {
                num_total_resources: Some(-1),
                ..Default::default()
            },
            "num_total_resources",
        ),
        (
            pb::Job {
                num_backup_resources: Some(-5),
                ..Default::default()
            },
            "num_backup_resources",
        ),
        (
            pb::Job {
                start_time: Some(-1),
                ..Default::default()
            },
            "start_time",
        ),
    ] {
        let result = app.update(&created.id, job, &[path], &[]).await;
        assert_eq!(code(result), Code::InvalidArgument, "{path}");
    }
    let mut negative_stats = pvc(&created.id, "data", OpType::K8sCopy, PvcState::Active);
    negative_stats.stats = Some(pb::TransferStats {
        transferred_size: Some(-1),
        ..Default::default()
    });
    assert_eq!(
        code(app.report(negative_stats).await),
        Code::InvalidArgument
    );
    assert_eq!(app.get(&created.id).await, created);
    app.stop().await;
}
