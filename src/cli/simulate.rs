//! `jobtrack simulate`: a demo executor. It creates jobs and drives them through realistic life
//! cycles — several PVCs each, snapshots then data transfer with bytes growing at plausible rates,
//! some PVCs failing or skipped, one job ending PARTIAL, one cancelled by an operator mid-way, one
//! failing, and one whose executor dies mid-transfer (it stops reporting: the server marks the
//! job stalled, then FAILED) — so that `jobtrack watch` and the dashboard have something to show.

use std::time::Duration;

use clap::Args;
use tonic::Code;

use super::ServerArg;
use super::client::{Backoff, Client, channel, client, is_transient};
use crate::pb;

#[derive(Args, Clone, Debug)]
pub struct SimulateArgs {
    /// Jobs to run at once.
    #[arg(long, default_value_t = 6)]
    pub jobs: usize,
    /// Time factor: 2 runs twice as fast.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Start a new round whenever one ends, until interrupted.
    #[arg(long)]
    pub forever: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

/// How a simulated job ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Completed,
    /// One PVC's transfer fails: the job ends PARTIAL.
    Partial,
    /// An operator cancels it mid-transfer; the executor stops when its next report is refused.
    Cancelled,
    /// One snapshot is skipped (volume in another region); the job still completes.
    CompletedWithSkip,
    /// The executor fails early.
    Failed,
    /// The executor dies half-way through the transfer and never reports again. The job asks
    /// to be marked stalled after 20 s and FAILED after 60 s (divided by `--speed`) instead of
    /// the server's defaults, so that it happens while you watch.
    ExecutorDies,
}

const ENDINGS: [Ending; 6] = [
    Ending::Completed,
    Ending::Partial,
    Ending::Cancelled,
    Ending::CompletedWithSkip,
    Ending::Failed,
    Ending::ExecutorDies,
];

/// The dying executor's job: stalled after this many seconds of silence, FAILED after that many.
const DYING_STALL_AFTER_SECS: f64 = 20.0;
const DYING_ABANDON_AFTER_SECS: f64 = 60.0;

struct Sim {
    client: Client,
    speed: f64,
    rng: u64,
}

const MIB: i64 = 1024 * 1024;

impl Sim {
    fn random(&mut self, low: i64, high: i64) -> i64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        low + (self.rng % (high - low + 1).max(1) as u64) as i64
    }

    async fn pause_between(&mut self, low: i64, high: i64) {
        let millis = self.random(low, high) as u64;
        self.pause(millis).await;
    }

    async fn pause(&self, millis: u64) {
        tokio::time::sleep(Duration::from_secs_f64(
            millis as f64 / 1000.0 / self.speed.max(0.01),
        ))
        .await;
    }

    /// `call` until it succeeds or fails for good: while the server is away (a restart, as the
    /// README invites) it is tried again with the backoff `watch` uses.
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut backoff = Backoff::default();
        loop {
            match call(self.client.clone()).await {
                Err(status) if is_transient(&status) => {
                    let wait = backoff.next_wait();
                    eprintln!(
                        "simulate: {what}: {}; trying again in {wait:?}",
                        status.message()
                    );
                    tokio::time::sleep(wait).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn update(
        &mut self,
        id: &str,
        job: pb::Job,
        mask: &[&str],
        activity: &[&str],
    ) -> Result<pb::Job, tonic::Status> {
        let request = pb::UpdateJobRequest {
            job: Some(pb::Job {
                id: id.to_string(),
                ..job
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: mask.iter().map(|m| m.to_string()).collect(),
            }),
            append_activity: activity.iter().map(|a| a.to_string()).collect(),
            etag: String::new(),
        };
        self.retrying("UpdateJob", |mut client| {
            let request = request.clone();
            async move {
                client
                    .update_job(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    async fn report(&mut self, pvc: pb::PvcProgress) -> Result<(), tonic::Status> {
        let request = pb::ReportPvcProgressRequest { pvc: Some(pvc) };
        self.retrying("ReportPvcProgress", |mut client| {
            let request = request.clone();
            async move { client.report_pvc_progress(request).await.map(drop) }
        })
        .await
    }

    fn set_state(state: pb::JobState, message: &str) -> pb::Job {
        pb::Job {
            state: state as i32,
            message: Some(message.to_string()),
            ..Default::default()
        }
    }

    /// Runs one job from creation to its ending.
    async fn run(&mut self, index: usize, ending: Ending) -> Result<(), tonic::Status> {
        let copy = index.is_multiple_of(2)
            || matches!(
                ending,
                Ending::Cancelled | Ending::Partial | Ending::ExecutorDies
            );
        let created = self.create(index, copy, ending).await?;
        let id = created.id.clone();
        out!(
            "simulate: created {id} ({}, will end {ending:?})",
            created_type(copy).as_str_name()
        );
        self.pause_between(500, 2000).await;
        self.update(
            &id,
            Self::set_state(pb::JobState::Running, "Backing up"),
            &["state", "message"],
            &["Backing up resources"],
        )
        .await?;
        if ending == Ending::Failed {
            return self.fail(&id).await;
        }
        let total = created.num_total_resources.unwrap_or(300);
        self.update(
            &id,
            pb::Job {
                num_backup_resources: Some(total),
                ..Default::default()
            },
            &["num_backup_resources"],
            &["Resources backed up"],
        )
        .await?;
        let names = self.volume_names();
        self.snapshots(&id, &names, ending).await?;
        if copy && !self.transfer(&id, &names, ending).await? {
            out!(
                "simulate: {id}'s executor died; no more reports (stalled after {}s, FAILED after {}s)",
                self.scaled(DYING_STALL_AFTER_SECS),
                self.scaled(DYING_ABANDON_AFTER_SECS)
            );
            return Ok(());
        }
        self.finish(&id, ending).await
    }

    /// Seconds of the simulation's time in real seconds (at least 1).
    fn scaled(&self, secs: f64) -> i64 {
        (secs / self.speed.max(0.01)).round().max(1.0) as i64
    }

    /// Creates the job, on one of three clusters.
    async fn create(
        &mut self,
        index: usize,
        copy: bool,
        ending: Ending,
    ) -> Result<pb::Job, tonic::Status> {
        let dies = ending == Ending::ExecutorDies;
        let clusters = [
            ("prod-eu-1", "5f77218d44b03575ec17a5ae"),
            ("prod-us-2", "5f77218d44b03575ec17a5af"),
            ("staging", "5f77218d44b03575ec17a5b0"),
        ];
        let (cluster_name, cluster) = clusters[index % clusters.len()];
        let now = crate::domain::now_micros() / 1_000_000;
        let resources = self.random(120, 600);
        // The id is chosen here, so that a create tried again after a lost answer finds the
        // job it made instead of making a second one.
        let id = crate::domain::ObjectId::generate().to_string();
        let job = pb::Job {
            id: id.clone(),
            name: Some(format!("{cluster_name}-{now}-{index}")),
            r#type: created_type(copy) as i32,
            cluster: Some(cluster.into()),
            cluster_name: Some(cluster_name.into()),
            backupdef: Some("5f7721cb44b03575ec17a5af".into()),
            backupdef_name: Some(if copy { "nightly-copy" } else { "hourly-snap" }.into()),
            num_total_resources: Some(resources),
            num_backup_resources: Some(0),
            activity: vec!["Initiating backup process".into()],
            stall_after_seconds: dies.then(|| self.scaled(DYING_STALL_AFTER_SECS)),
            abandon_after_seconds: dies.then(|| self.scaled(DYING_ABANDON_AFTER_SECS)),
            ..Default::default()
        };
        let request = pb::CreateJobRequest { job: Some(job) };
        let created = self
            .retrying("CreateJob", |mut client| {
                let request = request.clone();
                async move {
                    client
                        .create_job(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        match created {
            Err(status) if status.code() == Code::AlreadyExists => {
                let request = pb::GetJobRequest { id };
                self.retrying("GetJob", |mut client| {
                    let request = request.clone();
                    async move {
                        client
                            .get_job(request)
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await
            }
            other => other,
        }
    }

    /// The executor fails early.
    async fn fail(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.pause(2500).await;
        self.update(
            id,
            Self::set_state(
                pb::JobState::Failed,
                "Backup failed: cluster agent unreachable",
            ),
            &["state", "message"],
            &["Cluster agent stopped responding"],
        )
        .await?;
        out!("simulate: {id} FAILED");
        Ok(())
    }

    fn volume_names(&mut self) -> Vec<String> {
        let volumes = self.random(3, 6) as usize;
        (0..volumes)
            .map(|v| {
                format!(
                    "data-{}-{v}",
                    ["postgres", "redis", "kafka", "minio"][v % 4]
                )
            })
            .collect()
    }

    /// The snapshot phase: each volume's snapshot from 0 to 100%, one skipped if so planned.
    async fn snapshots(
        &mut self,
        id: &str,
        names: &[String],
        ending: Ending,
    ) -> Result<(), tonic::Status> {
        for name in names {
            self.report(self.pvc(id, name, pb::OpType::K8sSnap, pb::PvcState::Pending))
                .await?;
        }
        self.update(id, pb::Job::default(), &[], &["Taking volume snapshots"])
            .await?;
        for (v, name) in names.iter().enumerate() {
            if ending == Ending::CompletedWithSkip && v == names.len() - 1 {
                let mut skipped = self.pvc(
                    id,
                    name,
                    pb::OpType::K8sSnap,
                    pb::PvcState::SkippedVolumeFromOtherRegion,
                );
                skipped.message = Some("EBS volume is in another region".into());
                self.report(skipped).await?;
                continue;
            }
            for percent in [0, 35, 70, 100] {
                let state = if percent == 100 {
                    pb::PvcState::Completed
                } else {
                    pb::PvcState::Active
                };
                let mut pvc = self.pvc(id, name, pb::OpType::K8sSnap, state);
                pvc.snapshot_progress_percentage = Some(percent);
                self.report(pvc).await?;
                self.pause_between(150, 500).await;
            }
        }
        Ok(())
    }

    /// The job's last state, as its ending says.
    async fn finish(&mut self, id: &str, ending: Ending) -> Result<(), tonic::Status> {
        let (state, message, line) = match ending {
            Ending::Partial => (
                pb::JobState::Partial,
                "Backup partially successful: 1 volume failed",
                "Finished with errors",
            ),
            _ => (
                pb::JobState::Completed,
                "Backup Successful",
                "Backup completed",
            ),
        };
        self.update(
            id,
            Self::set_state(state, message),
            &["state", "message"],
            &[line],
        )
        .await?;
        out!(
            "simulate: {id} {}",
            state.as_str_name().trim_start_matches("JOB_STATE_")
        );
        Ok(())
    }

    fn pvc(
        &self,
        job_id: &str,
        name: &str,
        op: pb::OpType,
        state: pb::PvcState,
    ) -> pb::PvcProgress {
        pb::PvcProgress {
            job_id: job_id.into(),
            namespace: "production".into(),
            name: name.into(),
            op_type: op as i32,
            state: state as i32,
            ..Default::default()
        }
    }

    /// The data transfer: two volumes at a time, each at its own rate, bytes and files growing.
    /// Answers whether the executor is still alive (a dying one stops at half of its first
    /// volume).
    async fn transfer(
        &mut self,
        id: &str,
        names: &[String],
        ending: Ending,
    ) -> Result<bool, tonic::Status> {
        let mut volumes = Vec::new();
        for name in names {
            volumes.push(self.start_volume(id, name).await?);
        }
        self.update(id, pb::Job::default(), &[], &["Transferring data"])
            .await?;
        let failing = (ending == Ending::Partial).then_some(1);
        loop {
            let active: Vec<usize> = (0..volumes.len())
                .filter(|&v| !volumes[v].done)
                .take(2)
                .collect();
            if active.is_empty() {
                return Ok(true);
            }
            for v in active {
                let fails = failing == Some(v);
                let sent = self.send_some(id, &mut volumes[v], fails).await?;
                if ending == Ending::Cancelled && v == 0 && sent * 10 >= volumes[v].size * 4 {
                    self.cancel_as_operator(id).await?;
                }
                if ending == Ending::ExecutorDies && v == 0 && sent * 2 >= volumes[v].size {
                    return Ok(false);
                }
            }
            self.pause(TICK_MS as u64).await;
        }
    }

    /// Reports a volume's copy as PENDING with its estimates.
    async fn start_volume(&mut self, id: &str, name: &str) -> Result<Volume, tonic::Status> {
        let size = self.random(512, 4096) * MIB;
        let files = self.random(200, 20_000);
        let mut pvc = self.pvc(id, name, pb::OpType::K8sCopy, pb::PvcState::Pending);
        pvc.stats = Some(pb::TransferStats {
            estimated_size: Some(size),
            estimated_number_of_files: Some(files),
            io_size: Some(0),
            io_number_of_files: Some(0),
            transferred_size: Some(0),
            transferred_number_of_files: Some(0),
        });
        self.report(pvc).await?;
        Ok(Volume {
            name: name.to_string(),
            size,
            files,
            rate: self.random(60, 250) * MIB,
            sent: 0,
            done: false,
        })
    }

    /// One tick of a volume's transfer, reported; a volume meant to fail does so at 40%.
    /// Answers the bytes sent so far.
    async fn send_some(
        &mut self,
        id: &str,
        vol: &mut Volume,
        meant_to_fail: bool,
    ) -> Result<i64, tonic::Status> {
        vol.sent = (vol.sent + vol.rate * TICK_MS / 1000).min(vol.size);
        let files = vol.files * vol.sent / vol.size.max(1);
        let fails = meant_to_fail && vol.sent * 10 >= vol.size * 4;
        let state = if fails {
            pb::PvcState::Failed
        } else if vol.sent >= vol.size {
            pb::PvcState::Completed
        } else {
            pb::PvcState::Active
        };
        vol.done = state != pb::PvcState::Active;
        let mut pvc = self.pvc(id, &vol.name, pb::OpType::K8sCopy, state);
        pvc.stats = Some(pb::TransferStats {
            io_size: Some(vol.sent),
            io_number_of_files: Some(files),
            transferred_size: Some(vol.sent),
            transferred_number_of_files: Some(files),
            ..Default::default()
        });
        if fails {
            pvc.message = Some("Data transfer failed: connection reset by peer".into());
        }
        if let Err(status) = self.report(pvc).await {
            if status.code() == Code::FailedPrecondition {
                out!(
                    "simulate: {id} was cancelled; the executor stops ({})",
                    status.message()
                );
            }
            return Err(status);
        }
        Ok(vol.sent)
    }

    async fn cancel_as_operator(&mut self, id: &str) -> Result<(), tonic::Status> {
        let request = pb::CancelJobRequest { id: id.into() };
        let cancelled = self
            .retrying("CancelJob", |mut client| {
                let request = request.clone();
                async move {
                    client
                        .cancel_job(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        out!(
            "simulate: an operator cancelled {} ({})",
            cancelled.id,
            cancelled.activity.last().map_or("", String::as_str)
        );
        Ok(())
    }
}

/// A volume being copied.
struct Volume {
    name: String,
    size: i64,
    files: i64,
    /// Bytes per second.
    rate: i64,
    sent: i64,
    done: bool,
}

/// How often a transferring volume reports.
const TICK_MS: i64 = 500;

fn created_type(copy: bool) -> pb::JobType {
    if copy {
        pb::JobType::K8sCopy
    } else {
        pb::JobType::K8sSnap
    }
}

pub(super) async fn run(args: SimulateArgs) -> Result<(), String> {
    let client = client(channel(&args.server.server).await?);
    loop {
        let mut tasks = Vec::new();
        for index in 0..args.jobs.max(1) {
            let mut sim = Sim {
                client: client.clone(),
                speed: args.speed,
                rng: 0x9E37_79B9_7F4A_7C15
                    ^ ((index as u64 + 1) * 0x2545_F491)
                    ^ std::process::id() as u64,
            };
            tasks.push(tokio::spawn(async move {
                sim.pause(index as u64 * 700).await;
                match sim.run(index, ENDINGS[index % ENDINGS.len()]).await {
                    Err(s) if s.code() != Code::FailedPrecondition => {
                        Err(format!("job {index}: {}", s.message()))
                    }
                    _ => Ok(()),
                }
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        if !args.forever {
            out!("simulate: done");
            return Ok(());
        }
    }
}
