//! The command line: the whole clap tree and what each command does. `serve` starts the server;
//! every other command is a client tool for people at a terminal and for scripts — `watch`,
//! `jobs`, `keys`, `subscriptions`, `whoami`, the `simulate` demo executor and the `bench` load generator. The
//! tools talk to a server only through its public gRPC API ([`client`]); `keys` opens the
//! database directly, as `serve` does.

/// `println!` for the client commands: a reader that has gone (`jobtrack jobs list | head`) ends
/// the command quietly instead of a panic on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}

mod bench;
mod client;
mod format;
mod jobs;
mod keys;
mod live;
mod serve;
mod simulate;
mod subscriptions;
mod watch;

use clap::{Args, Parser, Subcommand};

pub use serve::ServeArgs;

#[derive(Parser, Debug)]
#[command(
    name = "jobtrack",
    version,
    about = "Job tracking for Kubernetes backups: gRPC, live watch streams, SQLite or Postgres."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve gRPC, gRPC-web, the REST gateway, the dashboard and /metrics on one port.
    Serve(ServeArgs),
    /// Load-test a running server and print throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Follow one job (until it ends) or every job matching --where, live: progress bars on a
    /// terminal, one line (or JSON object) per event when piped; reconnects with the last
    /// resume token after a dropped connection.
    Watch(watch::WatchArgs),
    /// Everyday look-ups: list, get, cancel.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Demo executor: drives realistic jobs through their life cycles against a server.
    Simulate(simulate::SimulateArgs),
    /// API keys in the database: create (prints the key once), list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Webhook subscriptions: create (prints its id and secret once), list, delete, and their
    /// delivery attempts (an admin key).
    #[command(subcommand)]
    Subscriptions(subscriptions::SubscriptionsCommand),
    /// Which key JOBTRACK_KEY is, and what its role may and may not do (asks the server).
    Whoami(ServerArg),
}

impl Command {
    /// Whether this command runs the server (whose failures also belong in its log).
    pub fn is_server(&self) -> bool {
        matches!(self, Command::Serve(_))
    }
}

/// The server a client command talks to.
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

/// Runs one command to its end; the error is what to tell the user.
pub async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Jobs(command) => jobs::run(command).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Keys(command) => keys::run(command).await,
        Command::Subscriptions(command) => subscriptions::run(command).await,
        Command::Whoami(server) => keys::whoami(server).await,
    }
}

/// Writes one line to standard output; exits quietly (status 0) if nobody reads it any more.
pub(crate) fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        std::process::exit(0);
    }
}
