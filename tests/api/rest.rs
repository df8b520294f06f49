//! The REST gateway against the documented JSON (`../shared/seed/jobs-api.txt`) and a port of
//! python-eve's GET test cases. Records are written through gRPC and read through REST, so both
//! transports are shown to share one application layer.

use serde_json::{Value, json};

use crate::helpers::{
    JobState, JobType, OpType, PvcState, TestApp, job, pvc, spawn_app, spawn_app_with, stats,
};
use crate::http::{Reply, encode, get, request};
use jobtrack::pb;

/// The seed's job example, with its missing commas put back.
const SEED_JOB: &str = r#"{
    "_created": "Mon, 24 Aug 2020 01:59:18 GMT",
    "_etag": "7a47976781bcbd0e5ad4936253dc6ffacc98ca86",
    "_id": "5f431ef6a7690b60975f6664",
    "_links": {
        "related": {
            "backupdef": {"href": "/v1/kubebackups/5f7721cb44b03575ec17a5af", "title": "Kubebackup"},
            "cluster": {"href": "/v1/kubeclusters/5f77218d44b03575ec17a5ae", "title": "Kubecluster"}
        },
        "self": {"href": "/v1/jobs/5f431ef6a7690b60975f6664", "title": "Job"}
    },
    "_updated": "Mon, 24 Aug 2020 01:59:29 GMT",
    "activity": ["Initiating backup process", "Backing up resources"],
    "backupdef": "5f7721cb44b03575ec17a5af",
    "backupdef_name": "testbackup",
    "cluster": "5f77218d44b03575ec17a5ae",
    "cluster_name": "testcluster",
    "end_time": 1598234368,
    "message": "Backup Successful",
    "name": "kubecluster-1598234357",
    "num_backup_resources": 377,
    "num_total_resources": 377,
    "start_time": 1598234357,
    "state": "COMPLETED",
    "kube_copy_progress": {
        "stats": {
            "estimated_size": 10, "estimated_number_of_files": 10, "io_size": 10,
            "io_number_of_files": 10, "transferred_size": 10, "transferred_number_of_files": 10
        },
        "total_pvs": 10, "pending_pvs": 10, "active_pvs": 10, "completed_pvs": 10, "failed_pvs": 10
    },
    "kube_snapshot_progress": {
        "total_pvs": 10, "pending_pvs": 10, "active_pvs": 10, "completed_pvs": 10,
        "failed_pvs": 10, "skipped_pvs": 10
    }
}"#;

/// The seed's PVC record example.
const SEED_PVC: &str = r#"{
    "_id": "60b761c8ce3d70a3e664eb83",
    "name": "csi-pvc",
    "namespace": "test-csi-snapshot",
    "job_id": "60b76183a8c4c6a35a28dbdf",
    "state": "COMPLETED",
    "start_time": 1622630856,
    "end_time": 1622630856,
    "message": "Data Transfer Successful",
    "op_type": "K8S_COPY",
    "snapshot_progress_percentage": 100,
    "stats": {
        "estimated_size": 10, "estimated_number_of_files": 10, "io_size": 10,
        "io_number_of_files": 10, "transferred_size": 10, "transferred_number_of_files": 10
    },
    "_updated": "Wed, 02 Jun 2021 10:47:36 GMT",
    "_created": "Wed, 02 Jun 2021 10:47:36 GMT",
    "_etag": "be5df26661723c5d539aa8c0a026021a41dd5a2d",
    "_links": {
        "self": {"title": "Kubepvcprogre", "href": "/v1/kubepvcprogress/60b761c8ce3d70a3e664eb83"},
        "related": {"job_id": {"title": "Job", "href": "/v1/jobs/60b76183a8c4c6a35a28dbdf"}}
    }
}"#;

fn is_http_date(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        httpdate::parse_http_date(s).is_ok() && s.ends_with(" GMT") && s.len() == 29
    })
}

fn is_hex(v: &Value, len: usize) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Compares `actual` with the documented `expected` key by key. Keys listed in `generated` are
/// made by the server (times, etags, ids) and are checked for their form only.
fn assert_documented(actual: &Value, expected: &Value, generated: &[&str], path: &str) {
    let (Some(a), Some(e)) = (actual.as_object(), expected.as_object()) else {
        assert_eq!(actual, expected, "at {path}");
        return;
    };
    let mut a_keys: Vec<_> = a.keys().collect();
    let mut e_keys: Vec<_> = e.keys().collect();
    a_keys.sort();
    e_keys.sort();
    assert_eq!(a_keys, e_keys, "keys at {path}");
    for (key, e_value) in e {
        let here = format!("{path}.{key}");
        if generated.contains(&here.as_str()) {
            continue;
        }
        assert_documented(&a[key], e_value, generated, &here);
    }
}

async fn create_seed_job(app: &TestApp) -> pb::Job {
    let created = app
        .create(pb::Job {
            id: "5f431ef6a7690b60975f6664".into(),
            name: Some("kubecluster-1598234357".into()),
            state: JobState::Running as i32,
            start_time: Some(1598234357),
            num_total_resources: Some(377),
            num_backup_resources: Some(377),
            cluster: Some("5f77218d44b03575ec17a5ae".into()),
            cluster_name: Some("testcluster".into()),
            backupdef: Some("5f7721cb44b03575ec17a5af".into()),
            backupdef_name: Some("testbackup".into()),
            ..Default::default()
        })
        .await;
    // Ten COPY records of one byte and one file each: the stats sum to the documented 10s.
    for i in 0..10 {
        let mut record = pvc(
            &created.id,
            &format!("copy-{i}"),
            OpType::K8sCopy,
            PvcState::Completed,
        );
        record.stats = Some(pb::TransferStats {
            estimated_size: Some(1),
            estimated_number_of_files: Some(1),
            io_size: Some(1),
            io_number_of_files: Some(1),
            transferred_size: Some(1),
            transferred_number_of_files: Some(1),
        });
        app.report(record).await.expect("report");
        let snap = pvc(
            &created.id,
            &format!("snap-{i}"),
            OpType::K8sSnap,
            PvcState::Completed,
        );
        app.report(snap).await.expect("report");
    }
    app.update(
        &created.id,
        pb::Job {
            state: JobState::Completed as i32,
            end_time: Some(1598234368),
            message: Some("Backup Successful".into()),
            ..Default::default()
        },
        &["state", "end_time", "message"],
        &["Initiating backup process", "Backing up resources"],
    )
    .await
    .expect("complete")
}

/// The parts of the documented aggregates that can be reproduced: the example's 10 records in
/// every state at once cannot exist (aggregates are derived from real records), so the counts by
/// state are checked for shape and consistency, and everything else for equality.
fn assert_aggregates(item: &Value) {
    let copy = &item["kube_copy_progress"];
    assert_eq!(copy["total_pvs"], 10);
    assert_eq!(copy["completed_pvs"], 10);
    for key in ["pending_pvs", "active_pvs", "failed_pvs"] {
        assert_eq!(copy[key], 0, "{key}");
    }
    let snap = &item["kube_snapshot_progress"];
    assert_eq!(snap["total_pvs"], 10);
    assert_eq!(snap["completed_pvs"], 10);
    for key in ["pending_pvs", "active_pvs", "failed_pvs", "skipped_pvs"] {
        assert_eq!(snap[key], 0, "{key}");
    }
}

const AGGREGATE_COUNTS: &[&str] = &[
    ".kube_copy_progress.total_pvs",
    ".kube_copy_progress.pending_pvs",
    ".kube_copy_progress.active_pvs",
    ".kube_copy_progress.completed_pvs",
    ".kube_copy_progress.failed_pvs",
    ".kube_snapshot_progress.total_pvs",
    ".kube_snapshot_progress.pending_pvs",
    ".kube_snapshot_progress.active_pvs",
    ".kube_snapshot_progress.completed_pvs",
    ".kube_snapshot_progress.failed_pvs",
    ".kube_snapshot_progress.skipped_pvs",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_job_reads_back_through_rest_exactly_as_documented() {
    let app = spawn_app().await;
    create_seed_job(&app).await;

    let reply = get(app.addr, "/api/v1/jobs?sort=-_created").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-total-count"), Some("1"));
    let body = reply.json();
    assert_eq!(
        body["_links"],
        json!({"parent": {"href": "/", "title": "home"},
               "self": {"href": "v1/jobs?sort=-_created", "title": "/v1/jobs"}})
    );
    assert_eq!(
        body["_meta"],
        json!({"max_results": 25, "page": 1, "total": 1})
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{body}");
    let item = &body["_items"][0];
    let expected: Value = serde_json::from_str(SEED_JOB).expect("the seed example");
    let mut generated = vec!["._created", "._updated", "._etag"];
    generated.extend(AGGREGATE_COUNTS);
    assert_documented(item, &expected, &generated, "");
    assert!(is_http_date(&item["_created"]) && is_http_date(&item["_updated"]));
    assert!(is_hex(&item["_etag"], 40));
    assert_aggregates(item);

    // The same job by its URL: the framework adds `parent` and `collection`, and an ETag.
    let one = get(app.addr, "/api/v1/jobs/5f431ef6a7690b60975f6664").await;
    assert_eq!(one.status, 200);
    let one_body = one.json();
    assert_eq!(
        one.header("etag").map(str::to_string),
        Some(format!("\"{}\"", one_body["_etag"].as_str().unwrap()))
    );
    assert_eq!(
        one_body["_links"]["parent"],
        json!({"href": "/", "title": "home"})
    );
    assert_eq!(
        one_body["_links"]["collection"],
        json!({"href": "v1/jobs", "title": "/v1/jobs"})
    );
    let mut without_extra_links = one_body.clone();
    let links = without_extra_links["_links"].as_object_mut().unwrap();
    links.remove("parent");
    links.remove("collection");
    assert_eq!(&without_extra_links, item);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_pvc_record_reads_back_through_rest_exactly_as_documented() {
    let app = spawn_app().await;
    let owner = app
        .create(pb::Job {
            id: "60b76183a8c4c6a35a28dbdf".into(),
            r#type: JobType::K8sCopy as i32,
            state: JobState::Running as i32,
            ..Default::default()
        })
        .await;
    let mut record = pvc(&owner.id, "csi-pvc", OpType::K8sCopy, PvcState::Completed);
    record.namespace = "test-csi-snapshot".into();
    record.start_time = Some(1622630856);
    record.end_time = Some(1622630856);
    record.message = Some("Data Transfer Successful".into());
    record.snapshot_progress_percentage = Some(100);
    record.stats = Some(pb::TransferStats {
        estimated_size: Some(10),
        estimated_number_of_files: Some(10),
        io_size: Some(10),
        io_number_of_files: Some(10),
        transferred_size: Some(10),
        transferred_number_of_files: Some(10),
    });
    let written = app.report(record).await.expect("report");

    for target in [
        r#"/api/v1/kubepvcprogress?where={"job_id":"60b76183a8c4c6a35a28dbdf"}"#.to_string(),
        format!(
            "/api/v1/kubepvcprogress?where={}",
            encode(r#"{"job_id":"60b76183a8c4c6a35a28dbdf"}"#)
        ),
    ] {
        let reply = get(app.addr, &target).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-total-count"), Some("1"));
        let body = reply.json();
        let items = body.as_array().expect("a bare JSON array, as documented");
        assert_eq!(items.len(), 1);
        let item = &items[0];
        let expected: Value = serde_json::from_str(SEED_PVC).expect("the seed example");
        assert_documented(
            item,
            &expected,
            &[
                "._id",
                "._created",
                "._updated",
                "._etag",
                "._links.self.href",
            ],
            "",
        );
        assert_eq!(item["_id"], written.id.as_str());
        assert_eq!(
            item["_links"]["self"]["href"],
            format!("/v1/kubepvcprogress/{}", written.id)
        );
        assert!(is_hex(&item["_etag"], 40) && is_http_date(&item["_created"]));
    }

    let one = get(app.addr, &format!("/api/v1/kubepvcprogress/{}", written.id)).await;
    assert_eq!(one.status, 200);
    let body = one.json();
    assert_eq!(body["name"], "csi-pvc");
    assert_eq!(
        body["_links"]["collection"],
        json!({"href": "v1/kubepvcprogress", "title": "/v1/kubepvcprogress"})
    );
    assert_eq!(
        one.header("etag").map(str::to_string),
        Some(format!("\"{}\"", written.etag))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_collection_answers_with_no_items_and_a_zero_total() {
    let app = spawn_app().await;
    let reply = get(app.addr, "/api/v1/jobs").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-total-count"), Some("0"));
    let body = reply.json();
    assert_eq!(body["_items"], json!([]));
    assert_eq!(
        body["_meta"],
        json!({"max_results": 25, "page": 1, "total": 0})
    );
    assert_eq!(
        body["_links"],
        json!({"parent": {"href": "/", "title": "home"},
               "self": {"href": "v1/jobs", "title": "/v1/jobs"}})
    );
    let pvcs = get(app.addr, "/api/v1/kubepvcprogress").await;
    assert_eq!(pvcs.json(), json!([]));
    assert_eq!(pvcs.header("x-total-count"), Some("0"));
    app.stop().await;
}

async fn seed_jobs(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let mut j = job(JobType::K8sSnap, JobState::Pending);
        j.name = Some(format!("job-{i:03}"));
        ids.push(app.create(j).await.id);
    }
    ids
}

fn link(body: &Value, rel: &str) -> Option<String> {
    body["_links"][rel]["href"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hundred_and_one_jobs_page_like_the_framework_with_next_prev_and_last() {
    let app = spawn_app().await;
    let ids = seed_jobs(&app, 101).await;

    let first = get(app.addr, "/api/v1/jobs").await.json();
    assert_eq!(
        first["_meta"],
        json!({"max_results": 25, "page": 1, "total": 101})
    );
    assert_eq!(link(&first, "next").as_deref(), Some("v1/jobs?page=2"));
    assert_eq!(link(&first, "last").as_deref(), Some("v1/jobs?page=5"));
    assert_eq!(link(&first, "prev"), None);
    assert_eq!(first["_links"]["next"]["title"], "next page");
    assert_eq!(first["_links"]["last"]["title"], "last page");
    // Page 1 named explicitly is the same page.
    assert_eq!(get(app.addr, "/api/v1/jobs?page=1").await.json(), first);

    let second = get(app.addr, "/api/v1/jobs?page=2").await.json();
    assert_eq!(link(&second, "next").as_deref(), Some("v1/jobs?page=3"));
    assert_eq!(link(&second, "prev").as_deref(), Some("v1/jobs"));
    assert_eq!(second["_links"]["prev"]["title"], "previous page");
    assert_eq!(link(&second, "self").as_deref(), Some("v1/jobs?page=2"));

    let fifth = get(app.addr, "/api/v1/jobs?page=5").await.json();
    assert_eq!(link(&fifth, "prev").as_deref(), Some("v1/jobs?page=4"));
    assert_eq!(link(&fifth, "next"), None);
    assert_eq!(link(&fifth, "last"), None);
    assert_eq!(fifth["_items"].as_array().unwrap().len(), 1);

    // Following `next` from the first page meets every job once, in creation order.
    let mut seen = Vec::new();
    let mut target = Some("/api/v1/jobs?max_results=7&sort=_id".to_string());
    while let Some(t) = target {
        let reply = get(app.addr, &t).await;
        assert_eq!(reply.header("x-total-count"), Some("101"));
        let body = reply.json();
        for item in body["_items"].as_array().unwrap() {
            seen.push(item["_id"].as_str().unwrap().to_string());
        }
        target = link(&body, "next").map(|href| format!("/api/{href}"));
    }
    assert_eq!(seen, ids);

    // Past the last page: no items, still the total and a way back.
    let beyond = get(app.addr, "/api/v1/jobs?page=9").await.json();
    assert_eq!(beyond["_items"], json!([]));
    assert_eq!(beyond["_meta"]["total"], 101);
    assert_eq!(link(&beyond, "prev").as_deref(), Some("v1/jobs?page=8"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_links_carry_the_query_raw_as_the_framework_writes_it() {
    let app = spawn_app().await;
    seed_jobs(&app, 12).await;
    let target = r#"/api/v1/jobs?where={"state":"PENDING"}&sort=-name&max_results=5&page=2&x=1"#;
    let reply = get(app.addr, target).await;
    let body = reply.json();
    assert_eq!(
        link(&body, "self").as_deref(),
        Some(r#"v1/jobs?max_results=5&where={"state":"PENDING"}&sort=-name&page=2&x=1"#)
    );
    assert_eq!(
        link(&body, "next").as_deref(),
        Some(r#"v1/jobs?max_results=5&where={"state":"PENDING"}&sort=-name&page=3&x=1"#)
    );
    assert_eq!(
        link(&body, "prev").as_deref(),
        Some(r#"v1/jobs?max_results=5&where={"state":"PENDING"}&sort=-name&x=1"#)
    );
    assert_eq!(body["_items"][0]["name"], "job-006");
    // The Link header has the same pages, as absolute, fully escaped URI references.
    let header = reply.header("link").expect("a Link header");
    assert!(header.contains(
        "</api/v1/jobs?max_results=5&where=%7B%22state%22:%22PENDING%22%7D&sort=-name&page=3&x=1>; rel=\"next\""
    ), "{header}");
    assert!(header.contains("rel=\"prev\"") && header.contains("rel=\"last\""));
    // Following the header's next link gives the next page.
    let next = header
        .split(", ")
        .find(|l| l.ends_with("rel=\"next\""))
        .unwrap();
    let next_target = next.trim_start_matches('<').split('>').next().unwrap();
    let third = get(app.addr, next_target).await.json();
    assert_eq!(third["_meta"]["page"], 3);
    assert_eq!(third["_items"][0]["name"], "job-001");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_results_defaults_to_25_and_is_clamped_to_the_limit() {
    let app = spawn_app_with(|c| c.max_page_size = 30).await;
    seed_jobs(&app, 40).await;
    let count = |body: &Value| body["_items"].as_array().unwrap().len();
    let ten = get(app.addr, "/api/v1/jobs?max_results=10").await.json();
    assert_eq!(count(&ten), 10);
    assert_eq!(ten["_meta"]["max_results"], 10);
    let zero = get(app.addr, "/api/v1/jobs?max_results=0").await.json();
    assert_eq!(count(&zero), 25);
    let big = get(app.addr, "/api/v1/jobs?max_results=31").await.json();
    assert_eq!(count(&big), 30);
    assert_eq!(big["_meta"]["max_results"], 30);
    assert_eq!(
        link(&big, "next").as_deref(),
        Some("v1/jobs?max_results=30&page=2")
    );
    let huge = get(app.addr, "/api/v1/jobs?max_results=99999999999999")
        .await
        .json();
    assert_eq!(count(&huge), 30);
    for bad in [
        "max_results=-1",
        "max_results=ten",
        "max_results=1.5",
        "page=0",
        "page=-2",
        "page=two",
    ] {
        let message = get(app.addr, &format!("/api/v1/jobs?{bad}"))
            .await
            .error(400);
        let name = bad.split('=').next().unwrap();
        assert!(message.contains(name), "{bad}: {message}");
    }
    app.stop().await;
}

/// A small fleet with a value of every kind to filter on.
async fn seed_fleet(app: &TestApp) -> Vec<pb::Job> {
    let specs = [
        (
            "alpha",
            JobType::K8sSnap,
            JobState::Running,
            Some(100),
            "5f77218d44b03575ec17a5ae",
        ),
        (
            "beta",
            JobType::K8sCopy,
            JobState::Pending,
            Some(200),
            "5f77218d44b03575ec17a5ae",
        ),
        (
            "gamma",
            JobType::Restore,
            JobState::Failed,
            None,
            "5f77218d44b03575ec17a5af",
        ),
        (
            "delta",
            JobType::K8sCopy,
            JobState::Completed,
            Some(400),
            "5f77218d44b03575ec17a5af",
        ),
    ];
    let mut jobs = Vec::new();
    for (name, t, s, start, cluster) in specs {
        let mut j = job(t, s);
        j.name = Some(name.into());
        j.start_time = start;
        j.cluster = Some(cluster.into());
        jobs.push(app.create(j).await);
    }
    jobs
}

async fn names(app: &TestApp, where_: &str, sort: &str) -> Vec<String> {
    let mut out = None;
    for target in [
        // Raw: only a space cannot go on the wire as it is (it ends the request target).
        format!("/api/v1/jobs?where={where_}&sort={sort}").replace(' ', "%20"),
        format!(
            "/api/v1/jobs?where={}&sort={}",
            encode(where_),
            encode(sort)
        ),
    ] {
        let reply = get(app.addr, &target).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        let names: Vec<String> = reply.json()["_items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect();
        if let Some(previous) = &out {
            assert_eq!(previous, &names, "raw and encoded differ for {where_}");
        }
        out = Some(names);
    }
    out.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_where_operator_works_raw_and_url_encoded() {
    let app = spawn_app().await;
    let jobs = seed_fleet(&app).await;
    let cases: &[(&str, &[&str])] = &[
        (r#"{"state":"RUNNING"}"#, &["alpha"]),
        (r#"{"state":{"$eq":"PENDING"}}"#, &["beta"]),
        (r#"{"type":{"$ne":"K8S_COPY"}}"#, &["alpha", "gamma"]),
        (r#"{"start_time":{"$gt":100}}"#, &["beta", "delta"]),
        (r#"{"start_time":{"$gte":200}}"#, &["beta", "delta"]),
        (r#"{"start_time":{"$lt":200}}"#, &["alpha"]),
        (r#"{"start_time":{"$lte":200}}"#, &["alpha", "beta"]),
        (
            r#"{"state":{"$in":["FAILED","COMPLETED"]}}"#,
            &["delta", "gamma"],
        ),
        (
            r#"{"type":{"$nin":["K8S_COPY","AGENT_UPDATE"]}}"#,
            &["alpha", "gamma"],
        ),
        (r#"{"start_time":{"$exists":false}}"#, &["gamma"]),
        (
            r#"{"$and":[{"cluster":"5f77218d44b03575ec17a5ae"},{"type":"K8S_COPY"}]}"#,
            &["beta"],
        ),
        (
            r#"{"$or":[{"name":"alpha"},{"name":"delta"}]}"#,
            &["alpha", "delta"],
        ),
        (
            r#"{"$nor":[{"name":"alpha"},{"name":"delta"}]}"#,
            &["beta", "gamma"],
        ),
        (
            r#"{"name":{"$not":{"$regex":"^[ab]"}}}"#,
            &["delta", "gamma"],
        ),
        (
            r#"{"name":{"$regex":"a$"}}"#,
            &["alpha", "beta", "delta", "gamma"],
        ),
        (r#"{"name":{"$regex":"^(g|d)"}}"#, &["delta", "gamma"]),
        (r#"{"start_time":{"$gt":100,"$lt":400}}"#, &["beta"]),
    ];
    for (where_, expected) in cases {
        assert_eq!(&names(&app, where_, "name").await, expected, "{where_}");
    }
    let id = &jobs[2].id;
    assert_eq!(
        names(&app, &format!(r#"{{"_id":"{id}"}}"#), "").await,
        ["gamma"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sort_forms_order_alike_raw_and_encoded() {
    let app = spawn_app().await;
    seed_fleet(&app).await;
    assert_eq!(
        names(&app, "{}", "-name").await,
        ["gamma", "delta", "beta", "alpha"]
    );
    assert_eq!(
        names(&app, "{}", r#"[("name", -1)]"#).await,
        ["gamma", "delta", "beta", "alpha"]
    );
    assert_eq!(
        names(&app, "{}", r#"[("type", 1), ("name", -1)]"#).await,
        names(&app, "{}", "type,-name").await
    );
    // A missing start_time sorts first ascending.
    assert_eq!(
        names(&app, "{}", "start_time").await,
        ["gamma", "alpha", "beta", "delta"]
    );
    assert_eq!(
        names(&app, "", "").await,
        ["alpha", "beta", "gamma", "delta"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_where_sort_and_projection_are_400s_that_say_what_to_fix() {
    let app = spawn_app().await;
    seed_fleet(&app).await;
    let cases = [
        (r#"where={"state":"RUNNING""#, "where"),
        (r#"where={"nmae":"x"}"#, "nmae"),
        (r#"where={"name":{"$foo":1}}"#, "$foo"),
        (r#"where={"$where":"this.a"}"#, "$where"),
        (r#"where={"start_time":"yesterday"}"#, "start_time"),
        ("where=[1]", "where"),
        ("sort=-nmae", "nmae"),
        (r#"sort=[("name", 2)]"#, "sort"),
        (r#"projection={"nmae":1}"#, "nmae"),
        (r#"projection={"name":1,"state":0}"#, "projection"),
        ("projection=name", "projection"),
        ("where={}&where={}", "twice"),
    ];
    for (query, hint) in cases {
        let reply = get(
            app.addr,
            &format!("/api/v1/jobs?{query}").replace(' ', "%20"),
        )
        .await;
        let message = reply.error(400);
        assert!(message.contains(hint), "{query}: {message}");
        let encoded = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                format!("{k}={}", encode(v))
            })
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(
            get(app.addr, &format!("/api/v1/jobs?{encoded}"))
                .await
                .error(400),
            message
        );
    }
    let message = get(app.addr, r#"/api/v1/kubepvcprogress?where={"job":"x"}"#)
        .await
        .error(400);
    assert!(message.contains("job"), "{message}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn projection_narrows_items_but_keeps_the_framework_fields() {
    let app = spawn_app().await;
    let jobs = seed_fleet(&app).await;
    let only = get(
        app.addr,
        r#"/api/v1/jobs?projection={"name":1}&sort=name&max_results=1"#,
    )
    .await
    .json();
    let item = only["_items"][0].as_object().unwrap();
    let mut keys: Vec<_> = item.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["_created", "_etag", "_id", "_links", "_updated", "name"]
    );
    assert_eq!(
        link(&only, "next").as_deref(),
        Some(r#"v1/jobs?max_results=1&sort=name&page=2&projection={"name":1}"#)
    );
    let but = get(
        app.addr,
        &format!(
            "/api/v1/jobs/{}?projection={}",
            jobs[0].id,
            encode(r#"{"cluster":0}"#)
        ),
    )
    .await
    .json();
    assert!(but.get("cluster").is_none() && but.get("name").is_some());
    assert!(but["_links"].get("related").is_none(), "{but}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_not_found_forms_all_answer_404_in_the_envelope() {
    let app = spawn_app().await;
    let running = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    for target in [
        "/api/v1/jobs/5f431ef6a7690b60975f6664".to_string(),
        "/api/v1/jobs/not-an-id".to_string(),
        "/api/v1/jobs/5f431ef6a7690b60975f666".to_string(),
        "/api/v1/jobs/%ff%fe".to_string(),
        "/api/v1/kubepvcprogress/5f431ef6a7690b60975f6664".to_string(),
        "/api/v1/kubepvcprogress/zzz".to_string(),
        "/api/v1/nothing".to_string(),
        "/api/v2/jobs".to_string(),
        format!("/api/v1/jobs/{}/action/pause", running.id),
    ] {
        let message = get(app.addr, &target).await.error(404);
        assert!(!message.contains("internal"), "{target}: {message}");
    }
    let message = request(
        app.addr,
        "POST",
        "/api/v1/jobs/nope/action/cancel",
        &[],
        b"",
    )
    .await
    .error(404);
    assert!(message.contains("nope"), "{message}");
    // Trailing slashes are the same resources, as the framework's.
    assert_eq!(get(app.addr, "/api/v1/jobs/").await.status, 200);
    assert_eq!(
        get(app.addr, &format!("/api/v1/jobs/{}/", running.id))
            .await
            .status,
        200
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etag_in_any_form_gives_304_with_an_empty_body() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let target = format!("/api/v1/jobs/{}", created.id);
    let etag = created.etag.clone();
    for value in [
        format!("\"{etag}\""),
        etag.clone(),
        format!("W/\"{etag}\""),
        format!("\"0000\", \"{etag}\""),
        "*".to_string(),
    ] {
        let reply = request(app.addr, "GET", &target, &[("If-None-Match", &value)], b"").await;
        assert_eq!(reply.status, 304, "{value}");
        assert!(reply.body.is_empty());
        assert_eq!(
            reply.header("etag").map(str::to_string),
            Some(format!("\"{etag}\""))
        );
    }
    let stale = request(
        app.addr,
        "GET",
        &target,
        &[("If-None-Match", "\"0000\"")],
        b"",
    )
    .await;
    assert_eq!(stale.status, 200);

    // After a change the old etag no longer matches, and the new one is served.
    let changed = app
        .update(
            &created.id,
            pb::Job {
                message: Some("moving".into()),
                ..Default::default()
            },
            &["message"],
            &[],
        )
        .await
        .expect("update");
    let reply = request(
        app.addr,
        "GET",
        &target,
        &[("If-None-Match", &format!("\"{etag}\""))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["_etag"], changed.etag.as_str());

    // If-Modified-Since: 304 when not modified since, 200 when modified, malformed ignored.
    let last_modified = reply
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();
    let since = |v: &str| {
        let header = [("If-Modified-Since", v.to_string())];
        let target = target.clone();
        async move {
            let headers: Vec<(&str, &str)> = header.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(app.addr, "GET", &target, &headers, b"").await
        }
    };
    assert_eq!(since(&last_modified).await.status, 304);
    assert_eq!(since("Sun, 06 Nov 2033 08:49:37 GMT").await.status, 304);
    assert_eq!(since("Sun, 06 Nov 1994 08:49:37 GMT").await.status, 200);
    assert_eq!(since("yesterday at noon").await.status, 200);
    assert_eq!(since("").await.status, 200);
    // If-None-Match decides when both are sent.
    let both = request(
        app.addr,
        "GET",
        &target,
        &[
            ("If-None-Match", "\"0000\""),
            ("If-Modified-Since", &last_modified),
        ],
        b"",
    )
    .await;
    assert_eq!(both.status, 200);

    // The same for a PVC record.
    let record = app
        .report(pvc(&created.id, "data", OpType::K8sCopy, PvcState::Active))
        .await
        .expect("report");
    let pvc_target = format!("/api/v1/kubepvcprogress/{}", record.id);
    let reply = request(
        app.addr,
        "GET",
        &pvc_target,
        &[("If-None-Match", &format!("W/\"{}\"", record.etag))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 304);
    app.stop().await;
}

fn without_date(reply: &Reply) -> Vec<(String, String)> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n != "date")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn head_answers_every_get_with_the_same_headers_and_no_body() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let record = app
        .report(pvc(&created.id, "data", OpType::K8sCopy, PvcState::Active))
        .await
        .expect("report");
    for target in [
        "/api/v1/jobs".to_string(),
        r#"/api/v1/jobs?where={"state":"RUNNING"}"#.to_string(),
        format!("/api/v1/jobs/{}", created.id),
        "/api/v1/kubepvcprogress".to_string(),
        format!("/api/v1/kubepvcprogress/{}", record.id),
        "/api-docs".to_string(),
    ] {
        let got = get(app.addr, &target).await;
        let head = request(app.addr, "HEAD", &target, &[], b"").await;
        assert_eq!(head.status, 200, "{target}");
        assert_eq!(without_date(&head), without_date(&got), "{target}");
    }
    let missing = request(
        app.addr,
        "HEAD",
        "/api/v1/jobs/5f431ef6a7690b60975f6664",
        &[],
        b"",
    )
    .await;
    assert_eq!(missing.status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_methods_get_405_with_an_allow_header() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let cases = [
        ("POST", "/api/v1/jobs".to_string(), "GET, HEAD, OPTIONS"),
        (
            "PUT",
            format!("/api/v1/jobs/{}", created.id),
            "GET, HEAD, OPTIONS",
        ),
        (
            "PATCH",
            format!("/api/v1/jobs/{}", created.id),
            "GET, HEAD, OPTIONS",
        ),
        (
            "DELETE",
            format!("/api/v1/jobs/{}", created.id),
            "GET, HEAD, OPTIONS",
        ),
        (
            "DELETE",
            "/api/v1/kubepvcprogress".to_string(),
            "GET, HEAD, OPTIONS",
        ),
        (
            "GET",
            format!("/api/v1/jobs/{}/action/cancel", created.id),
            "POST, OPTIONS",
        ),
    ];
    for (method, target, allow) in cases {
        let reply = request(app.addr, method, &target, &[], b"").await;
        let message = reply.error(405);
        assert_eq!(reply.header("allow"), Some(allow), "{method} {target}");
        assert!(message.contains(allow), "{message}");
    }
    let options = request(app.addr, "OPTIONS", "/api/v1/jobs", &[], b"").await;
    assert_eq!(options.status, 204);
    assert_eq!(options.header("allow"), Some("GET, HEAD, OPTIONS"));
    // Nothing was changed by any of them.
    assert_eq!(app.get(&created.id).await, created);
    app.stop().await;
}

async fn cancel(app: &TestApp, id: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request(
        app.addr,
        "POST",
        &format!("/api/v1/jobs/{id}/action/cancel"),
        headers,
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_through_rest_follows_the_same_rules_as_grpc() {
    let app = spawn_app().await;
    let running = app.create(job(JobType::K8sSnap, JobState::Running)).await;
    let reply = cancel(&app, &running.id, &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["state"], "CANCELLED");
    assert!(body["end_time"].is_i64());
    let line = body["activity"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(line.contains("REST client"), "{line}");
    assert_eq!(
        reply.header("etag").map(str::to_string),
        Some(format!("\"{}\"", body["_etag"].as_str().unwrap()))
    );
    let stored = app.get(&running.id).await;
    assert_eq!(stored.state, JobState::Cancelled as i32);

    // Again: succeeds and changes nothing.
    let again = cancel(&app, &running.id, &[], b"").await;
    assert_eq!(again.status, 200);
    assert_eq!(app.get(&running.id).await, stored);

    // Other states and types: 409, naming the state; nothing written.
    let pending = app.create(job(JobType::K8sCopy, JobState::Pending)).await;
    let message = cancel(&app, &pending.id, &[], b"").await.error(409);
    assert!(message.contains("PENDING"), "{message}");
    assert_eq!(app.get(&pending.id).await, pending);
    let restore = app.create(job(JobType::Restore, JobState::Running)).await;
    let message = cancel(&app, &restore.id, &[], b"").await.error(409);
    assert!(message.contains("RESTORE"), "{message}");
    assert_eq!(app.get(&restore.id).await, restore);

    cancel(&app, "5f431ef6a7690b60975f6664", &[], b"")
        .await
        .error(404);
    cancel(&app, "5f431ef6", &[], b"").await.error(404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_refuses_bodies_and_stale_etags_and_changes_nothing() {
    let app = spawn_app().await;
    let running = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let big = vec![b' '; 65 * 1024];
    cancel(&app, &running.id, &[], &big).await.error(413);
    cancel(
        &app,
        &running.id,
        &[("Content-Type", "application/json")],
        br#"{"reason":"x"}"#,
    )
    .await
    .error(400);
    let message = cancel(&app, &running.id, &[("If-Match", "\"0000\"")], b"")
        .await
        .error(412);
    assert!(message.contains("etag"), "{message}");
    cancel(&app, &running.id, &[("If-Match", "W/\"0000\"")], b"")
        .await
        .error(400);
    assert_eq!(app.get(&running.id).await, running);

    let ok = cancel(
        &app,
        &running.id,
        &[("If-Match", &format!("\"{}\"", running.etag))],
        b"{}",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["state"], "CANCELLED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_terraform_providers_request_reads_the_newest_matching_job_raw_and_encoded() {
    let app = spawn_app().await;
    let backupdef = "5f7721cb44b03575ec17a5af";
    let other = "5f7721cb44b03575ec17a5b0";
    let specs = [
        ("old", JobType::K8sSnap, backupdef, 1_600_000_100),
        ("newest", JobType::K8sCopy, backupdef, 1_600_000_500),
        ("deletion", JobType::DeleteBackup, backupdef, 1_600_000_900),
        ("other-def", JobType::K8sSnap, other, 1_600_000_800),
        ("too-early", JobType::K8sSnap, backupdef, 1_599_999_999),
        ("middle", JobType::K8sSnap, backupdef, 1_600_000_300),
    ];
    for (name, t, def, start) in specs {
        let mut j = job(t, JobState::Completed);
        j.name = Some(name.into());
        j.backupdef = Some(def.into());
        j.start_time = Some(start);
        app.create(j).await;
    }
    let where_ = format!(
        r#"{{"type":{{"$nin":["DELETE_BACKUP","AWSRDS_BACKUP_DELETE","AGENT_UPDATE"]}},"backupdef":"{backupdef}","start_time":{{"$gt":1600000000}}}}"#
    );
    for target in [
        format!("/api/v1/jobs?where={where_}&sort=-start_time&page=1&max_results=5"),
        format!(
            "/api/v1/jobs?where={}&sort=-start_time&page=1&max_results=5",
            encode(&where_)
        ),
    ] {
        let reply = get(app.addr, &target).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["_items"][0]["name"], "newest");
        let names: Vec<_> = body["_items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].clone())
            .collect();
        assert_eq!(names, ["newest", "middle", "old"]);
        assert_eq!(
            body["_meta"],
            json!({"max_results": 5, "page": 1, "total": 3})
        );
        assert_eq!(
            link(&body, "self"),
            Some(format!(
                "v1/jobs?max_results=5&where={where_}&sort=-start_time"
            ))
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pvc_records_page_with_link_headers_and_the_total() {
    let app = spawn_app().await;
    let owner = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let stranger = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    for i in 0..7 {
        let mut record = pvc(
            &owner.id,
            &format!("data-{i}"),
            OpType::K8sCopy,
            PvcState::Active,
        );
        record.stats = Some(stats(i * 100, i));
        app.report(record).await.expect("report");
    }
    app.report(pvc(
        &stranger.id,
        "other",
        OpType::K8sSnap,
        PvcState::Pending,
    ))
    .await
    .expect("report");

    let base = format!(
        r#"/api/v1/kubepvcprogress?where={{"job_id":"{}"}}&sort=name&max_results=3"#,
        owner.id
    );
    let first = get(app.addr, &base).await;
    assert_eq!(first.header("x-total-count"), Some("7"));
    let names = |r: &Reply| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&first), ["data-0", "data-1", "data-2"]);
    let header = first.header("link").expect("Link").to_string();
    assert!(
        header.contains("rel=\"next\"")
            && header.contains("rel=\"last\"")
            && !header.contains("rel=\"prev\""),
        "{header}"
    );
    let target_of = |header: &str, rel: &str| -> String {
        let link = header
            .split(", ")
            .find(|l| l.ends_with(&format!("rel=\"{rel}\"")))
            .unwrap();
        link.trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_string()
    };
    let second = get(app.addr, &target_of(&header, "next")).await;
    assert_eq!(names(&second), ["data-3", "data-4", "data-5"]);
    let second_links = second.header("link").unwrap().to_string();
    assert!(second_links.contains("rel=\"prev\""));
    let last = get(app.addr, &target_of(&header, "last")).await;
    assert_eq!(names(&last), ["data-6"]);
    assert!(!last.header("link").unwrap().contains("rel=\"next\""));
    let back = get(app.addr, &target_of(&second_links, "prev")).await;
    assert_eq!(names(&back), names(&first));

    // A PVC state filter in the documented hyphen form.
    app.report(pvc(
        &owner.id,
        "gone",
        OpType::K8sSnap,
        PvcState::SkippedMissingAccount,
    ))
    .await
    .expect("report");
    let skipped = get(
        app.addr,
        r#"/api/v1/kubepvcprogress?where={"state":"SKIPPED-MISSING-ACCOUNT"}"#,
    )
    .await;
    assert_eq!(names(&skipped), ["gone"]);
    assert_eq!(skipped.json()[0]["state"], "SKIPPED-MISSING-ACCOUNT");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_reads_see_a_grpc_write_at_once() {
    let app = spawn_app().await;
    for i in 0..20 {
        let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
        let total = get(
            app.addr,
            r#"/api/v1/jobs?where={"state":"RUNNING"}&max_results=1"#,
        )
        .await;
        assert_eq!(
            total.header("x-total-count"),
            Some((i + 1).to_string().as_str())
        );
        let one = get(app.addr, &format!("/api/v1/jobs/{}", created.id))
            .await
            .json();
        assert_eq!(one["_etag"], created.etag.as_str());
    }
    app.stop().await;
}
