//! Bad input of every kind gets a clear client error and changes nothing.

use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn malformed_ids_are_invalid_in_every_rpc() {
    let app = spawn_app().await;
    let mut c = app.client();
    for bad in [
        "",
        "xyz",
        "5f431ef6a7690b60975f666",
        "5f431ef6a7690b60975f6664aa",
        "5f431ef6a7690b60975f666g",
        "'; DROP TABLE jobs; --",
    ] {
        assert_eq!(
            code(c.get_job(pb::GetJobRequest { id: bad.into() }).await),
            Code::InvalidArgument,
            "get {bad:?}"
        );
        assert_eq!(
            code(c.cancel_job(pb::CancelJobRequest { id: bad.into() }).await),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                c.delete_job(pb::DeleteJobRequest {
                    id: bad.into(),
                    etag: String::new()
                })
                .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(app.set_state(bad, JobState::Running).await),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                c.get_pvc_progress(pb::GetPvcProgressRequest { id: bad.into() })
                    .await
            ),
            Code::InvalidArgument
        );
        if !bad.is_empty() {
            let list = c
                .list_pvc_progress(pb::ListPvcProgressRequest {
                    job_id: bad.into(),
                    ..Default::default()
                })
                .await;
            assert_eq!(code(list), Code::InvalidArgument);
        }
    }
    assert_eq!(app.count_jobs().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn bad_creates_are_invalid_and_write_nothing() {
    let app = spawn_app().await;
    let mut c = app.client();
    let bad_jobs = [
        pb::Job {
            id: "not-hex".into(),
            ..Default::default()
        },
        pb::Job {
            cluster: Some("cluster-one".into()),
            ..Default::default()
        },
        pb::Job {
            backupdef: Some("".into()),
            ..Default::default()
        },
        pb::Job {
            r#type: 99,
            ..Default::default()
        },
        pb::Job {
            state: 42,
            ..Default::default()
        },
        pb::Job {
            num_total_resources: Some(-3),
            ..Default::default()
        },
        pb::Job {
            end_time: Some(-1),
            ..Default::default()
        },
        pb::Job {
            message: Some("x".repeat(20 * 1024)),
            ..Default::default()
        },
        pb::Job {
            activity: vec!["y".repeat(20 * 1024)],
            ..Default::default()
        },
        pb::Job {
            kube_copy_progress: Some(pb::KubeCopyProgress::default()),
            ..Default::default()
        },
        pb::Job {
            kube_snapshot_progress: Some(pb::KubeSnapshotProgress::default()),
            ..Default::default()
        },
    ];
    for job in bad_jobs {
        let shown = format!("{job:?}");
        let status = c
            .create_job(pb::CreateJobRequest { job: Some(job) })
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{}",
            &shown[..shown.len().min(200)]
        );
        assert!(!status.message().is_empty());
    }
    assert_eq!(
        code(c.create_job(pb::CreateJobRequest { job: None }).await),
        Code::InvalidArgument
    );
    assert_eq!(app.count_jobs().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_without_internal_error_and_writes_nothing() {
    let app = spawn_app().await;
    let huge = pb::Job {
        name: Some("z".repeat(5 * 1024 * 1024)),
        ..Default::default()
    };
    let status = app
        .client()
        .create_job(pb::CreateJobRequest { job: Some(huge) })
        .await
        .expect_err("refused");
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{status:?}"
    );
    assert_eq!(app.count_jobs().await, 0);
    // The server still answers.
    app.create(job(JobType::K8sSnap, JobState::Pending)).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_updates_are_invalid_and_change_nothing() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut c = app.client();
    let no_job = c.update_job(pb::UpdateJobRequest::default()).await;
    assert_eq!(code(no_job), Code::InvalidArgument);
    let unknown_state = app
        .update(&created.id, pb::Job::default(), &["state"], &[])
        .await;
    assert_eq!(
        code(unknown_state),
        Code::InvalidArgument,
        "state UNKNOWN is never stored"
    );
    let activity_replace = app
        .update(
            &created.id,
            pb::Job {
                activity: vec!["x".into()],
                ..Default::default()
            },
            &[],
            &[],
        )
        .await;
    assert_eq!(code(activity_replace), Code::InvalidArgument);
    let derived = app
        .update(
            &created.id,
            pb::Job {
                kube_copy_progress: Some(pb::KubeCopyProgress::default()),
                ..Default::default()
            },
            &[],
            &[],
        )
        .await;
    assert_eq!(code(derived), Code::InvalidArgument);
    let bad_cluster = app
        .update(
            &created.id,
            pb::Job {
                cluster: Some("nope".into()),
                ..Default::default()
            },
            &["cluster"],
            &[],
        )
        .await;
    assert_eq!(code(bad_cluster), Code::InvalidArgument);
    let long_line = app
        .update(
            &created.id,
            pb::Job::default(),
            &[],
            &[&"q".repeat(20 * 1024)],
        )
        .await;
    assert_eq!(code(long_line), Code::InvalidArgument);
    assert_eq!(app.get(&created.id).await, created);
    app.stop().await;
}

#[tokio::test]
async fn a_client_mistake_is_never_internal_or_unknown() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let wheres = [
        "null",
        "1",
        "\"x\"",
        "[1]",
        "{\"$and\":[]}",
        "{\"$and\":{}}",
        "{\"$or\":[1]}",
        "{\"name\":{}}",
        "{\"name\":[1]}",
        "{\"name\":{\"$in\":1}}",
        "{\"start_time\":{\"$gt\":null}}",
        "{\"start_time\":1.5}",
        "{\"start_time\":1e30}",
        "{\"name\":{\"$regex\":1}}",
        "{\"start_time\":{\"$regex\":\"1\"}}",
        "{\"name\":{\"$options\":\"i\"}}",
        "{\"name\":{\"$regex\":\"a\",\"$options\":\"z\"}}",
        "{\"name\":{\"$exists\":\"yes\"}}",
        "{\"$not\":1}",
        "{\"activity\":\"x\"}",
        "{\"kube_copy_progress\":{\"failed_pvs\":1}}",
        "{\"\":1}",
        "{\"name\":\"\\u0000\"}",
    ];
    for w in wheres {
        let result = app.list(w, "").await;
        let c = code(result);
        assert!(c == Code::InvalidArgument || c == Code::Ok, "{w}: {c:?}");
    }
    for sort in [
        "-",
        ",",
        "[",
        "[(]",
        "[(\"name\")]",
        "name,name",
        "[(\"name\", 1),]",
        "-- drop",
    ] {
        let c = code(app.list("", sort).await);
        assert!(c == Code::InvalidArgument || c == Code::Ok, "{sort}: {c:?}");
    }
    assert_eq!(app.get(&created.id).await, created);
    app.stop().await;
}
