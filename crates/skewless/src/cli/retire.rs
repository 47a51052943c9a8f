//! `skewless retire ID`.

use clap::Args;

use super::Remote;

#[derive(Debug, Args)]
pub struct RetireArgs {
    /// Release to stop serving.
    id: String,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: RetireArgs) -> anyhow::Result<()> {
    args.remote.client()?.retire(&args.id).await?;
    println!("{} retired", args.id);
    Ok(())
}
