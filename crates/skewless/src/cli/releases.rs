//! `skewless releases`.

use clap::Args;

use super::{age, bytes, now, print_table, Remote};

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: ReleasesArgs) -> anyhow::Result<()> {
    let list = args.remote.client()?.releases().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let now = now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r["id"].as_str().unwrap_or("").to_owned(),
                r["state"].as_str().unwrap_or("").to_owned(),
                age(now, r["created_at"].as_i64().unwrap_or(now)),
                r["files"].to_string(),
                bytes(r["size"].as_u64().unwrap_or(0)),
                r["backend"].as_str().unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    print_table(&["ID", "STATE", "AGE", "FILES", "SIZE", "BACKEND"], &rows);
    Ok(())
}
