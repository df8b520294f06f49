//! `jobtrack`: thin entry point. Everything testable lives in the library.

use clap::Parser;

use jobtrack::cli::Cli;

/// mimalloc rather than glibc's allocator: see README, "What limits it" (measured).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    jobtrack::telemetry::init();
    let serving = cli.command.is_server();
    let result = jobtrack::cli::run(cli.command).await;
    jobtrack::telemetry::shutdown();
    match result {
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
