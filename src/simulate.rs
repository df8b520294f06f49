//! `jobtrack simulate`: a demo executor. It creates jobs and drives them through realistic life
//! cycles — several PVCs each, snapshots then data transfer with bytes growing at plausible rates,
//! some PVCs failing or skipped, one job ending PARTIAL, one cancelled by an operator mid-way, one
//! failing — so that `jobtrack watch` and the dashboard have something to show.

use std::time::Duration;

use tonic::Code;

use crate::cli::SimulateArgs;
use crate::pb;

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
}

const ENDINGS: [Ending; 6] = [
    Ending::Completed,
    Ending::Partial,
    Ending::Cancelled,
    Ending::CompletedWithSkip,
    Ending::Failed,
    Ending::Completed,
];

struct Sim {
    client: crate::client::Client,
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

    async fn update(
        &mut self,
        id: &str,
        job: pb::Job,
        mask: &[&str],
        activity: &[&str],
    ) -> Result<pb::Job, tonic::Status> {
        let job = pb::Job {
            id: id.to_string(),
            ..job
        };
        self.client
            .update_job(pb::UpdateJobRequest {
                job: Some(job),
                update_mask: Some(prost_types::FieldMask {
                    paths: mask.iter().map(|m| m.to_string()).collect(),
                }),
                append_activity: activity.iter().map(|a| a.to_string()).collect(),
                etag: String::new(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn report(&mut self, pvc: pb::PvcProgress) -> Result<(), tonic::Status> {
        self.client
            .report_pvc_progress(pb::ReportPvcProgressRequest { pvc: Some(pvc) })
            .await
            .map(drop)
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
        let copy = index.is_multiple_of(2) || matches!(ending, Ending::Cancelled | Ending::Partial);
        let job_type = if copy {
            pb::JobType::K8sCopy
        } else {
            pb::JobType::K8sSnap
        };
        let clusters = [
            ("prod-eu-1", "5f77218d44b03575ec17a5ae"),
            ("prod-us-2", "5f77218d44b03575ec17a5af"),
            ("staging", "5f77218d44b03575ec17a5b0"),
        ];
        let (cluster_name, cluster) = clusters[index % clusters.len()];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let resources = self.random(120, 600);
        let created = self
            .client
            .create_job(pb::CreateJobRequest {
                job: Some(pb::Job {
                    name: Some(format!("{cluster_name}-{now}-{index}")),
                    r#type: job_type as i32,
                    cluster: Some(cluster.into()),
                    cluster_name: Some(cluster_name.into()),
                    backupdef: Some("5f7721cb44b03575ec17a5af".into()),
                    backupdef_name: Some(if copy { "nightly-copy" } else { "hourly-snap" }.into()),
                    num_total_resources: Some(resources),
                    num_backup_resources: Some(0),
                    activity: vec!["Initiating backup process".into()],
                    ..Default::default()
                }),
            })
            .await?
            .into_inner();
        let id = created.id.clone();
        println!(
            "simulate: created {id} ({}, will end {ending:?})",
            job_type.as_str_name()
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
            self.pause(2500).await;
            self.update(
                &id,
                Self::set_state(
                    pb::JobState::Failed,
                    "Backup failed: cluster agent unreachable",
                ),
                &["state", "message"],
                &["Cluster agent stopped responding"],
            )
            .await?;
            println!("simulate: {id} FAILED");
            return Ok(());
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

        // Snapshot phase.
        let volumes = self.random(3, 6) as usize;
        let names: Vec<String> = (0..volumes)
            .map(|v| {
                format!(
                    "data-{}-{v}",
                    ["postgres", "redis", "kafka", "minio"][v % 4]
                )
            })
            .collect();
        for name in &names {
            self.report(self.pvc(&id, name, pb::OpType::K8sSnap, pb::PvcState::Pending))
                .await?;
        }
        self.update(&id, pb::Job::default(), &[], &["Taking volume snapshots"])
            .await?;
        for (v, name) in names.iter().enumerate() {
            if ending == Ending::CompletedWithSkip && v == volumes - 1 {
                let mut skipped = self.pvc(
                    &id,
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
                let mut pvc = self.pvc(&id, name, pb::OpType::K8sSnap, state);
                pvc.snapshot_progress_percentage = Some(percent);
                self.report(pvc).await?;
                self.pause_between(150, 500).await;
            }
        }
        if copy {
            self.transfer(&id, &names, ending).await?;
        }
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
            &id,
            Self::set_state(state, message),
            &["state", "message"],
            &[line],
        )
        .await?;
        println!(
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
    async fn transfer(
        &mut self,
        id: &str,
        names: &[String],
        ending: Ending,
    ) -> Result<(), tonic::Status> {
        struct Volume {
            name: String,
            size: i64,
            files: i64,
            rate: i64,
            sent: i64,
            done: bool,
        }
        let mut volumes = Vec::new();
        for name in names {
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
            volumes.push(Volume {
                name: name.clone(),
                size,
                files,
                rate: self.random(60, 250) * MIB,
                sent: 0,
                done: false,
            });
        }
        self.update(id, pb::Job::default(), &[], &["Transferring data"])
            .await?;
        let failing = (ending == Ending::Partial).then_some(1);
        let tick_ms = 500;
        loop {
            let active: Vec<usize> = (0..volumes.len())
                .filter(|&v| !volumes[v].done)
                .take(2)
                .collect();
            if active.is_empty() {
                return Ok(());
            }
            for v in active {
                let step = volumes[v].rate * tick_ms / 1000;
                let vol = &mut volumes[v];
                vol.sent = (vol.sent + step).min(vol.size);
                let files = vol.files * vol.sent / vol.size.max(1);
                let fails = failing == Some(v) && vol.sent * 10 >= vol.size * 4;
                let state = if fails {
                    pb::PvcState::Failed
                } else if vol.sent >= vol.size {
                    pb::PvcState::Completed
                } else {
                    pb::PvcState::Active
                };
                vol.done = state != pb::PvcState::Active;
                let (name, sent) = (vol.name.clone(), vol.sent);
                let mut pvc = self.pvc(id, &name, pb::OpType::K8sCopy, state);
                pvc.stats = Some(pb::TransferStats {
                    io_size: Some(sent),
                    io_number_of_files: Some(files),
                    transferred_size: Some(sent),
                    transferred_number_of_files: Some(files),
                    ..Default::default()
                });
                if fails {
                    pvc.message = Some("Data transfer failed: connection reset by peer".into());
                }
                if let Err(status) = self.report(pvc).await {
                    if status.code() == Code::FailedPrecondition {
                        println!(
                            "simulate: {id} was cancelled; the executor stops ({})",
                            status.message()
                        );
                    }
                    return Err(status);
                }
                if ending == Ending::Cancelled && sent * 10 >= volumes[v].size * 4 && v == 0 {
                    let cancelled = self
                        .client
                        .cancel_job(pb::CancelJobRequest { id: id.into() })
                        .await?
                        .into_inner();
                    println!(
                        "simulate: an operator cancelled {} ({})",
                        cancelled.id,
                        cancelled.activity.last().map_or("", String::as_str)
                    );
                }
            }
            self.pause(tick_ms as u64).await;
        }
    }
}

pub async fn run(args: SimulateArgs) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(args.server.server.clone())
        .map_err(|e| format!("bad --server: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.server.server))?;
    let client = crate::client::client(channel);
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
            println!("simulate: done");
            return Ok(());
        }
    }
}
