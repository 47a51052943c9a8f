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
    let none = || "(none)".to_owned();
    let name =
        |id: &Option<skewless_core::ReleaseId>| id.as_ref().map_or_else(none, |i| i.to_string());
    println!("current:       {}", name(&s.current));
    println!("generation:    {}", s.generation);
    println!("required min:  {}", name(&s.required_min));
    println!("event streams: {}", s.event_streams);
    let parts: Vec<String> = s.releases.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "releases:      {}",
        if parts.is_empty() {
            none()
        } else {
            parts.join(", ")
        }
    );
    println!("clients:");
    for (id, c) in &s.clients {
        println!(
            "  {id:<24} {} live ({} streams, {} recent)",
            c.total, c.streams, c.recent
        );
    }
    Ok(())
}
