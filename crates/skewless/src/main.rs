//! `skewless`: deploy a single-page app many times a day without breaking
//! the tabs people keep open. This file only parses arguments and maps
//! errors to exit codes; the work is in the library crates.

mod cli;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        // `serve`'s configuration is merged before the runtime is built:
        // it says how many threads the runtime gets.
        Command::Serve(args) => args
            .config()
            .and_then(|config| runtime(config.workers).block_on(cli::serve::run(*args, config))),
        Command::Deploy(args) => client(cli::deploy::run(args)),
        Command::Promote(args) => client(cli::promote::run(args)),
        Command::Canary(args) => client(cli::canary::run(args)),
        Command::Require(args) => client(cli::require::run(args)),
        Command::Rollback(args) => client(cli::rollback::run(args)),
        Command::Releases(args) => client(cli::releases::run(args)),
        Command::Status(args) => client(cli::status::run(args)),
        Command::Retire(args) => client(cli::retire::run(args)),
        Command::Gc(args) => client(cli::gc::run(args)),
        Command::History(args) => client(cli::history::run(args)),
        Command::Nodes(args) => client(cli::nodes::run(args)),
        Command::Fsck(args) => client(cli::fsck::run(args)),
    };
    if let Err(e) = result {
        fail(e);
    }
}

/// Runs a command other than `serve` on tokio's default runtime.
fn client(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    runtime(None).block_on(command)
}

/// The async runtime: with one worker, tokio's single-threaded scheduler
/// (everything on this thread, no hand-offs between threads); else the
/// multi-thread one with `workers` threads, or one per CPU.
fn runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// Prints an error with its causes on one line and exits 1.
fn fail(e: anyhow::Error) -> ! {
    let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    eprintln!("error: {}", msg.join(": "));
    std::process::exit(1);
}
