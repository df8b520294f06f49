use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_created_job_is_pending_with_a_server_id_an_etag_and_revision_one() {
    let app = spawn_app().await;
    let created = app
        .create(pb::Job {
            name: Some("n".into()),
            r#type: JobType::K8sSnap as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(created.id.len(), 24);
    assert!(
        created
            .id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(created.state, JobState::Pending as i32);
    assert_eq!(created.etag.len(), 40);
    assert_eq!(created.revision, 1);
    assert!(created.created.is_some() && created.updated.is_some());
    assert_eq!(app.get(&created.id).await, created);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_made_ids_strictly_increase_in_creation_order() {
    let app = spawn_app().await;
    let mut last = String::new();
    for _ in 0..50 {
        let id = app
            .create(job(JobType::K8sCopy, JobState::Pending))
            .await
            .id;
        assert!(id > last, "{id} after {last}");
        last = id;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_create_with_a_client_id_gets_already_exists_and_leaves_the_job_unchanged() {
    let app = spawn_app().await;
    let id = "5f431ef6a7690b60975f6664".to_string();
    let first = app
        .create(pb::Job {
            id: id.clone(),
            name: Some("first".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(first.id, id);
    let retry = app
        .client()
        .create_job(pb::CreateJobRequest {
            job: Some(pb::Job {
                id: id.clone(),
                name: Some("second".into()),
                ..Default::default()
            }),
        })
        .await;
    assert_eq!(code(retry), Code::AlreadyExists);
    assert_eq!(app.get(&id).await, first);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_never_set_stay_absent_and_explicit_zeros_are_kept() {
    let app = spawn_app().await;
    let created = app
        .create(pb::Job {
            num_total_resources: Some(0),
            message: Some(String::new()),
            ..Default::default()
        })
        .await;
    let got = app.get(&created.id).await;
    assert_eq!(got.num_total_resources, Some(0));
    assert_eq!(got.message, Some(String::new()));
    assert_eq!(got.num_backup_resources, None);
    assert_eq!(got.restoredef_name, None);
    assert_eq!(got.r#type, 0);
    assert!(got.kube_copy_progress.is_none() && got.kube_snapshot_progress.is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn update_writes_exactly_the_masked_fields_and_clears_masked_unset_ones() {
    let app = spawn_app().await;
    let created = app
        .create(pb::Job {
            name: Some("a".into()),
            message: Some("m".into()),
            num_total_resources: Some(5),
            ..Default::default()
        })
        .await;
    let updated = app
        .update(
            &created.id,
            pb::Job {
                name: Some("b".into()),
                num_total_resources: Some(99),
                ..Default::default()
            },
            &["name", "message"],
            &[],
        )
        .await
        .expect("update");
    assert_eq!(updated.name.as_deref(), Some("b"));
    assert_eq!(
        updated.message, None,
        "a masked field not set in job is cleared"
    );
    assert_eq!(
        updated.num_total_resources,
        Some(5),
        "an unmasked field is untouched"
    );
    assert_eq!(updated.revision, 2);
    assert_ne!(updated.etag, created.etag);
    assert_eq!(app.get(&created.id).await, updated);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_mask_writes_every_field_set_in_the_job() {
    let app = spawn_app().await;
    let created = app
        .create(pb::Job {
            name: Some("a".into()),
            message: Some("m".into()),
            ..Default::default()
        })
        .await;
    let updated = app
        .update(
            &created.id,
            pb::Job {
                num_backup_resources: Some(7),
                ..Default::default()
            },
            &[],
            &[],
        )
        .await
        .expect("update");
    assert_eq!(updated.num_backup_resources, Some(7));
    assert_eq!(updated.name.as_deref(), Some("a"));
    assert_eq!(updated.message.as_deref(), Some("m"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn append_activity_adds_lines_in_order_with_the_state_change_in_one_revision() {
    let app = spawn_app().await;
    let created = app
        .create(pb::Job {
            activity: vec!["Initiating backup process".into()],
            r#type: JobType::K8sSnap as i32,
            ..Default::default()
        })
        .await;
    let updated = app
        .update(
            &created.id,
            pb::Job {
                state: JobState::Running as i32,
                ..Default::default()
            },
            &["state"],
            &["Backing up resources", "Snapshotting volumes"],
        )
        .await
        .expect("update");
    assert_eq!(
        updated.activity,
        vec![
            "Initiating backup process",
            "Backing up resources",
            "Snapshotting volumes"
        ]
    );
    assert_eq!(updated.state, JobState::Running as i32);
    assert_eq!(updated.revision, created.revision + 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn naming_output_only_or_derived_fields_in_the_mask_is_invalid_and_writes_nothing() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Pending)).await;
    for path in [
        "id",
        "created",
        "updated",
        "etag",
        "revision",
        "kube_copy_progress",
        "kube_snapshot_progress.total_pvs",
        "activity",
        "bogus",
    ] {
        let result = app
            .update(&created.id, pb::Job::default(), &[path], &[])
            .await;
        assert_eq!(code(result), Code::InvalidArgument, "{path}");
    }
    assert_eq!(app.get(&created.id).await, created);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_the_job_and_its_pvc_records() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let record = app
        .report(pvc(&created.id, "data", OpType::K8sCopy, PvcState::Active))
        .await
        .expect("report");
    app.client()
        .delete_job(pb::DeleteJobRequest {
            id: created.id.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete");
    assert_eq!(app.get_status(&created.id).await, Code::NotFound);
    let pvc = app
        .client()
        .get_pvc_progress(pb::GetPvcProgressRequest { id: record.id })
        .await;
    assert_eq!(code(pvc), Code::NotFound);
    let again = app
        .client()
        .delete_job(pb::DeleteJobRequest {
            id: created.id,
            etag: String::new(),
        })
        .await;
    assert_eq!(code(again), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_with_a_stale_etag_is_aborted_and_keeps_the_job() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Pending)).await;
    app.update(
        &created.id,
        pb::Job {
            name: Some("x".into()),
            ..Default::default()
        },
        &["name"],
        &[],
    )
    .await
    .expect("update");
    let stale = app
        .client()
        .delete_job(pb::DeleteJobRequest {
            id: created.id.clone(),
            etag: created.etag.clone(),
        })
        .await;
    assert_eq!(code(stale), Code::Aborted);
    assert_eq!(app.get_status(&created.id).await, Code::Ok);
    let fresh = app.get(&created.id).await;
    app.client()
        .delete_job(pb::DeleteJobRequest {
            id: created.id.clone(),
            etag: fresh.etag,
        })
        .await
        .expect("delete");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_job_is_not_found() {
    let app = spawn_app().await;
    assert_eq!(
        app.get_status("5f431ef6a7690b60975f6664").await,
        Code::NotFound
    );
    let update = app
        .set_state("5f431ef6a7690b60975f6664", JobState::Running)
        .await;
    assert_eq!(code(update), Code::NotFound);
    app.stop().await;
}
