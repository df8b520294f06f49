//! Client commands for people at a terminal: `jobtrack watch`, `jobtrack jobs list|get|cancel`
//! and `jobtrack simulate` (a demo that drives realistic jobs so that there is something to watch).

use std::time::Duration;

use clap::{Args, Subcommand};
use tonic::Code;
use tonic::transport::Endpoint;

use crate::pb;

#[derive(Args, Clone, Debug)]
pub struct ServerArg {
    /// Server URL.
    #[arg(
        long,
        env = "JOBTRACK_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
}

#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// Watch one job (ends when the job ends); without it, every job matching --where.
    pub job_id: Option<String>,
    /// Mongo-style filter for watching many jobs, e.g. '{"state":"RUNNING"}'.
    #[arg(long = "where", default_value = "")]
    pub where_: String,
    /// Resume after this token instead of starting with a snapshot.
    #[arg(long, default_value = "")]
    pub resume_token: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Subcommand, Clone, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long = "where", default_value = "")]
        where_: String,
        #[arg(long, default_value = "-_created")]
        sort: String,
        #[arg(long, default_value_t = 25)]
        limit: i32,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show one job with its PVC records.
    Get {
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Cancel a running K8S_SNAP or K8S_COPY job.
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

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

async fn channel(server: &str) -> Result<tonic::transport::Channel, String> {
    Endpoint::from_shared(server.to_string())
        .map_err(|e| format!("bad --server {server:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {server}: {e}"))
}

async fn connect(server: &str) -> Result<crate::client::Client, String> {
    Ok(crate::client::client(channel(server).await?).max_decoding_message_size(64 * 1024 * 1024))
}

/// `jobtrack whoami`: which key `JOBTRACK_KEY` is, and what its role may and may not do.
pub async fn whoami(server: ServerArg) -> Result<(), String> {
    let mut access = crate::client::access_client(channel(&server.server).await?);
    let caller = access
        .get_caller(pb::GetCallerRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if !caller.keys_required {
        println!(
            "{} requires no API key: anyone may do everything",
            server.server
        );
        return Ok(());
    }
    println!("key:      {:?} ({})", caller.key_name, caller.key_id);
    println!("role:     {}", caller.role);
    for (label, list) in [("may:", &caller.allowed), ("may not:", &caller.denied)] {
        for (i, p) in list.iter().enumerate() {
            println!("{:<9} {}", if i == 0 { label } else { "" }, p.description);
        }
    }
    Ok(())
}

fn rpc_error(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn enum_name(name: Option<&'static str>, prefix: &str) -> String {
    name.map(|n| n.strip_prefix(prefix).unwrap_or(n).to_string())
        .unwrap_or_else(|| "-".into())
}

fn state_name(job: &pb::Job) -> String {
    enum_name(
        pb::JobState::try_from(job.state)
            .ok()
            .map(|s| s.as_str_name()),
        "JOB_STATE_",
    )
}

fn type_name(job: &pb::Job) -> String {
    enum_name(
        pb::JobType::try_from(job.r#type)
            .ok()
            .map(|t| t.as_str_name()),
        "JOB_TYPE_",
    )
}

fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `[#########...........]` for `done` of `total`.
fn bar(done: i64, total: i64, width: usize) -> String {
    let filled = if total > 0 {
        ((done.clamp(0, total) as f64 / total as f64) * width as f64).round() as usize
    } else {
        0
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The progress of a job in one line: PVCs done of total, bytes and files of estimated.
fn progress_line(job: &pb::Job) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &job.kube_copy_progress {
        let done = c.completed_pvs + c.failed_pvs;
        parts.push(format!(
            "copy PVCs {done}/{} {}",
            c.total_pvs,
            bar(done, c.total_pvs, 10)
        ));
        if let Some(s) = &c.stats {
            let (sent, total) = (
                s.transferred_size.unwrap_or(0),
                s.estimated_size.unwrap_or(0),
            );
            let percent = if total > 0 { sent * 100 / total } else { 0 };
            parts.push(format!(
                "bytes {} {} / {} ({percent}%)",
                bar(sent, total, 20),
                bytes(sent),
                bytes(total)
            ));
            parts.push(format!(
                "files {}/{}",
                s.transferred_number_of_files.unwrap_or(0),
                s.estimated_number_of_files.unwrap_or(0)
            ));
        }
        if c.failed_pvs > 0 {
            parts.push(format!("{} failed", c.failed_pvs));
        }
    }
    if let Some(s) = &job.kube_snapshot_progress {
        let done = s.completed_pvs + s.failed_pvs + s.skipped_pvs;
        parts.push(format!(
            "snapshots {done}/{} {}",
            s.total_pvs,
            bar(done, s.total_pvs, 10)
        ));
        if s.skipped_pvs > 0 {
            parts.push(format!("{} skipped", s.skipped_pvs));
        }
    }
    parts.join("  ")
}

fn now_hms() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// One event as a readable line.
pub fn event_line(event: &pb::JobEvent) -> String {
    let kind = enum_name(
        pb::JobEventType::try_from(event.r#type)
            .ok()
            .map(|t| t.as_str_name()),
        "JOB_EVENT_TYPE_",
    );
    let mut line = format!("{} {kind:<11}", now_hms());
    if let Some(job) = &event.job {
        line.push_str(&format!(
            " {} {:<9} {:<13} {}",
            job.id,
            state_name(job),
            type_name(job),
            job.name.as_deref().unwrap_or("")
        ));
        if let Some(pvc) = &event.pvc {
            let state = enum_name(
                pb::PvcState::try_from(pvc.state)
                    .ok()
                    .map(|s| s.as_str_name()),
                "PVC_STATE_",
            );
            line.push_str(&format!(
                "  pvc {}/{} {}",
                pvc.namespace,
                pvc.name,
                state.replace('_', "-")
            ));
        }
        let progress = progress_line(job);
        if !progress.is_empty() {
            line.push_str("  ");
            line.push_str(&progress);
        }
        if matches!(event.r#type, t if t == pb::JobEventType::Updated as i32)
            && let Some(last) = job.activity.last()
        {
            line.push_str(&format!("  \"{last}\""));
        }
    }
    line
}

/// `jobtrack watch`: prints every event; on a dropped connection, reconnects with the last
/// resume token and carries on without loss.
pub async fn watch(args: WatchArgs) -> Result<(), String> {
    let mut token = args.resume_token.clone();
    let mut backoff = Duration::from_millis(250);
    loop {
        let outcome = watch_once(&args, &mut token).await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Internal
                        | Code::ResourceExhausted
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                ) =>
            {
                eprintln!(
                    "{} connection lost ({}); reconnecting in {backoff:?} from the last resume token",
                    now_hms(),
                    status.message()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(status) => return Err(rpc_error(status)),
        }
    }
}

async fn watch_once(args: &WatchArgs, token: &mut String) -> Result<(), tonic::Status> {
    let mut client = connect(&args.server.server)
        .await
        .map_err(tonic::Status::unavailable)?;
    let mut stream = match &args.job_id {
        Some(id) => client
            .watch_job(pb::WatchJobRequest {
                id: id.clone(),
                resume_token: token.clone(),
            })
            .await?
            .into_inner(),
        None => client
            .watch_jobs(pb::WatchJobsRequest {
                r#where: args.where_.clone(),
                resume_token: token.clone(),
            })
            .await?
            .into_inner(),
    };
    while let Some(event) = stream.message().await? {
        if event.r#type != pb::JobEventType::Heartbeat as i32 {
            println!("{}", event_line(&event));
        }
        token.clone_from(&event.resume_token);
    }
    if args.job_id.is_some() {
        println!("{} the job has ended", now_hms());
    }
    Ok(())
}

pub async fn jobs(command: JobsCommand) -> Result<(), String> {
    match command {
        JobsCommand::List {
            where_,
            sort,
            limit,
            server,
        } => {
            let mut client = connect(&server.server).await?;
            let page = client
                .list_jobs(pb::ListJobsRequest {
                    r#where: where_,
                    sort,
                    page_size: limit,
                    page_token: String::new(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            println!(
                "{:<24}  {:<9}  {:<13}  {:<28}  progress",
                "id", "state", "type", "name"
            );
            for job in &page.jobs {
                println!(
                    "{:<24}  {:<9}  {:<13}  {:<28}  {}",
                    job.id,
                    state_name(job),
                    type_name(job),
                    job.name.as_deref().unwrap_or(""),
                    progress_line(job)
                );
            }
            println!("{} of {} jobs", page.jobs.len(), page.total);
        }
        JobsCommand::Get { id, server } => {
            let mut client = connect(&server.server).await?;
            let job = client
                .get_job(pb::GetJobRequest { id: id.clone() })
                .await
                .map_err(rpc_error)?
                .into_inner();
            println!("id:        {}", job.id);
            println!("name:      {}", job.name.as_deref().unwrap_or("-"));
            println!("type:      {}", type_name(&job));
            println!("state:     {}", state_name(&job));
            println!("message:   {}", job.message.as_deref().unwrap_or("-"));
            println!(
                "cluster:   {} {}",
                job.cluster_name.as_deref().unwrap_or("-"),
                job.cluster.as_deref().unwrap_or("")
            );
            println!(
                "times:     start {:?} end {:?}",
                job.start_time, job.end_time
            );
            println!("revision:  {}  etag {}", job.revision, job.etag);
            println!("progress:  {}", progress_line(&job));
            println!("activity:");
            for line in &job.activity {
                println!("  - {line}");
            }
            let pvcs = client
                .list_pvc_progress(pb::ListPvcProgressRequest {
                    job_id: id,
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            println!("pvcs ({}):", pvcs.total);
            for p in pvcs.pvcs {
                let state = enum_name(
                    pb::PvcState::try_from(p.state)
                        .ok()
                        .map(|s| s.as_str_name()),
                    "PVC_STATE_",
                );
                let s = p.stats.unwrap_or_default();
                println!(
                    "  {}/{} {} {} {} / {}",
                    p.namespace,
                    p.name,
                    state.replace('_', "-"),
                    bar(
                        s.transferred_size.unwrap_or(0),
                        s.estimated_size.unwrap_or(0),
                        20
                    ),
                    bytes(s.transferred_size.unwrap_or(0)),
                    bytes(s.estimated_size.unwrap_or(0))
                );
            }
        }
        JobsCommand::Cancel { id, server } => {
            let mut client = connect(&server.server).await?;
            let job = client
                .cancel_job(pb::CancelJobRequest { id })
                .await
                .map_err(rpc_error)?
                .into_inner();
            println!("{} is {}", job.id, state_name(&job));
        }
    }
    Ok(())
}

/// The database the key commands work on: as `serve` finds it.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArg {
    /// Database (as for `serve`); falls back to DATABASE_URL, then `jobtrack.db`.
    #[arg(long, env = "JOBTRACK_DATABASE")]
    pub database: Option<String>,
}

impl DatabaseArg {
    fn url(&self) -> String {
        self.database
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "jobtrack.db".to_string())
    }
}

#[derive(Subcommand, Clone, Debug)]
pub enum KeysCommand {
    /// Creates a key and prints it once (only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// viewer (read, watch), operator (+ cancel), executor (create, update, report), admin.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Lists the keys (never their secrets).
    List {
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Revokes a key by its id; servers stop accepting it within a few seconds.
    Revoke {
        id: String,
        #[command(flatten)]
        database: DatabaseArg,
    },
}

pub async fn keys(command: KeysCommand) -> Result<(), String> {
    let url = match &command {
        KeysCommand::Create { database, .. }
        | KeysCommand::List { database }
        | KeysCommand::Revoke { database, .. } => database.url(),
    };
    let store = crate::store::Store::open(&url)
        .await
        .map_err(|e| e.to_string())?;
    let now = crate::domain::now_micros();
    let outcome = match command {
        KeysCommand::Create { name, role, .. } => {
            let role = crate::auth::Role::parse(&role).ok_or_else(|| {
                format!("unknown role {role:?}: use viewer, operator, executor or admin")
            })?;
            if name.trim().is_empty() {
                return Err("--name must not be empty".into());
            }
            let (key, secret) = crate::auth::generate(name.trim(), role, now);
            store.create_key(&key).await.map_err(|e| e.to_string())?;
            println!("{secret}");
            eprintln!(
                "key {} ({}, {}) created; it is shown only this once",
                key.id,
                key.name,
                role.as_str()
            );
            Ok(())
        }
        KeysCommand::List { .. } => {
            for key in store.list_keys().await.map_err(|e| e.to_string())? {
                println!(
                    "{}  {:<9} {:<24} {}",
                    key.id,
                    key.role.as_str(),
                    key.name,
                    if key.revoked.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id, .. } => {
            if store
                .revoke_key(&id, now)
                .await
                .map_err(|e| e.to_string())?
            {
                println!("key {id} revoked");
                Ok(())
            } else {
                Err(format!("no key {id}"))
            }
        }
    };
    store.close().await;
    outcome
}
