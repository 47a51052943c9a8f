//! `skewless gc`.

use clap::Args;

use super::{bytes, Remote};

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Show what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: GcArgs) -> anyhow::Result<()> {
    let r = args.remote.client()?.gc(args.dry_run).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    if args.dry_run {
        for b in &r.blobs {
            println!("{}  {}", b.hash, bytes(b.bytes));
        }
    }
    let releases: Vec<String> = r.collected_releases.iter().map(|i| i.to_string()).collect();
    println!(
        "{verb} {} blobs, {}{}",
        r.blobs.len(),
        bytes(r.bytes),
        if releases.is_empty() {
            String::new()
        } else {
            format!("; collected {}", releases.join(", "))
        }
    );
    Ok(())
}
