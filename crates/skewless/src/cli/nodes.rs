//! `skewless nodes`.

use clap::Args;

use super::Remote;

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: NodesArgs) -> anyhow::Result<()> {
    let nodes = args.remote.client()?.nodes().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<22} {:<8} {:>8} {:>10} {:>7} {:>7}  {:<26} BACK ENDS",
        "NODE", "ADDRESS", "VERSION", "STATE V", "HEARTBEAT", "STREAMS", "CLIENTS", "LEASES"
    );
    for n in &nodes {
        let r = &n.report;
        let heard = if n.live {
            format!("{}s ago", n.silent_secs)
        } else {
            format!("{}s SILENT", n.silent_secs)
        };
        let leases = if r.leases.is_empty() {
            "-".to_owned()
        } else {
            r.leases.join(",")
        };
        let backends: Vec<String> = r
            .backends
            .iter()
            .map(|(id, h)| format!("{id}={}", h.as_str()))
            .collect();
        println!(
            "{:<24} {:<22} {:<8} {:>8} {:>10} {:>7} {:>7}  {:<26} {}",
            r.id,
            r.address,
            r.version,
            r.cluster_version,
            heard,
            r.event_streams,
            r.clients,
            leases,
            if backends.is_empty() {
                "-".to_owned()
            } else {
                backends.join(", ")
            }
        );
    }
    Ok(())
}
