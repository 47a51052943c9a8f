//! `skewless status`.

use clap::Args;

use super::Remote;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let s = args.remote.client()?.status().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "current:       {}",
        s["current"].as_str().unwrap_or("(none)")
    );
    println!("generation:    {}", s["generation"]);
    println!(
        "required min:  {}",
        s["required_min"].as_str().unwrap_or("(none)")
    );
    println!("event streams: {}", s["event_streams"]);
    if let Some(counts) = s["releases"].as_object() {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "releases:      {}",
            if parts.is_empty() {
                "(none)".into()
            } else {
                parts.join(", ")
            }
        );
    }
    if let Some(clients) = s["clients"].as_object() {
        println!("clients:");
        for (id, c) in clients {
            println!(
                "  {id:<24} {} live ({} streams, {} recent)",
                c["total"], c["streams"], c["recent"]
            );
        }
    }
    Ok(())
}
