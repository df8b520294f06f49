//! List totals (`total`, REST `_meta.total` / `X-Total-Count`) are exact, also while writers
//! create, change and delete jobs, and a client always sees its own acknowledged writes in them.
//! (The server keeps the totals of repeated filters up to date from the change feed instead of
//! counting every time; these tests hold it to the truth.)

use jobtrack::pb;

use crate::helpers::*;
use crate::http::{encode, get};

const FILTERS: [&str; 4] = [
    "",
    r#"{"state":"RUNNING"}"#,
    r#"{"type":"K8S_COPY","state":{"$in":["COMPLETED","RUNNING"]}}"#,
    r#"{"kube_copy_progress.total_pvs":{"$gte":2}}"#,
];

/// The number of matches, counted by reading every page (the pages are plain SQL reads).
async fn counted_by_paging(app: &TestApp, where_: &str) -> i64 {
    let mut client = app.client();
    let mut token = String::new();
    let mut n = 0;
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                r#where: where_.into(),
                sort: String::new(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .expect("list")
            .into_inner();
        n += page.jobs.len() as i64;
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn totals_stay_exact_while_writers_create_change_and_delete_jobs() {
    let app = spawn_app().await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let app_client = app.client();
        writers.push(tokio::spawn(async move {
            let mut client = app_client;
            for i in 0..60 {
                let t = if i % 3 == 0 {
                    JobType::K8sSnap
                } else {
                    JobType::K8sCopy
                };
                let created = client
                    .create_job(pb::CreateJobRequest {
                        job: Some(job(t, JobState::Running)),
                    })
                    .await
                    .expect("create")
                    .into_inner();
                for p in 0..(i % 4) {
                    let record = pvc(
                        &created.id,
                        &format!("pvc-{p}"),
                        OpType::K8sCopy,
                        PvcState::Active,
                    );
                    client
                        .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(record) })
                        .await
                        .expect("report");
                }
                if i % 2 == 0 {
                    let done = pb::Job {
                        id: created.id.clone(),
                        state: JobState::Completed as i32,
                        ..Default::default()
                    };
                    client
                        .update_job(pb::UpdateJobRequest {
                            job: Some(done),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["state".into()],
                            }),
                            append_activity: vec![],
                            etag: String::new(),
                        })
                        .await
                        .expect("complete");
                }
                if (i + w) % 5 == 0 {
                    client
                        .delete_job(pb::DeleteJobRequest {
                            id: created.id,
                            etag: String::new(),
                        })
                        .await
                        .expect("delete");
                }
            }
        }));
    }
    // A reader asks the same filters over and over while the writers run, so that the totals
    // are cached and kept up to date from the feed rather than counted at the end.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (addr, writing) = (app.addr, writing.clone());
        tokio::spawn(async move {
            let mut rounds = 0u64;
            while writing.load(std::sync::atomic::Ordering::Acquire) {
                for f in FILTERS {
                    let reply = get(
                        addr,
                        &format!("/api/v1/jobs?where={}&max_results=1", encode(f)),
                    )
                    .await;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    let total = reply.json()["_meta"]["total"].as_i64();
                    assert!(
                        total.is_some_and(|t| t >= 0),
                        "{f}: a total: {}",
                        reply.text()
                    );
                }
                rounds += 1;
            }
            rounds
        })
    };
    for writer in writers {
        within("a writer", writer).await.expect("writer");
    }
    writing.store(false, std::sync::atomic::Ordering::Release);
    let rounds = within("the reader", reader)
        .await
        .expect("the reader's checks held");
    assert!(rounds > 0, "the reader read while the writers wrote");
    for f in FILTERS {
        let expected = counted_by_paging(&app, f).await;
        let rest = get(app.addr, &format!("/api/v1/jobs?where={}", encode(f))).await;
        assert_eq!(
            rest.header("x-total-count"),
            Some(expected.to_string().as_str()),
            "{f}"
        );
        assert_eq!(rest.json()["_meta"]["total"], expected, "{f}");
        assert_eq!(app.list(f, "").await.expect("list").total, expected, "{f}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_sees_each_of_its_acknowledged_writes_in_the_next_total() {
    let app = spawn_app().await;
    // Someone else keeps writing, so the feed is always busy.
    let noise = {
        let mut client = app.client();
        tokio::spawn(async move {
            loop {
                let _ = client
                    .create_job(pb::CreateJobRequest {
                        job: Some(job(JobType::Restore, JobState::Pending)),
                    })
                    .await;
            }
        })
    };
    let cluster = "5f77218d44b03575ec17a5ae";
    let where_ = format!(r#"{{"cluster":"{cluster}"}}"#);
    for n in 1..=150 {
        let mut mine = job(JobType::K8sCopy, JobState::Running);
        mine.cluster = Some(cluster.into());
        app.create(mine).await;
        let total = app.list(&where_, "").await.expect("list").total;
        assert_eq!(total, n, "after my write number {n}");
    }
    noise.abort();
    app.stop().await;
}
