//! `skewless require [ID] [--clear]`.

use clap::Args;

use super::Remote;

#[derive(Debug, Args)]
pub struct RequireArgs {
    /// Clients of releases older than this one must reload now.
    #[arg(required_unless_present = "clear")]
    id: Option<String>,
    /// Remove the requirement.
    #[arg(long, conflicts_with = "id")]
    clear: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: RequireArgs) -> anyhow::Result<()> {
    let client = args.remote.client()?;
    client.set_required(args.id.as_deref()).await?;
    match args.id {
        Some(id) => println!("clients of releases older than {id} must reload now"),
        None => println!("no release is required any more"),
    }
    Ok(())
}
