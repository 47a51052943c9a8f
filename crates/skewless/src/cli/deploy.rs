//! `skewless deploy DIR`.

use std::path::PathBuf;

use clap::Args;
use skewless_client_api::DeployOptions;

use super::{bytes, Remote};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Build output directory (must contain index.html).
    dir: PathBuf,
    /// Release id ([A-Za-z0-9._-]{1,64}); generated when absent.
    #[arg(long)]
    release: Option<String>,
    /// Back end URL this release's API calls go to (http or https).
    #[arg(long, conflicts_with = "backend_cmd")]
    backend: Option<String>,
    /// Command skewless runs as this release's back end; `{port}` (and env
    /// PORT) is its port, env SKEWLESS_RELEASE its release.
    #[arg(long)]
    backend_cmd: Option<String>,
    /// Health-check path of the managed back end (default from the server's config, /healthz).
    #[arg(long, requires = "backend_cmd")]
    health: Option<String>,
    /// Make the release current once registered.
    #[arg(long)]
    promote: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let client = args.remote.client()?;
    let report = client
        .deploy(
            &args.dir,
            &DeployOptions {
                release: args.release,
                backend: args.backend,
                backend_cmd: args.backend_cmd,
                health: args.health,
                promote: args.promote,
            },
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    eprintln!(
        "uploaded {} of {} files ({} of {}){}",
        report.uploaded_files,
        report.files,
        bytes(report.uploaded_bytes),
        bytes(report.bytes),
        if report.promoted { "; promoted" } else { "" }
    );
    println!("{}", report.id);
    Ok(())
}
