//! `jobtrack watch`: every event of one job (until it ends) or of every job matching a filter,
//! live. On a terminal it draws progress bars ([`super::live`]); piped, or with `--output
//! lines`, it prints one line per event (on a terminal cut to its width); `--output json` prints
//! each event as one JSON object per line. A dropped connection is retried from the last resume
//! token, so nothing is missed or repeated across a server restart; `Ctrl-C` prints the token to
//! carry on from.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, ValueEnum};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use super::ServerArg;
use super::client::{Backoff, Client, connect, is_transient, rpc_error};
use super::format::{event_line, now_hms};
use super::live::LiveView;
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
    /// How to show events: `live` bars (the default on a terminal), `lines` (one line per
    /// event; the default when piped), or `json` (each event as one JSON object per line).
    #[arg(long, value_enum)]
    pub output: Option<Output>,
    /// In the live view, a line under each job for each of its unfinished PVC records.
    #[arg(long)]
    pub pvcs: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Live,
    Lines,
    Json,
}

/// Where events go.
enum Sink {
    Live(Box<LiveView>),
    /// `width`: the terminal's, when stdout is one (lines are cut to it).
    Lines {
        width: Option<usize>,
    },
    Json(prost_reflect::MessageDescriptor),
}

impl Sink {
    fn new(args: &WatchArgs) -> Result<Sink, String> {
        if args.pvcs && matches!(args.output, Some(Output::Lines | Output::Json)) {
            return Err(
                "--pvcs adds PVC lines to the live view; --output lines and json already show \
                 every PVC event"
                    .into(),
            );
        }
        let terminal = std::io::stdout().is_terminal();
        let output = args.output.unwrap_or(if terminal {
            Output::Live
        } else {
            Output::Lines
        });
        Ok(match output {
            Output::Live => {
                let scope = match (&args.job_id, args.where_.trim()) {
                    (Some(id), _) => format!("job {id}"),
                    (None, "") => "all jobs".into(),
                    (None, w) => format!("jobs where {w}"),
                };
                Sink::Live(Box::new(LiveView::new(
                    scope,
                    args.job_id.is_some(),
                    args.pvcs,
                )))
            }
            Output::Lines => Sink::Lines {
                width: terminal.then(terminal_width),
            },
            Output::Json => {
                let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
                    .map_err(|e| format!("the built-in descriptors: {e}"))?;
                Sink::Json(
                    pool.get_message_by_name("jobtrack.v1.JobEvent")
                        .ok_or("the built-in descriptors lack jobtrack.v1.JobEvent")?,
                )
            }
        })
    }

    async fn event(&mut self, event: &pb::JobEvent, client: &mut Client) {
        if event.r#type == pb::JobEventType::Heartbeat as i32 {
            return;
        }
        match self {
            Sink::Live(view) => view.event(event, client).await,
            Sink::Lines { width } => out!("{}", fit(&event_line(event), *width)),
            Sink::Json(descriptor) => out!("{}", event_json(descriptor, event)),
        }
    }

    /// A note for the person watching (on stderr, or in the live view's header).
    fn notice(&mut self, text: String) {
        match self {
            Sink::Live(view) => view.notice(text),
            Sink::Lines { width } => eprintln!("{}", fit(&text, *width)),
            Sink::Json(_) => eprintln!("{text}"),
        }
    }

    fn tick(&mut self) {
        if let Sink::Live(view) = self {
            view.tick();
        }
    }

    /// The watched job has ended.
    fn ended(&mut self) {
        let line = format!("{} the job has ended", now_hms());
        match self {
            Sink::Live(view) => {
                view.println(&line);
                view.close();
            }
            Sink::Lines { .. } => out!("{line}"),
            Sink::Json(_) => {}
        }
    }

    fn close(&mut self) {
        if let Sink::Live(view) = self {
            view.close();
        }
    }
}

/// `jobtrack watch`: shows every event; on a dropped connection, reconnects with the last
/// resume token and carries on without loss. Ctrl-C stops it and prints how to carry on.
pub(super) async fn run(args: WatchArgs) -> Result<(), String> {
    let mut sink = Sink::new(&args)?;
    let mut token = args.resume_token.clone();
    let mut backoff = Backoff::default();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let outcome = tokio::select! {
            outcome = watch_once(&args, &mut token, &mut backoff, &mut sink) => Some(outcome),
            _ = &mut interrupted => None,
        };
        match outcome {
            None => stop(&mut sink, &args, &token),
            Some(Ok(())) => return Ok(()),
            Some(Err(status)) if is_transient(&status) => {
                let wait = backoff.next_wait();
                sink.notice(format!(
                    "{} connection lost ({}); reconnecting in {wait:?} from the last resume token",
                    now_hms(),
                    status.message()
                ));
                let pause = tokio::time::sleep(wait);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        _ = &mut interrupted => stop(&mut sink, &args, &token),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => sink.tick(),
                    }
                }
            }
            Some(Err(status)) => {
                sink.close();
                return Err(rpc_error(status));
            }
        }
    }
}

/// Ctrl-C: clears the bars and says how to carry on from the last event shown.
fn stop(sink: &mut Sink, args: &WatchArgs, token: &str) -> ! {
    sink.close();
    eprintln!("{} stopped.", now_hms());
    if !token.is_empty() {
        let mut again = String::from("jobtrack watch");
        if let Some(id) = &args.job_id {
            again.push_str(&format!(" {}", shell_quote(id)));
        }
        if !args.where_.is_empty() {
            again.push_str(&format!(" --where {}", shell_quote(&args.where_)));
        }
        eprintln!("To carry on from here: {again} --resume-token {token}");
    }
    std::process::exit(130);
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// One stream until it ends or fails; a stream that delivers an event counts as a good
/// reconnect (the next outage waits the shortest time again).
async fn watch_once(
    args: &WatchArgs,
    token: &mut String,
    backoff: &mut Backoff,
    sink: &mut Sink,
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
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = stream.message() => event?,
            _ = ticks.tick() => {
                sink.tick();
                continue;
            }
        };
        let Some(event) = event else { break };
        backoff.succeeded();
        sink.event(&event, &mut client).await;
        token.clone_from(&event.resume_token);
    }
    if args.job_id.is_some() {
        sink.ended();
    }
    Ok(())
}

/// `line` cut to `width` columns, when there is one.
fn fit(line: &str, width: Option<usize>) -> std::borrow::Cow<'_, str> {
    match width {
        Some(width) => console::truncate_str(line, width, "…"),
        None => line.into(),
    }
}

fn terminal_width() -> usize {
    console::Term::stdout()
        .size_checked()
        .map_or(80, |(_, cols)| cols as usize)
}

/// One event in the protobuf JSON mapping, with the proto's field names (as in the REST API)
/// and enum values by name: what `buf curl` and `grpcurl` print, on one line.
fn event_json(descriptor: &prost_reflect::MessageDescriptor, event: &pb::JobEvent) -> String {
    let bytes = event.encode_to_vec();
    let message = match DynamicMessage::decode(descriptor.clone(), bytes.as_slice()) {
        Ok(message) => message,
        Err(e) => return serde_json::json!({"error": e.to_string()}).to_string(),
    };
    let options = SerializeOptions::new().use_proto_field_name(true);
    let mut out = serde_json::Serializer::new(Vec::new());
    match message.serialize_with_options(&mut out, &options) {
        Ok(()) => String::from_utf8(out.into_inner()).unwrap_or_default(),
        Err(e) => serde_json::json!({"error": e.to_string()}).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carry_on_command_quotes_what_the_shell_would_split() {
        assert_eq!(
            shell_quote("6b0f376cd4203040ce000000"),
            "6b0f376cd4203040ce000000"
        );
        assert_eq!(
            shell_quote(r#"{"state":"RUNNING"}"#),
            r#"'{"state":"RUNNING"}'"#
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
