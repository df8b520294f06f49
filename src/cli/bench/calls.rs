//! Unary calls under load (`--op get|update|report|create|list`), and `--op seed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BenchArgs, BenchOp, Rng, cores, cpu_seconds, percentile, running_jobs, sample_job};
use crate::cli::client::Client;
use crate::pb;

/// What one caller measured.
#[derive(Default)]
struct Tally {
    /// Microseconds of each call that began and ended inside the measured window.
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `--concurrency` callers until the measured window ends, then prints one line.
pub(super) async fn run(args: &BenchArgs, clients: &[Client]) -> Result<(), String> {
    let pool = Arc::new(job_pool(args, clients).await?);
    let beside = super::fanout::Beside::attach(args, &pool).await?;
    let warmup = Duration::from_secs(args.warmup);
    let measure = Duration::from_secs(args.duration.max(1));
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency.max(1) {
        let client = clients[worker % clients.len()].clone();
        let (pool, args) = (pool.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let rng = Rng(0x2545_F491_4F6C_DD1D ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9));
            call_until(client, rng, &args, &pool, start, end).await
        }));
    }

    tokio::time::sleep_until(start.into()).await;
    let cpu_self = cpu_seconds(None);
    let cpu_server = cpu_seconds(args.server_pid);
    let wall = Instant::now();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task
            .await
            .map_err(|e| format!("a bench task failed: {e}"))?;
        total.latencies.extend(tally.latencies);
        total.errors += tally.errors;
        total.first_error = total.first_error.or(tally.first_error);
    }
    let elapsed = wall
        .elapsed()
        .as_secs_f64()
        .min(measure.as_secs_f64())
        .max(0.001);
    let cpu_self = cores(cpu_self, cpu_seconds(None), elapsed);
    let cpu_server = cores(cpu_server, cpu_seconds(args.server_pid), elapsed);
    print_tally(args, total, measure, &cpu_self, &cpu_server);
    beside.report();
    Ok(())
}

/// The jobs to work on: RUNNING, so that updates and reports are legal.
async fn job_pool(args: &BenchArgs, clients: &[Client]) -> Result<Vec<String>, String> {
    if matches!(args.op, BenchOp::Get | BenchOp::Update | BenchOp::Report) {
        running_jobs(&clients[0], args.jobs.max(1)).await
    } else {
        Ok(Vec::new())
    }
}

/// One caller: calls back to back until `end`, counting those inside [`start`, `end`].
async fn call_until(
    mut client: Client,
    mut rng: Rng,
    args: &BenchArgs,
    pool: &[String],
    start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let mut n = 0u64;
    loop {
        let begun = Instant::now();
        if begun >= end {
            return tally;
        }
        n += 1;
        let result = call(&mut client, &mut rng, args, pool, n).await;
        let done = Instant::now();
        if begun < start || done > end {
            continue;
        }
        match result {
            Ok(()) => tally
                .latencies
                .push((done - begun).as_micros().min(u32::MAX as u128) as u32),
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

/// The `n`th call of one caller.
async fn call(
    client: &mut Client,
    rng: &mut Rng,
    args: &BenchArgs,
    pool: &[String],
    n: u64,
) -> Result<(), tonic::Status> {
    let mut pooled = || pool[rng.below(pool.len())].clone();
    match args.op {
        BenchOp::Get => client
            .get_job(pb::GetJobRequest { id: pooled() })
            .await
            .map(drop),
        BenchOp::Update => client.update_job(update(pooled(), n)).await.map(drop),
        BenchOp::Report => {
            let job_id = pooled();
            let pvc = report(job_id, rng.below(8), n);
            client
                .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(pvc) })
                .await
                .map(drop)
        }
        BenchOp::Create => {
            let job = sample_job(rng, n as usize, None);
            client
                .create_job(pb::CreateJobRequest { job: Some(job) })
                .await
                .map(drop)
        }
        BenchOp::Cycle => {
            // A job's whole life: created RUNNING, one PVC record, then COMPLETED.
            let job = sample_job(rng, n as usize, Some(pb::JobState::Running));
            let id = client
                .create_job(pb::CreateJobRequest { job: Some(job) })
                .await?
                .into_inner()
                .id;
            let pvc = report(id.clone(), 0, n);
            client
                .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(pvc) })
                .await?;
            let done = pb::Job {
                id,
                state: pb::JobState::Completed as i32,
                ..Default::default()
            };
            client
                .update_job(pb::UpdateJobRequest {
                    job: Some(done),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["state".into()],
                    }),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
        BenchOp::List => client
            .list_jobs(pb::ListJobsRequest {
                r#where: args.r#where.clone(),
                sort: args.sort.clone(),
                page_size: 25,
                page_token: String::new(),
            })
            .await
            .map(drop),
        BenchOp::Seed | BenchOp::Fanout | BenchOp::Resync | BenchOp::Sweep | BenchOp::Webhooks => {
            Ok(())
        }
    }
}

/// A durable progress update: one small field.
fn update(id: String, n: u64) -> pb::UpdateJobRequest {
    pb::UpdateJobRequest {
        job: Some(pb::Job {
            id,
            num_backup_resources: Some((n % 377) as i64),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["num_backup_resources".into()],
        }),
        ..Default::default()
    }
}

/// A PVC report: bytes and files growing on one of a job's eight volumes.
fn report(job_id: String, volume: usize, n: u64) -> pb::PvcProgress {
    pb::PvcProgress {
        job_id,
        namespace: "default".into(),
        name: format!("data-{volume}"),
        state: pb::PvcState::Active as i32,
        op_type: pb::OpType::K8sCopy as i32,
        stats: Some(pb::TransferStats {
            estimated_size: Some(10 << 30),
            transferred_size: Some((n as i64) << 20),
            transferred_number_of_files: Some(n as i64),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn print_tally(
    args: &BenchArgs,
    mut tally: Tally,
    measure: Duration,
    cpu_self: &str,
    cpu_server: &str,
) {
    let latencies = &mut tally.latencies;
    latencies.sort_unstable();
    let ok = latencies.len();
    out!(
        "op={:?} connections={} concurrency={} duration={}s calls={} errors={} rate={:.0}/s p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms bench_cpu={cpu_self} server_cpu={cpu_server}",
        args.op,
        args.connections,
        args.concurrency,
        args.duration,
        ok,
        tally.errors,
        ok as f64 / measure.as_secs_f64(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.90),
        percentile(latencies, 0.99),
        percentile(latencies, 1.0),
    );
    if let Some(e) = tally.first_error {
        out!("first error: {e}");
    }
}

pub(super) async fn seed(args: &BenchArgs, clients: &[Client]) -> Result<(), String> {
    let started = Instant::now();
    let workers = args.concurrency.max(1);
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let mut client = clients[worker % clients.len()].clone();
        let count = args.count / workers + usize::from(worker < args.count % workers);
        tasks.push(tokio::spawn(async move {
            let mut rng =
                Rng(0xDEAD_BEEF ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for i in 0..count {
                let job = sample_job(&mut rng, i, None);
                client
                    .create_job(pb::CreateJobRequest { job: Some(job) })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let secs = started.elapsed().as_secs_f64();
    out!(
        "seeded {} jobs in {secs:.1}s ({:.0}/s)",
        args.count,
        args.count as f64 / secs
    );
    Ok(())
}
