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
    let blobs = r["blobs"].as_array().cloned().unwrap_or_default();
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    if args.dry_run {
        for b in &blobs {
            println!(
                "{}  {}",
                b["hash"].as_str().unwrap_or(""),
                bytes(b["bytes"].as_u64().unwrap_or(0))
            );
        }
    }
    let releases: Vec<&str> = r["collected_releases"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    println!(
        "{verb} {} blobs, {}{}",
        blobs.len(),
        bytes(r["bytes"].as_u64().unwrap_or(0)),
        if releases.is_empty() {
            String::new()
        } else {
            format!("; collected {}", releases.join(", "))
        }
    );
    Ok(())
}
