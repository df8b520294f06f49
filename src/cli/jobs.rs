//! `jobtrack jobs list|get|cancel`: everyday look-ups over gRPC.

use clap::Subcommand;

use super::ServerArg;
use super::client::{connect, rpc_error};
use super::format::{
    bar, bytes, clock_micros, cut, datetime, done_of, enum_name, micros, progress_line, rate_line,
    span, span_micros, stall_note, state_name, type_name,
};
use crate::pb;

#[derive(Subcommand, Clone, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Mongo-style filter, e.g. '{"state": "RUNNING"}' or '{"stalled_since": {"$exists": true}}'.
        #[arg(long = "where", default_value = "")]
        where_: String,
        /// Order, e.g. '-_created' (newest first) or 'name,-_created'.
        #[arg(long, default_value = "-_created")]
        sort: String,
        /// Jobs to show (the server's page limit caps it).
        #[arg(long, default_value_t = 25)]
        limit: i32,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show one job with its PVC records.
    Get {
        /// The job's id (24 hex characters).
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Cancel a running K8S_SNAP or K8S_COPY job.
    Cancel {
        /// The job's id (24 hex characters).
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub(super) async fn run(command: JobsCommand) -> Result<(), String> {
    match command {
        JobsCommand::List {
            where_,
            sort,
            limit,
            server,
        } => list(&server.server, where_, sort, limit).await,
        JobsCommand::Get { id, server } => get(&server.server, id).await,
        JobsCommand::Cancel { id, server } => cancel(&server.server, id).await,
    }
}

async fn list(server: &str, where_: String, sort: String, limit: i32) -> Result<(), String> {
    let mut client = connect(server).await?;
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
    out!(
        "{:<24}  {:<9}  {:<13}  {:<28}  progress",
        "id",
        "state",
        "type",
        "name"
    );
    for job in &page.jobs {
        let progress = match stall_note(job) {
            Some(note) => format!("{note}  {}", progress_line(job)),
            None => progress_line(job),
        };
        out!(
            "{:<24}  {:<9}  {:<13}  {:<28}  {}",
            job.id,
            state_name(job),
            type_name(job),
            cut(job.name.as_deref().unwrap_or(""), 28),
            progress.trim_end()
        );
    }
    out!("{} of {} jobs", page.jobs.len(), page.total);
    Ok(())
}

async fn get(server: &str, id: String) -> Result<(), String> {
    let mut client = connect(server).await?;
    let job = client
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .map_err(rpc_error)?
        .into_inner();
    print_job(&job);
    let pvcs = client
        .list_pvc_progress(pb::ListPvcProgressRequest {
            job_id: id,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    out!("pvcs ({}):", pvcs.total);
    for p in &pvcs.pvcs {
        print_pvc(p);
    }
    Ok(())
}

fn print_job(job: &pb::Job) {
    out!("id:        {}", job.id);
    out!("name:      {}", job.name.as_deref().unwrap_or("-"));
    out!("type:      {}", type_name(job));
    out!("state:     {}", state_name(job));
    if let Some(note) = stall_note(job) {
        out!("           {note}");
    }
    out!("message:   {}", job.message.as_deref().unwrap_or("-"));
    out!(
        "cluster:   {} {}",
        job.cluster_name.as_deref().unwrap_or("-"),
        job.cluster.as_deref().unwrap_or("")
    );
    out!(
        "times:     started {}, ended {}",
        datetime(job.start_time),
        datetime(job.end_time)
    );
    if let Some(secs) = job.duration_seconds {
        let average = job
            .average_bytes_per_second
            .map(|b| format!(", {}/s on average", bytes(b)))
            .unwrap_or_default();
        out!("duration:  {}{average}", span(secs));
    }
    out!("revision:  {}  etag {}", job.revision, job.etag);
    out!("progress:  {}", progress_line(job));
    out!("activity:");
    // The times are aligned with the end of the lines (older jobs have fewer).
    let untimed = job.activity.len().saturating_sub(job.activity_times.len());
    for (i, line) in job.activity.iter().enumerate() {
        let at = i
            .checked_sub(untimed)
            .and_then(|t| job.activity_times.get(t))
            .map_or_else(|| " ".repeat(12), clock_micros);
        out!("  - {at} {line}");
    }
}

fn print_pvc(p: &pb::PvcProgress) {
    let state = enum_name(
        pb::PvcState::try_from(p.state)
            .ok()
            .map(|s| s.as_str_name()),
        "PVC_STATE_",
    );
    let s = p.stats.unwrap_or_default();
    // Progress as the server's estimates count it: the larger of what was read and sent.
    let (done, files_done) = done_of(&s);
    let total = s.estimated_size.unwrap_or(0);
    let files = match s.estimated_number_of_files {
        Some(total) => format!("  files {files_done}/{total}"),
        None => String::new(),
    };
    let finished = pb::PvcState::try_from(p.state).is_ok_and(|s| {
        !matches!(
            s,
            pb::PvcState::Pending | pb::PvcState::Active | pb::PvcState::Unspecified
        )
    });
    // The server's microsecond times when it has them, else the whole seconds.
    let took = match (&p.active_time, &p.finish_time, p.start_time, p.end_time) {
        (Some(active), Some(finish), _, _) if finished => {
            format!("  took {}", span_micros(micros(finish) - micros(active)))
        }
        (_, _, Some(start), Some(end)) if finished => format!("  took {}", span(end - start)),
        _ => String::new(),
    };
    let rate = rate_line(p.bytes_per_second, p.files_per_second, p.eta.as_ref());
    let rate = if rate.is_empty() {
        rate
    } else {
        format!("  {rate}")
    };
    out!(
        "  {}/{} {} {} {} / {}{files}{took}{rate}",
        p.namespace,
        p.name,
        state.replace('_', "-"),
        bar(done, total, 20),
        bytes(done),
        bytes(total)
    );
}

async fn cancel(server: &str, id: String) -> Result<(), String> {
    let mut client = connect(server).await?;
    let job = client
        .cancel_job(pb::CancelJobRequest { id })
        .await
        .map_err(rpc_error)?
        .into_inner();
    out!("{} is {}", job.id, state_name(&job));
    Ok(())
}
