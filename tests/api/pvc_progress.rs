use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn aggregates_follow_a_mix_of_reports_with_unset_op_types_and_skipped_states() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let id = job.id.as_str();
    // COPY records: two explicit, one with op_type unset (counts as COPY).
    let mut a = pvc(id, "a", OpType::K8sCopy, PvcState::Active);
    a.stats = Some(stats(100, 1));
    let mut b = pvc(id, "b", OpType::K8sCopy, PvcState::Completed);
    b.stats = Some(stats(200, 2));
    let mut legacy = pvc(id, "legacy", OpType::Unspecified, PvcState::Failed);
    legacy.stats = Some(stats(50, 5));
    // Snapshot records, including skipped ones.
    let s1 = pvc(id, "s1", OpType::K8sSnap, PvcState::Pending);
    let s2 = pvc(id, "s2", OpType::K8sSnap, PvcState::SkippedMissingAccount);
    let s3 = pvc(
        id,
        "s3",
        OpType::K8sSnap,
        PvcState::SkippedVolumeFromOtherRegion,
    );
    let s4 = pvc(id, "s4", OpType::K8sSnap, PvcState::Completed);
    for r in [a.clone(), b, legacy, s1, s2, s3, s4] {
        app.report(r).await.expect("report");
    }
    // Report `a` again: the record is updated, not duplicated.
    a.state = PvcState::Completed as i32;
    a.stats = Some(pb::TransferStats {
        transferred_size: Some(400),
        ..Default::default()
    });
    app.report(a).await.expect("report again");

    let got = app.get(id).await;
    let copy = got.kube_copy_progress.expect("copy progress");
    assert_eq!(
        (
            copy.total_pvs,
            copy.pending_pvs,
            copy.active_pvs,
            copy.completed_pvs,
            copy.failed_pvs
        ),
        (3, 0, 0, 2, 1)
    );
    let s = copy.stats.expect("stats");
    assert_eq!(
        s.transferred_size,
        Some(400 + 200 + 50),
        "a's stats were merged field-wise"
    );
    assert_eq!(
        s.transferred_number_of_files,
        Some(1 + 2 + 5),
        "unreported fields keep their value"
    );
    assert_eq!(s.estimated_size, Some(3000));
    let snap = got.kube_snapshot_progress.expect("snapshot progress");
    assert_eq!(
        (
            snap.total_pvs,
            snap.pending_pvs,
            snap.active_pvs,
            snap.completed_pvs,
            snap.failed_pvs,
            snap.skipped_pvs
        ),
        (4, 1, 0, 1, 0, 2)
    );
    assert_eq!(got.revision, 1 + 8, "each report bumps the job's revision");
    let listed = app
        .client()
        .list_pvc_progress(pb::ListPvcProgressRequest {
            job_id: id.to_string(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total, 7);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_only_snapshot_records_has_no_copy_progress() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sSnap, JobState::Running)).await;
    app.report(pvc(&job.id, "s", OpType::K8sSnap, PvcState::Active))
        .await
        .expect("report");
    let got = app.get(&job.id).await;
    assert!(got.kube_copy_progress.is_none());
    assert_eq!(got.kube_snapshot_progress.map(|s| s.active_pvs), Some(1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_changes_the_jobs_revision_updated_time_and_etag() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let record = app
        .report(pvc(&job.id, "data", OpType::K8sCopy, PvcState::Pending))
        .await
        .expect("report");
    assert_eq!(record.id.len(), 24);
    assert_eq!(record.etag.len(), 40);
    let after = app.get(&job.id).await;
    assert_eq!(after.revision, job.revision + 1);
    assert_ne!(after.etag, job.etag);
    let micros = |t: Option<prost_types::Timestamp>| {
        t.map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
    };
    assert!(micros(after.updated) >= micros(job.updated));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_again_keeps_the_record_id_and_unreported_fields() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sSnap, JobState::Running)).await;
    let mut first = pvc(&job.id, "data", OpType::K8sSnap, PvcState::Active);
    first.message = Some("snapshotting".into());
    first.snapshot_progress_percentage = Some(10);
    let created = app.report(first).await.expect("report");
    assert!(created.start_time.is_some(), "ACTIVE sets start_time");
    let mut second = pvc(&job.id, "data", OpType::Unspecified, PvcState::Unspecified);
    second.snapshot_progress_percentage = Some(100);
    second.state = PvcState::Completed as i32;
    let updated = app.report(second).await.expect("report again");
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.message.as_deref(), Some("snapshotting"));
    assert_eq!(
        updated.op_type,
        OpType::K8sSnap as i32,
        "unset op_type keeps the stored one"
    );
    assert_eq!(updated.snapshot_progress_percentage, Some(100));
    assert!(updated.end_time.is_some(), "COMPLETED sets end_time");
    assert_ne!(updated.etag, created.etag);
    let fetched = app
        .client()
        .get_pvc_progress(pb::GetPvcProgressRequest { id: created.id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, updated);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_for_an_unknown_job_is_not_found_and_bad_reports_are_invalid() {
    let app = spawn_app().await;
    let unknown = app
        .report(pvc(
            "5f431ef6a7690b60975f6664",
            "data",
            OpType::K8sCopy,
            PvcState::Active,
        ))
        .await;
    assert_eq!(code(unknown), Code::NotFound);
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut bad_pct = pvc(&job.id, "data", OpType::K8sSnap, PvcState::Active);
    bad_pct.snapshot_progress_percentage = Some(101);
    let no_name = pvc(&job.id, "", OpType::K8sCopy, PvcState::Active);
    let mut no_ns = pvc(&job.id, "data", OpType::K8sCopy, PvcState::Active);
    no_ns.namespace.clear();
    let mut bad_state = pvc(&job.id, "data", OpType::K8sCopy, PvcState::Active);
    bad_state.state = 42;
    let bad_job = pvc("nope", "data", OpType::K8sCopy, PvcState::Active);
    for r in [bad_pct, no_name, no_ns, bad_state, bad_job] {
        assert_eq!(code(app.report(r).await), Code::InvalidArgument);
    }
    assert_eq!(app.get(&job.id).await, job, "nothing was written");
    app.stop().await;
}
