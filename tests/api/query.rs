//! Each `where` operator and both `sort` forms, through ListJobs and ListPvcProgress.

use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

/// Five jobs with distinct values; returns their ids in creation order.
async fn fixture(app: &TestApp) -> Vec<String> {
    let cluster_a = "5f77218d44b03575ec17a5ae";
    let cluster_b = "5f77218d44b03575ec17a5af";
    let specs = [
        (
            "alpha",
            JobType::K8sSnap,
            JobState::Running,
            Some(100),
            Some(cluster_a),
        ),
        (
            "beta",
            JobType::K8sCopy,
            JobState::Completed,
            Some(200),
            Some(cluster_a),
        ),
        (
            "gamma",
            JobType::Restore,
            JobState::Failed,
            Some(300),
            Some(cluster_b),
        ),
        (
            "delta",
            JobType::DeleteBackup,
            JobState::Pending,
            None,
            None,
        ),
        (
            "Alphabet",
            JobType::K8sCopy,
            JobState::Running,
            Some(500),
            Some(cluster_b),
        ),
    ];
    let mut ids = Vec::new();
    for (name, t, s, start, cluster) in specs {
        let job = pb::Job {
            name: Some(name.into()),
            r#type: t as i32,
            state: s as i32,
            start_time: start,
            cluster: cluster.map(str::to_string),
            ..Default::default()
        };
        ids.push(app.create(job).await.id);
    }
    ids
}

async fn names(app: &TestApp, where_: &str, sort: &str) -> Vec<String> {
    let page = app
        .list(where_, sort)
        .await
        .unwrap_or_else(|e| panic!("{where_} / {sort}: {e}"));
    assert_eq!(
        page.total as usize,
        page.jobs.len(),
        "{where_}: total counts all matches"
    );
    page.jobs
        .into_iter()
        .map(|j| j.name.unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_where_operator_selects_the_documented_jobs() {
    let app = spawn_app().await;
    let ids = fixture(&app).await;
    let cases: Vec<(String, Vec<&str>)> = vec![
        (r#"{"state":"RUNNING"}"#.into(), vec!["alpha", "Alphabet"]),
        (r#"{"state":{"$eq":"FAILED"}}"#.into(), vec!["gamma"]),
        (
            r#"{"state":{"$ne":"RUNNING"}}"#.into(),
            vec!["beta", "gamma", "delta"],
        ),
        (
            r#"{"start_time":{"$gt":200}}"#.into(),
            vec!["gamma", "Alphabet"],
        ),
        (
            r#"{"start_time":{"$gte":200}}"#.into(),
            vec!["beta", "gamma", "Alphabet"],
        ),
        (r#"{"start_time":{"$lt":200}}"#.into(), vec!["alpha"]),
        (
            r#"{"start_time":{"$lte":200}}"#.into(),
            vec!["alpha", "beta"],
        ),
        (
            r#"{"start_time":{"$gt":100,"$lt":500}}"#.into(),
            vec!["beta", "gamma"],
        ),
        (
            r#"{"type":{"$in":["K8S_COPY","RESTORE"]}}"#.into(),
            vec!["beta", "gamma", "Alphabet"],
        ),
        (
            r#"{"type":{"$nin":["DELETE_BACKUP","AWSRDS_BACKUP_DELETE","AGENT_UPDATE"]}}"#.into(),
            vec!["alpha", "beta", "gamma", "Alphabet"],
        ),
        (r#"{"start_time":{"$exists":false}}"#.into(), vec!["delta"]),
        (
            r#"{"cluster":{"$exists":true}}"#.into(),
            vec!["alpha", "beta", "gamma", "Alphabet"],
        ),
        (r#"{"cluster":null}"#.into(), vec!["delta"]),
        (
            r#"{"cluster":{"$ne":"5f77218d44b03575ec17a5ae"}}"#.into(),
            vec!["gamma", "delta", "Alphabet"],
        ),
        (
            r#"{"cluster":{"$nin":["5f77218d44b03575ec17a5ae"]}}"#.into(),
            vec!["gamma", "delta", "Alphabet"],
        ),
        (
            r#"{"$and":[{"state":"RUNNING"},{"type":"K8S_COPY"}]}"#.into(),
            vec!["Alphabet"],
        ),
        (
            r#"{"$or":[{"state":"FAILED"},{"type":"K8S_SNAP"}]}"#.into(),
            vec!["alpha", "gamma"],
        ),
        (
            r#"{"$nor":[{"state":"RUNNING"},{"state":"PENDING"}]}"#.into(),
            vec!["beta", "gamma"],
        ),
        (
            r#"{"start_time":{"$not":{"$gt":200}}}"#.into(),
            vec!["alpha", "beta", "delta"],
        ),
        (r#"{"name":{"$regex":"^al"}}"#.into(), vec!["alpha"]),
        (
            r#"{"name":{"$regex":"^al","$options":"i"}}"#.into(),
            vec!["alpha", "Alphabet"],
        ),
        (
            r#"{"state":"JOB_STATE_RUNNING","type":"JOB_TYPE_K8S_SNAP"}"#.into(),
            vec!["alpha"],
        ),
        (
            r#"{"type":{"$nin":["AGENT_UPDATE"]}}"#.into(),
            vec!["alpha", "beta", "gamma", "delta", "Alphabet"],
        ),
        (r#"{"state":"NO_SUCH_STATE"}"#.into(), vec![]),
        (format!(r#"{{"_id":"{}"}}"#, ids[2]), vec!["gamma"]),
        (
            format!(r#"{{"id":{{"$gt":"{}"}}}}"#, ids[2]),
            vec!["delta", "Alphabet"],
        ),
        (
            r#"{"_created":{"$gt":"Mon, 24 Aug 2020 01:59:18 GMT"}}"#.into(),
            vec!["alpha", "beta", "gamma", "delta", "Alphabet"],
        ),
        (
            r#"{"_created":{"$lt":"Mon, 24 Aug 2020 01:59:18 GMT"}}"#.into(),
            vec![],
        ),
        (
            r#"{"kube_copy_progress.total_pvs":{"$exists":false}}"#.into(),
            vec!["alpha", "beta", "gamma", "delta", "Alphabet"],
        ),
    ];
    for (where_, expected) in cases {
        assert_eq!(names(&app, &where_, "").await, expected, "where {where_}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dotted_paths_reach_into_the_derived_progress() {
    let app = spawn_app().await;
    let with_failures = app
        .create(pb::Job {
            name: Some("f".into()),
            ..job(JobType::K8sCopy, JobState::Running)
        })
        .await;
    let clean = app
        .create(pb::Job {
            name: Some("c".into()),
            ..job(JobType::K8sCopy, JobState::Running)
        })
        .await;
    app.report(pvc(
        &with_failures.id,
        "x",
        OpType::K8sCopy,
        PvcState::Failed,
    ))
    .await
    .expect("report");
    let mut ok = pvc(&clean.id, "y", OpType::K8sCopy, PvcState::Completed);
    ok.stats = Some(stats(5000, 3));
    app.report(ok).await.expect("report");
    assert_eq!(
        names(&app, r#"{"kube_copy_progress.failed_pvs":{"$gte":1}}"#, "").await,
        vec!["f"]
    );
    assert_eq!(
        names(
            &app,
            r#"{"kube_copy_progress.stats.transferred_size":{"$gt":1000}}"#,
            ""
        )
        .await,
        vec!["c"]
    );
    let pvcs = app
        .client()
        .list_pvc_progress(pb::ListPvcProgressRequest {
            r#where: r#"{"state":{"$in":["FAILED","SKIPPED-MISSING-ACCOUNT"]}}"#.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        pvcs.pvcs
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["x"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sort_forms_order_alike_and_missing_values_sort_first() {
    let app = spawn_app().await;
    fixture(&app).await;
    let plain = names(&app, "", "-start_time").await;
    let literal = names(&app, "", r#"[("start_time", -1)]"#).await;
    assert_eq!(plain, vec!["Alphabet", "gamma", "beta", "alpha", "delta"]);
    assert_eq!(plain, literal);
    assert_eq!(
        names(&app, "", "start_time").await,
        vec!["delta", "alpha", "beta", "gamma", "Alphabet"]
    );
    assert_eq!(
        names(&app, "", "state,name").await,
        vec!["beta", "gamma", "delta", "Alphabet", "alpha"]
    );
    assert_eq!(
        names(&app, "", r#"[("state", 1), ("name", -1)]"#).await,
        vec!["beta", "gamma", "delta", "alpha", "Alphabet"]
    );
    assert_eq!(
        names(&app, "", "").await,
        vec!["alpha", "beta", "gamma", "delta", "Alphabet"],
        "creation order by default"
    );
    assert_eq!(
        names(&app, "", "-_created").await,
        vec!["Alphabet", "delta", "gamma", "beta", "alpha"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_where_or_sort_is_invalid_with_a_message_that_says_what_is_wrong() {
    let app = spawn_app().await;
    let cases = [
        (
            r#"{"start_time":"yesterday"}"#,
            "",
            "start_time expects an integer",
        ),
        (r#"{"colour":"red"}"#, "", "unknown field \"colour\""),
        (r#"{"name":{"$like":"a"}}"#, "", "unknown operator $like"),
        (r#"{"$where":"this.a > 1"}"#, "", "$where"),
        ("{not json", "", "not valid JSON"),
        (
            r#"{"name":{"$regex":"(unclosed"}}"#,
            "",
            "bad regular expression",
        ),
        (r#"{"_created":{"$gt":"last tuesday"}}"#, "", "RFC 1123"),
        ("", "-colour", "unknown field \"colour\""),
        ("", r#"[("name", 3)]"#, "direction"),
    ];
    for (where_, sort, expected) in cases {
        let status = app.list(where_, sort).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{where_} {sort}");
        assert!(
            status.message().contains(expected),
            "{where_} {sort}: {}",
            status.message()
        );
    }
    let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(70 * 1024));
    assert_eq!(
        app.list(&long, "").await.expect_err("too long").code(),
        Code::InvalidArgument
    );
    app.stop().await;
}

/// Watchers filter in memory; lists filter in SQL. Both must decide alike, for every operator
/// and for missing fields.
#[tokio::test(flavor = "multi_thread")]
async fn in_memory_filtering_agrees_with_sql_for_every_operator_and_missing_fields() {
    use jobtrack::domain::query::{ListQuery, PageAt, parse_where};
    use jobtrack::domain::{Job, JobFields, NewJob, ObjectId};
    use jobtrack::store::Store;

    let db = crate::helpers::test_db().await;
    let store = Store::open(&db.url).await.expect("store");
    let names = [
        Some("alpha"),
        Some("Alphabet"),
        None,
        Some(""),
        Some("beta"),
    ];
    let clusters = [
        Some("5f77218d44b03575ec17a5ae"),
        None,
        Some("5f77218d44b03575ec17a5af"),
    ];
    for i in 0..30usize {
        let fields = JobFields {
            name: names[i % names.len()].map(str::to_string),
            cluster: clusters[i % clusters.len()].map(str::to_string),
            start_time: (i % 4 != 0).then_some((i * 37 % 11) as i64),
            num_total_resources: (i % 3 == 0).then_some(i as i64),
            job_type: jobtrack::domain::JobType::ALL.get(i % 13).copied(),
            ..Default::default()
        };
        let state = jobtrack::domain::JobState::ALL[i % 7];
        store
            .create_job(NewJob {
                id: Some(ObjectId::generate()),
                fields,
                state: Some(state),
                activity: vec![],
            })
            .await
            .expect("create");
    }
    let all = store
        .list_jobs(
            &ListQuery::<Job>::parse("", "", 1000, PageAt::Token(""), 1000, None).expect("query"),
        )
        .await
        .expect("list")
        .items;
    assert_eq!(all.len(), 30);
    let wheres = [
        r#"{"name":"alpha"}"#,
        r#"{"name":{"$ne":"alpha"}}"#,
        r#"{"name":null}"#,
        r#"{"name":{"$ne":null}}"#,
        r#"{"name":{"$gt":"Alpha"}}"#,
        r#"{"name":{"$lte":""}}"#,
        r#"{"start_time":{"$gte":5}}"#,
        r#"{"start_time":{"$lt":5}}"#,
        r#"{"start_time":{"$in":[1,2,3]}}"#,
        r#"{"start_time":{"$nin":[1,2,3]}}"#,
        r#"{"start_time":{"$in":[1,null]}}"#,
        r#"{"start_time":{"$nin":[1,null]}}"#,
        r#"{"start_time":{"$in":[]}}"#,
        r#"{"start_time":{"$nin":[]}}"#,
        r#"{"cluster":{"$exists":false}}"#,
        r#"{"num_total_resources":{"$not":{"$gt":10}}}"#,
        r#"{"$nor":[{"name":"alpha"},{"start_time":{"$gt":3}}]}"#,
        r#"{"$or":[{"name":{"$regex":"^a"}},{"cluster":null}]}"#,
        r#"{"$and":[{"state":{"$in":["RUNNING","FAILED"]}},{"type":{"$nin":["K8S_COPY"]}}]}"#,
        r#"{"name":{"$regex":"^al","$options":"i"}}"#,
        r#"{"$not":{"start_time":{"$gt":2}}}"#,
        r#"{"type":null}"#,
        r#"{"state":{"$gte":"PENDING"}}"#,
        r#"{"_created":{"$gt":"Mon, 24 Aug 2020 01:59:18 GMT"}}"#,
    ];
    for w in wheres {
        let filter = parse_where::<Job>(w).expect("valid where");
        let in_sql: Vec<String> = store
            .list_jobs(
                &ListQuery::<Job>::parse(w, "", 1000, PageAt::Token(""), 1000, None)
                    .expect("query"),
            )
            .await
            .expect("list")
            .items
            .iter()
            .map(|j| j.id.to_string())
            .collect();
        let in_memory: Vec<String> = all
            .iter()
            .filter(|j| filter.matches(*j))
            .map(|j| j.id.to_string())
            .collect();
        assert_eq!(in_memory, in_sql, "where {w}");
    }
    store.close().await;
}
