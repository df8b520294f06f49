//! Rates and ETAs as the contract defines them (README, "Progress a person can read"): each
//! report pulls a PVC's moving-average rate towards the rate since its previous report by
//! Δt / 10 s, in thousandths per second, rounded for clients; the job's rate is the sum of its
//! ACTIVE COPY records'; the ETA is the report's time plus what remains of the estimate at that
//! rate, from 1% progress on. The expected values are computed here from the times the server
//! answers with, so they are exact whatever the machine's speed.

use jobtrack::pb;
use prost_types::Timestamp;

use crate::helpers::*;

const MIB: i64 = 1 << 20;
const WINDOW: i128 = 10_000_000;

fn micros(t: &Option<Timestamp>) -> i64 {
    let t = t.as_ref().expect("a time");
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

/// The contract's moving average, in thousandths per second.
#[derive(Default)]
struct Model {
    rate: Option<(i64, i64)>,
    last: Option<(i64, i64, i64)>, // (at µs, bytes, files)
}

impl Model {
    fn report(&mut self, at: i64, bytes: i64, files: i64) -> Option<(i64, i64)> {
        if let Some((then, b0, f0)) = self.last {
            let dt = i128::from(at - then);
            if bytes < b0 || files < f0 {
                self.rate = None;
            } else if dt > 0 {
                let now_rate =
                    |from: i64, to: i64| (i128::from(to - from) * 1_000_000_000 / dt) as i64;
                let (nb, nf) = (now_rate(b0, bytes), now_rate(f0, files));
                self.rate = Some(match self.rate {
                    None => (nb, nf),
                    Some((ob, of)) => {
                        let pull = dt.min(WINDOW);
                        let toward = |old: i64, new: i64| {
                            old + (i128::from(new - old) * pull / WINDOW) as i64
                        };
                        (toward(ob, nb), toward(of, nf))
                    }
                });
            }
        }
        self.last = Some((at, bytes, files));
        self.rate
    }
}

fn rounded(milli: i64) -> i64 {
    (milli + 500) / 1000
}

fn eta(estimated: i64, done: i64, rate_milli: i64, at: i64) -> Option<i64> {
    if rate_milli <= 0 || done * 100 < estimated {
        return None;
    }
    let remaining = i128::from((estimated - done).max(0));
    Some(at + (remaining * 1_000_000_000 / i128::from(rate_milli)) as i64)
}

fn copy(
    job_id: &str,
    name: &str,
    estimated: i64,
    read: i64,
    sent: i64,
    files: i64,
) -> pb::PvcProgress {
    pb::PvcProgress {
        stats: Some(pb::TransferStats {
            estimated_size: Some(estimated),
            estimated_number_of_files: Some(1000),
            io_size: Some(read),
            io_number_of_files: Some(files),
            transferred_size: Some(sent),
            transferred_number_of_files: Some(files),
        }),
        ..pvc(job_id, name, OpType::K8sCopy, PvcState::Active)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rates_and_etas_follow_the_reports_exactly_on_each_pvc_and_the_job() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let (mut a, mut b) = (Model::default(), Model::default());
    // (pvc, read MiB, sent MiB, files): steady, faster, a stall, an incremental stretch (sent
    // far below read), and a count that starts again.
    let script: [(&str, i64, i64, i64); 12] = [
        ("a", 0, 0, 0),
        ("b", 0, 0, 0),
        ("a", 10, 10, 10),
        ("b", 5, 5, 5),
        ("a", 20, 20, 20),
        ("a", 60, 60, 60),
        ("b", 5, 5, 5),
        ("a", 60, 60, 60),
        ("b", 50, 8, 50),
        ("b", 90, 10, 90),
        ("a", 30, 30, 30),
        ("a", 40, 40, 40),
    ];
    let mut last_rates = std::collections::HashMap::new();
    for (name, read, sent, files) in script {
        let reply = app
            .report(copy(
                &job.id,
                name,
                100 * MIB,
                read * MIB,
                sent * MIB,
                files,
            ))
            .await
            .expect("report");
        let at = micros(&reply.updated);
        let model = if name == "a" { &mut a } else { &mut b };
        let rate = model.report(at, read * MIB, files);
        let what = format!("pvc {name} after read {read} MiB");
        assert_eq!(reply.bytes_per_second, rate.map(|r| rounded(r.0)), "{what}");
        assert_eq!(reply.files_per_second, rate.map(|r| rounded(r.1)), "{what}");
        let expected_eta = rate.and_then(|r| eta(100 * MIB, read * MIB, r.0, at));
        assert_eq!(
            reply.eta.as_ref().map(|_| micros(&reply.eta)),
            expected_eta,
            "{what}"
        );
        last_rates.insert(name, rate);

        // The job: the sum of its records' rates, its ETA from the aggregate.
        let now = app.get(&job.id).await;
        let sum: i64 = last_rates.values().flatten().map(|r| r.0).sum();
        assert_eq!(now.bytes_per_second, Some(rounded(sum)), "job after {what}");
        let stats = now
            .kube_copy_progress
            .as_ref()
            .and_then(|c| c.stats)
            .expect("stats");
        let job_eta = eta(
            stats.estimated_size.unwrap_or(0),
            stats.io_size.unwrap_or(0),
            sum,
            micros(&now.updated),
        );
        assert_eq!(
            now.eta.as_ref().map(|_| micros(&now.eta)),
            job_eta,
            "job after {what}"
        );
    }

    // A finished record has no rate; nor has the job once it ends, which keeps its duration
    // and average rate instead.
    for name in ["a", "b"] {
        let done = pb::PvcProgress {
            state: PvcState::Completed as i32,
            ..copy(&job.id, name, 100 * MIB, 100 * MIB, 100 * MIB, 1000)
        };
        let reply = app.report(done).await.expect("complete the pvc");
        assert_eq!((reply.bytes_per_second, reply.eta), (None, None));
    }
    let running = app.get(&job.id).await;
    assert_eq!(running.bytes_per_second, None, "no COPY record is ACTIVE");
    let ended = app
        .set_state(&job.id, JobState::Completed)
        .await
        .expect("complete");
    assert_eq!((ended.bytes_per_second, ended.eta), (None, None));
    let duration = ended.end_time.expect("end") - ended.start_time.expect("start");
    assert_eq!(ended.duration_seconds, Some(duration));
    let expected_average = (duration > 0).then(|| 200 * MIB / duration);
    assert_eq!(ended.average_bytes_per_second, expected_average);
}

#[tokio::test(flavor = "multi_thread")]
async fn rates_are_extensions_in_rest_and_absent_without_an_estimate() {
    let app = spawn_app().await;
    let job = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let mut first = copy(&job.id, "a", 0, 0, 0, 0);
    first.stats.as_mut().expect("stats").estimated_size = None;
    app.report(first.clone()).await.expect("report");
    let mut second = copy(&job.id, "a", 0, 10 * MIB, 10 * MIB, 10);
    second.stats.as_mut().expect("stats").estimated_size = None;
    let reply = app.report(second).await.expect("report");
    assert!(
        reply.bytes_per_second.is_some(),
        "a rate without an estimate"
    );
    assert_eq!(reply.eta, None, "no ETA without an estimate");
    let plain = crate::http::get(app.addr, &format!("/api/v1/kubepvcprogress/{}", reply.id))
        .await
        .json();
    assert!(plain.get("bytes_per_second").is_none(), "{plain}");
    let asked = crate::http::get(
        app.addr,
        &format!(
            "/api/v1/kubepvcprogress/{}?projection={}",
            reply.id,
            crate::http::encode(r#"{"bytes_per_second": 1}"#)
        ),
    )
    .await
    .json();
    assert_eq!(
        asked["bytes_per_second"],
        reply.bytes_per_second.expect("rate"),
        "{asked}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn activity_lines_and_pvc_records_keep_their_times_to_the_microsecond() {
    let app = spawn_app().await;
    let created = app
        .create(pb::Job {
            activity: vec!["created".into()],
            ..job(JobType::K8sCopy, JobState::Running)
        })
        .await;
    assert_eq!(
        created
            .activity_times
            .iter()
            .map(|t| micros(&Some(*t)))
            .collect::<Vec<_>>(),
        [micros(&created.created)]
    );
    let updated = app
        .client()
        .update_job(pb::UpdateJobRequest {
            job: Some(pb::Job {
                id: created.id.clone(),
                ..Default::default()
            }),
            update_mask: None,
            append_activity: vec!["one".into(), "two".into()],
            etag: String::new(),
        })
        .await
        .expect("append")
        .into_inner();
    let at = micros(&updated.updated);
    assert!(at > micros(&created.created));
    assert_eq!(
        updated
            .activity_times
            .iter()
            .map(|t| micros(&Some(*t)))
            .collect::<Vec<_>>(),
        [micros(&created.created), at, at],
        "one time per line, each the time of the write that appended it"
    );
    // REST: only on request, as dates.
    let path = format!("/api/v1/jobs/{}", created.id);
    let plain = crate::http::get(app.addr, &path).await.json();
    assert!(plain.get("activity_times").is_none(), "{plain}");
    let asked = crate::http::get(
        app.addr,
        &format!(
            "{path}?projection={}",
            crate::http::encode(r#"{"activity_times": 1}"#)
        ),
    )
    .await
    .json();
    let times = asked["activity_times"].as_array().expect("a list");
    assert_eq!(times.len(), 3, "{asked}");
    assert!(
        times
            .iter()
            .all(|t| t.as_str().is_some_and(|t| t.ends_with(" GMT"))),
        "{asked}"
    );

    // A PVC record: when the server first saw it ACTIVE and final, to the microsecond.
    let pending = app
        .report(copy(&created.id, "a", 100 * MIB, 0, 0, 0).with_state(PvcState::Pending))
        .await
        .expect("pending");
    assert_eq!((pending.active_time, pending.finish_time), (None, None));
    let active = app
        .report(copy(&created.id, "a", 100 * MIB, MIB, MIB, 1))
        .await
        .expect("active");
    assert_eq!(micros(&active.active_time), micros(&active.updated));
    assert_eq!(active.finish_time, None);
    let again = app
        .report(copy(&created.id, "a", 100 * MIB, 2 * MIB, 2 * MIB, 2))
        .await
        .expect("active");
    assert_eq!(
        again.active_time, active.active_time,
        "the first time it was seen ACTIVE"
    );
    let done = app
        .report(
            copy(&created.id, "a", 100 * MIB, 100 * MIB, 100 * MIB, 1000)
                .with_state(PvcState::Completed),
        )
        .await
        .expect("completed");
    assert_eq!(done.active_time, active.active_time);
    assert_eq!(micros(&done.finish_time), micros(&done.updated));
    assert!(micros(&done.finish_time) > micros(&done.active_time));

    // A record's next phase (its snapshot done, then its copy) is measured on its own.
    let snapshot = pvc(&created.id, "b", OpType::K8sSnap, PvcState::Active);
    app.report(snapshot.clone()).await.expect("snapshot");
    let snapped = app
        .report(snapshot.with_state(PvcState::Completed))
        .await
        .expect("snapshot done");
    let queued = app
        .report(copy(&created.id, "b", 100 * MIB, 0, 0, 0).with_state(PvcState::Pending))
        .await
        .expect("copy queued");
    assert_eq!((queued.active_time, queued.finish_time), (None, None));
    let copying = app
        .report(copy(&created.id, "b", 100 * MIB, MIB, MIB, 1))
        .await
        .expect("copy");
    assert_eq!(micros(&copying.active_time), micros(&copying.updated));
    assert!(micros(&copying.active_time) > micros(&snapped.finish_time));
}

trait WithState {
    fn with_state(self, state: PvcState) -> Self;
}

impl WithState for pb::PvcProgress {
    fn with_state(self, state: PvcState) -> Self {
        pb::PvcProgress {
            state: state as i32,
            ..self
        }
    }
}
