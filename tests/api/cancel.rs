use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

async fn cancel(app: &TestApp, id: &str) -> Result<pb::Job, tonic::Status> {
    app.client()
        .cancel_job(pb::CancelJobRequest { id: id.to_string() })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_snapshot_or_copy_job_makes_it_cancelled_at_once() {
    let app = spawn_app().await;
    for job_type in [JobType::K8sSnap, JobType::K8sCopy] {
        let created = app.create(job(job_type, JobState::Running)).await;
        let cancelled = cancel(&app, &created.id).await.expect("cancel");
        assert_eq!(cancelled.state, JobState::Cancelled as i32);
        assert!(cancelled.end_time.is_some());
        let line = cancelled.activity.last().expect("an activity line");
        assert!(line.starts_with("Job cancelled by"), "{line}");
        assert_eq!(cancelled.revision, created.revision + 1);
        assert_eq!(app.get(&created.id).await, cancelled);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_cancelled_job_again_succeeds_and_changes_nothing() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let first = cancel(&app, &created.id).await.expect("cancel");
    let again = cancel(&app, &created.id).await.expect("cancel again");
    assert_eq!(first, again);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_job_in_another_state_is_a_failed_precondition() {
    let app = spawn_app().await;
    for state in [
        JobState::Pending,
        JobState::Completed,
        JobState::Failed,
        JobState::Skipped,
        JobState::Partial,
    ] {
        let created = app.create(job(JobType::K8sCopy, state)).await;
        let status = cancel(&app, &created.id).await.expect_err("refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{state:?}");
        assert!(
            status
                .message()
                .contains(state.as_str_name().trim_start_matches("JOB_STATE_")),
            "{}",
            status.message()
        );
        assert_eq!(app.get(&created.id).await, created);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_running_job_of_another_type_is_a_failed_precondition() {
    let app = spawn_app().await;
    for job_type in [
        JobType::Restore,
        JobType::DeleteBackup,
        JobType::AwsrdsBackup,
        JobType::SecurityScan,
        JobType::Unspecified,
    ] {
        let created = app.create(job(job_type, JobState::Running)).await;
        assert_eq!(
            code(cancel(&app, &created.id).await),
            Code::FailedPrecondition,
            "{job_type:?}"
        );
        assert_eq!(app.get(&created.id).await, created);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_an_unknown_job_is_not_found_and_of_a_malformed_id_invalid() {
    let app = spawn_app().await;
    assert_eq!(
        code(cancel(&app, "5f431ef6a7690b60975f6664").await),
        Code::NotFound
    );
    assert_eq!(code(cancel(&app, "not-an-id").await), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_progress_report_after_cancel_is_refused_so_the_executor_stops() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    app.report(pvc(&created.id, "data", OpType::K8sCopy, PvcState::Active))
        .await
        .expect("report");
    cancel(&app, &created.id).await.expect("cancel");
    let late = app
        .report(pvc(
            &created.id,
            "data",
            OpType::K8sCopy,
            PvcState::Completed,
        ))
        .await;
    assert_eq!(code(late), Code::FailedPrecondition);
    app.stop().await;
}
