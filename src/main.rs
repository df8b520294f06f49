//! `jobtrack`: thin entry point. Everything testable lives in the library.

use clap::Parser;

use jobtrack::config::{Cli, Command};
use jobtrack::startup::{Application, shutdown_signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    jobtrack::telemetry::init();
    let serving = matches!(cli.command, Command::Serve(_));
    let outcome = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Bench(args) => jobtrack::bench::run(args).await,
        Command::Watch(args) => jobtrack::cli::watch(args).await,
        Command::Jobs(command) => jobtrack::cli::jobs(command).await,
        Command::Simulate(args) => jobtrack::simulate::run(args).await,
        Command::Keys(command) => jobtrack::cli::keys(command).await,
        Command::Whoami(server) => jobtrack::cli::whoami(server).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            // A server's failure belongs in its log too; a command's is said once, on stderr.
            if serving {
                tracing::error!("{message}");
            }
            eprintln!("jobtrack: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: jobtrack::config::ServeArgs) -> Result<(), String> {
    let config = args.config();
    tracing::info!(database = %jobtrack::config::redacted(&config.database), "opening the store");
    let app = Application::build(config)
        .await
        .map_err(|e| e.to_string())?;
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
