//! `skewless canary abort`.

use clap::{Args, Subcommand};

use super::Remote;

#[derive(Debug, Args)]
pub struct CanaryArgs {
    #[command(subcommand)]
    action: CanaryAction,
}

#[derive(Debug, Subcommand)]
enum CanaryAction {
    /// End the canary: new sessions all get the current release again.
    Abort {
        #[command(flatten)]
        remote: Remote,
    },
}

pub async fn run(args: CanaryArgs) -> anyhow::Result<()> {
    match args.action {
        CanaryAction::Abort { remote } => {
            let p = remote.client()?.abort_canary().await?;
            println!(
                "canary aborted; {} is current for every new session",
                p.current.as_ref().map_or("?", |c| c.as_str())
            );
        }
    }
    Ok(())
}
