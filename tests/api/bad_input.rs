//! Bad input of every kind gets a clear client error and changes nothing.

use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
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

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_is_resource_exhausted_and_writes_nothing() {
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
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "the request message is over the limit of 4194304 bytes"
    );
    assert_eq!(app.count_jobs().await, 0);
    // The server still answers.
    app.create(job(JobType::K8sSnap, JobState::Pending)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
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

/// Each malformed `where` or `sort` gets the one answer a user should get: INVALID_ARGUMENT
/// with a message that says what is wrong (the same texts REST shows in its 400 envelope).
#[tokio::test(flavor = "multi_thread")]
async fn each_malformed_where_and_sort_is_invalid_with_a_message_saying_why() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let wheres = [
        ("null", "where must be a JSON object"),
        ("1", "where must be a JSON object"),
        ("\"x\"", "where must be a JSON object"),
        ("[1]", "where must be a JSON object"),
        ("{", "where is not valid JSON"),
        (
            "{\"$and\":[]}",
            "where at $and: $and takes a non-empty list of queries",
        ),
        (
            "{\"$and\":{}}",
            "where at $and: $and takes a non-empty list of queries",
        ),
        ("{\"$or\":[1]}", "where at $or[0]: expected a query object"),
        (
            "{\"name\":{}}",
            "where at name: expected a value or an object of operators",
        ),
        (
            "{\"name\":[1]}",
            "where at name: name expects a string, got [1]",
        ),
        (
            "{\"name\":{\"$in\":1}}",
            "where at name.$in: $in takes a list of values",
        ),
        (
            "{\"start_time\":{\"$gt\":null}}",
            "where at start_time.$gt: cannot order against null",
        ),
        (
            "{\"start_time\":1.5}",
            "where at start_time: start_time expects an integer, got 1.5",
        ),
        (
            "{\"start_time\":1e30}",
            "where at start_time: start_time expects an integer",
        ),
        (
            "{\"name\":{\"$regex\":1}}",
            "where at name.$regex: $regex takes a string",
        ),
        (
            "{\"name\":{\"$regex\":\"(\"}}",
            "where at name.$regex: bad regular expression",
        ),
        (
            "{\"start_time\":{\"$regex\":\"1\"}}",
            "$regex works on text fields; start_time is not one",
        ),
        (
            "{\"name\":{\"$options\":\"i\"}}",
            "where at name.$options: $options needs a $regex beside it",
        ),
        (
            "{\"name\":{\"$regex\":\"a\",\"$options\":\"z\"}}",
            "$options takes a string of the flags i, m, s and x",
        ),
        (
            "{\"name\":{\"$exists\":\"yes\"}}",
            "where at name.$exists: $exists takes true or false",
        ),
        (
            "{\"name\":{\"$foo\":1}}",
            "where at name.$foo: unknown operator $foo",
        ),
        (
            "{\"$where\":\"1\"}",
            "$where (server-side JavaScript) is not supported",
        ),
        ("{\"$not\":1}", "where at $not: $not takes a query object"),
        (
            "{\"activity\":\"x\"}",
            "where at activity: unknown field \"activity\" of jobs",
        ),
        (
            "{\"kube_copy_progress\":{\"failed_pvs\":1}}",
            "unknown field \"kube_copy_progress\" of jobs",
        ),
        ("{\"\":1}", "where: unknown field \"\" of jobs"),
        (
            "{\"state\":\"RUNNIN\"}",
            "where at state: state has no value \"RUNNIN\" (did you mean RUNNING?); it is one of PENDING, RUNNING, COMPLETED, FAILED, SKIPPED, PARTIAL, CANCELLED",
        ),
        (
            "{\"type\":{\"$in\":[\"k8s_copy\"]}}",
            "where at type.$in: type has no value \"k8s_copy\" (did you mean K8S_COPY?)",
        ),
        (
            "{\"name\":\"\\u0000\"}",
            "where at name: text values cannot contain a NUL character",
        ),
    ];
    for (w, says) in wheres {
        let status = app.list(w, "").await.expect_err(w);
        assert_eq!(status.code(), Code::InvalidArgument, "{w}: {status:?}");
        assert!(
            status.message().contains(says),
            "{w}: {:?} does not say {says:?}",
            status.message()
        );
    }
    let sorts = [
        ("-", "sort \"-\" has an empty field name"),
        (",", "sort \",\" has an empty field name"),
        ("[", "is malformed (missing closing ])"),
        ("[(]", "is malformed (missing ))"),
        (
            "[(\"name\")]",
            "is malformed (expected (\"field\", direction))",
        ),
        ("[(\"name\", 2)]", "is malformed (the direction is 1 or -1)"),
        ("name,name", "sort names \"name\" twice"),
        ("-- drop", "sort: unknown field \"- drop\" of jobs"),
        ("activity", "sort: unknown field \"activity\" of jobs"),
    ];
    for (sort, says) in sorts {
        let status = app.list("", sort).await.expect_err(sort);
        assert_eq!(status.code(), Code::InvalidArgument, "{sort}: {status:?}");
        assert!(
            status.message().contains(says),
            "{sort}: {:?} does not say {says:?}",
            status.message()
        );
    }
    // A trailing comma is valid in the Python literal python-eve evaluates: the same order.
    let listed = app
        .list("", "[(\"name\", 1),]")
        .await
        .expect("a valid sort");
    assert_eq!(listed.total, 1);
    assert_eq!(app.get(&created.id).await, created);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_in_upper_case_is_malformed_not_another_spelling_of_a_job() {
    let app = spawn_app().await;
    let lower = "5f431ef6a7690b60975f6abc";
    let upper = "5F431EF6A7690B60975F6ABC";
    let created = app
        .create(pb::Job {
            id: lower.into(),
            ..job(JobType::K8sCopy, JobState::Running)
        })
        .await;
    let mut c = app.client();
    let says_lowercase = |result: Result<(), tonic::Status>, what: &str| {
        let status = result.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().contains("lowercase"), "{what}: {status:?}");
    };
    says_lowercase(
        c.get_job(pb::GetJobRequest { id: upper.into() })
            .await
            .map(|_| ()),
        "get",
    );
    says_lowercase(
        c.cancel_job(pb::CancelJobRequest { id: upper.into() })
            .await
            .map(|_| ()),
        "cancel",
    );
    says_lowercase(
        app.set_state(upper, JobState::Failed).await.map(|_| ()),
        "update",
    );
    says_lowercase(
        c.watch_job(pb::WatchJobRequest {
            id: upper.into(),
            resume_token: String::new(),
        })
        .await
        .map(|_| ()),
        "watch",
    );
    says_lowercase(
        c.create_job(pb::CreateJobRequest {
            job: Some(pb::Job {
                id: "5F431EF6A7690B60975F6DEF".into(),
                ..job(JobType::K8sCopy, JobState::Running)
            }),
        })
        .await
        .map(|_| ()),
        "create",
    );
    let rest = crate::http::get(app.addr, &format!("/api/v1/jobs/{upper}")).await;
    assert!(rest.error(404).contains("lowercase"));
    assert_eq!(app.get(lower).await, created, "the job is untouched");
    assert_eq!(app.count_jobs().await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn query_values_that_are_not_utf8_are_400_naming_the_parameter() {
    use crate::http::get;
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    for (target, names) in [
        (
            "/api/v1/jobs?where=%7B%22name%22%3A%22%FF%FE%22%7D",
            "the value of where",
        ),
        ("/api/v1/jobs?sort=%C3%28", "the value of sort"),
        ("/api/v1/jobs?projection=%FF", "the value of projection"),
        ("/api/v1/jobs?max_results=%FF", "the value of max_results"),
        ("/api/v1/jobs?page=%E2%82", "the value of page"),
        (
            "/api/v1/jobs?watch=1&resume_token=%FF",
            "the value of resume_token",
        ),
        ("/api/v1/jobs?%FF=1", "a query parameter's name"),
        ("/api/v1/kubepvcprogress?where=%FF", "the value of where"),
    ] {
        let reply = get(app.addr, target).await;
        let message = reply.error(400);
        assert!(message.contains(names), "{target}: {message:?}");
        assert!(message.contains("UTF-8"), "{target}: {message:?}");
    }
    let item = get(
        app.addr,
        &format!("/api/v1/jobs/{}?projection=%FF", created.id),
    )
    .await;
    assert!(item.error(400).contains("the value of projection"));
    // Raw quotes and braces, as real clients send them, and UTF-8 that is valid, still work.
    let raw = get(
        app.addr,
        r#"/api/v1/jobs?where={"name":"kubecluster-1598234357"}"#,
    )
    .await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.json()["_meta"]["total"], 1);
    let accented = get(
        app.addr,
        "/api/v1/jobs?where=%7B%22name%22%3A%22caf%C3%A9%22%7D",
    )
    .await;
    assert_eq!(accented.json()["_meta"]["total"], 0);
    app.stop().await;
}
