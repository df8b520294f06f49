//! `jobtrack watch`: every event of one job (until it ends) or of every job matching a filter,
//! one line each, live. A dropped connection is retried from the last resume token, so nothing
//! is missed or repeated across a server restart.

use clap::Args;

use super::ServerArg;
use super::client::{Backoff, connect, is_transient, rpc_error};
use super::format::{event_line, now_hms};
use crate::pb;

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

/// `jobtrack watch`: prints every event; on a dropped connection, reconnects with the last
/// resume token and carries on without loss.
pub(super) async fn run(args: WatchArgs) -> Result<(), String> {
    let mut token = args.resume_token.clone();
    let mut backoff = Backoff::default();
    loop {
        let outcome = watch_once(&args, &mut token, &mut backoff).await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(status) if is_transient(&status) => {
                let wait = backoff.next_wait();
                eprintln!(
                    "{} connection lost ({}); reconnecting in {wait:?} from the last resume token",
                    now_hms(),
                    status.message()
                );
                tokio::time::sleep(wait).await;
            }
            Err(status) => return Err(rpc_error(status)),
        }
    }
}

/// One stream until it ends or fails; a stream that delivers an event counts as a good
/// reconnect (the next outage waits the shortest time again).
async fn watch_once(
    args: &WatchArgs,
    token: &mut String,
    backoff: &mut Backoff,
) -> Result<(), tonic::Status> {
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
        backoff.succeeded();
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
