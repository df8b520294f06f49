use jobtrack::pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn of_two_writers_holding_the_same_etag_exactly_one_wins_and_the_other_is_aborted() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    for round in 0..50 {
        let current = app.get(&created.id).await;
        let write = |n: i64| {
            let mut client = app.client();
            let job = pb::Job {
                id: current.id.clone(),
                num_backup_resources: Some(n),
                ..Default::default()
            };
            let etag = current.etag.clone();
            tokio::spawn(async move {
                client
                    .update_job(pb::UpdateJobRequest {
                        job: Some(job),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["num_backup_resources".into()],
                        }),
                        append_activity: vec![format!("writer {n}")],
                        etag,
                    })
                    .await
            })
        };
        let (a, b) = (write(1), write(2));
        let (a, b) = (a.await.expect("task"), b.await.expect("task"));
        let mut codes = [code(a), code(b)];
        codes.sort_by_key(|c| *c as i32);
        assert_eq!(codes, [Code::Ok, Code::Aborted], "round {round}");
        let after = app.get(&created.id).await;
        assert_eq!(
            after.revision,
            current.revision + 1,
            "exactly one write landed"
        );
        assert_eq!(after.activity.len(), current.activity.len() + 1);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reports_on_one_job_are_all_counted() {
    let app = spawn_app().await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let mut client = app.client();
        let id = created.id.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let mut record = pvc(
                    &id,
                    &format!("w{worker}-{i}"),
                    OpType::K8sCopy,
                    PvcState::Completed,
                );
                record.stats = Some(stats(10, 1));
                client
                    .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(record) })
                    .await
                    .expect("report");
            }
        }));
    }
    for t in tasks {
        t.await.expect("reporter");
    }
    let after = app.get(&created.id).await;
    let copy = after.kube_copy_progress.expect("copy progress");
    assert_eq!((copy.total_pvs, copy.completed_pvs), (200, 200));
    assert_eq!(copy.stats.and_then(|s| s.transferred_size), Some(2000));
    assert_eq!(after.revision, 201);
    app.stop().await;
}
