//! `skewless`: deploy a single-page app many times a day without breaking
//! the tabs people keep open. This file only parses arguments and maps
//! errors to exit codes; the work is in the library crates.

mod cli;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // `serve`'s configuration is merged first: it says how many threads
    // the runtime gets.
    let serve_config = match &cli.command {
        Command::Serve(args) => match args.config() {
            Ok(config) => Some(config),
            Err(e) => fail(e),
        },
        _ => None,
    };
    let mut builder = match serve_config.as_ref().and_then(|c| c.workers) {
        // One thread: everything on this one, no hand-offs between threads.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        // The other commands: tokio's default, one worker per CPU.
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let config = serve_config.expect("merged above");
                cli::serve::run(*args, config).await
            }
            Command::Deploy(args) => cli::deploy::run(args).await,
            Command::Promote(args) => cli::promote::run(args).await,
            Command::Canary(args) => cli::canary::run(args).await,
            Command::Require(args) => cli::require::run(args).await,
            Command::Rollback(args) => cli::rollback::run(args).await,
            Command::Releases(args) => cli::releases::run(args).await,
            Command::Status(args) => cli::status::run(args).await,
            Command::Retire(args) => cli::retire::run(args).await,
            Command::Gc(args) => cli::gc::run(args).await,
            Command::History(args) => cli::history::run(args).await,
            Command::Nodes(args) => cli::nodes::run(args).await,
            Command::Fsck(args) => cli::fsck::run(args).await,
        }
    });
    if let Err(e) = result {
        fail(e);
    }
}

/// Prints an error with its causes on one line and exits 1.
fn fail(e: anyhow::Error) -> ! {
    let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    eprintln!("error: {}", msg.join(": "));
    std::process::exit(1);
}
