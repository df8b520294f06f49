use std::collections::HashSet;

use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

/// 1,000 jobs with many ties and missing values in the sorted fields.
async fn thousand_jobs(app: &TestApp) {
    let states = [JobState::Running, JobState::Completed, JobState::Failed];
    let mut tasks = Vec::new();
    for worker in 0..10 {
        let mut client = app.client();
        tasks.push(tokio::spawn(async move {
            for k in 0..100 {
                let i = worker * 100 + k;
                let job = pb::Job {
                    name: Some(format!("job-{i:04}")),
                    state: states[i % 3] as i32,
                    start_time: (i % 5 != 0).then_some((i % 7) as i64),
                    ..Default::default()
                };
                client
                    .create_job(pb::CreateJobRequest { job: Some(job) })
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("creator");
    }
}

async fn walk(app: &TestApp, where_: &str, sort: &str, page_size: i32) -> Vec<pb::Job> {
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client()
            .list_jobs(pb::ListJobsRequest {
                r#where: where_.into(),
                sort: sort.into(),
                page_size,
                page_token: token,
            })
            .await
            .unwrap_or_else(|e| panic!("page_size {page_size}, sort {sort}: {e}"))
            .into_inner();
        assert!(page.jobs.len() <= page_size as usize);
        seen.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return seen;
        }
        token = page.next_page_token;
    }
}

fn sort_key(job: &pb::Job) -> (i32, std::cmp::Reverse<Option<i64>>) {
    // "state,-start_time": by state name, then start_time descending (missing last).
    let state = JobState::try_from(job.state)
        .expect("known state")
        .as_str_name();
    let rank = [
        "JOB_STATE_COMPLETED",
        "JOB_STATE_FAILED",
        "JOB_STATE_RUNNING",
    ]
    .iter()
    .position(|s| *s == state);
    (
        rank.expect("fixture state") as i32,
        std::cmp::Reverse(job.start_time),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_through_a_thousand_jobs_with_every_page_size_meets_each_job_exactly_once() {
    let app = spawn_app().await;
    thousand_jobs(&app).await;
    for page_size in 1..=50 {
        let sort = if page_size % 2 == 0 {
            "state,-start_time"
        } else {
            ""
        };
        let jobs = walk(&app, "", sort, page_size).await;
        assert_eq!(jobs.len(), 1000, "page_size {page_size}, sort {sort:?}");
        let ids: HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids.len(), 1000, "page_size {page_size}: a job was repeated");
        if sort.is_empty() {
            assert!(jobs.windows(2).all(|w| w[0].id < w[1].id), "creation order");
        } else {
            assert!(
                jobs.windows(2).all(|w| sort_key(&w[0]) <= sort_key(&w[1])),
                "sorted by {sort}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_a_filtered_descending_list_is_complete_and_total_counts_all_matches() {
    let app = spawn_app().await;
    thousand_jobs(&app).await;
    let first = app
        .client()
        .list_jobs(pb::ListJobsRequest {
            r#where: r#"{"state":"RUNNING"}"#.into(),
            sort: "-_created".into(),
            page_size: 7,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(first.total, 334);
    let jobs = walk(&app, r#"{"state":"RUNNING"}"#, "-_created", 7).await;
    assert_eq!(jobs.len(), 334);
    // Newest first, ties (the same microsecond) by id. (Not by id alone: ids are made when a
    // request arrives, creation times when its batch commits, so concurrent creators can commit
    // in another order.)
    let newest_first = |j: &pb::Job| {
        let created = j.created.as_ref().expect("created");
        (created.seconds, created.nanos, j.id.clone())
    };
    assert!(
        jobs.windows(2)
            .all(|w| newest_first(&w[0]) > newest_first(&w[1])),
        "newest first"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn page_size_zero_means_25_large_is_clamped_and_negative_is_invalid() {
    let app = spawn_app().await;
    thousand_jobs(&app).await;
    let list = |page_size| {
        let mut client = app.client();
        async move {
            client
                .list_jobs(pb::ListJobsRequest {
                    page_size,
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    assert_eq!(list(0).await.expect("default").jobs.len(), 25);
    let big = list(5000).await.expect("clamped");
    assert_eq!(big.jobs.len(), 1000);
    assert!(big.next_page_token.is_empty(), "the last page has no token");
    assert_eq!(code(list(-1).await), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_token_reused_with_another_query_or_mangled_is_invalid() {
    let app = spawn_app().await;
    thousand_jobs(&app).await;
    let first = app
        .client()
        .list_jobs(pb::ListJobsRequest {
            sort: "name".into(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let token = first.next_page_token;
    for (where_, sort, token) in [
        (r#"{"state":"RUNNING"}"#, "name", token.clone()),
        ("", "-name", token.clone()),
        ("", "name", format!("{token}x")),
        ("", "name", "garbage".to_string()),
    ] {
        let result = app
            .client()
            .list_jobs(pb::ListJobsRequest {
                r#where: where_.into(),
                sort: sort.into(),
                page_size: 10,
                page_token: token,
            })
            .await;
        assert_eq!(code(result), Code::InvalidArgument, "{where_} {sort}");
    }
    app.stop().await;
}
