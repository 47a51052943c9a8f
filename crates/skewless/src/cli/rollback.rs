//! `skewless rollback`.

use clap::Args;

use super::Remote;

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let p = args.remote.client()?.rollback().await?;
    println!(
        "{} is current again (generation {})",
        p.current.as_ref().map_or("?", |c| c.as_str()),
        p.generation
    );
    Ok(())
}
