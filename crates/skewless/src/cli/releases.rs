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

/// The state column; the canary is marked.
fn state(r: &serde_json::Value) -> String {
    let s = r["state"].as_str().unwrap_or("").to_owned();
    if r["canary"].as_bool() == Some(true) {
        format!("{s} (canary)")
    } else {
        s
    }
}

/// The back end column: a URL, or a managed command's health.
fn backend(r: &serde_json::Value) -> String {
    if let Some(url) = r["backend"].as_str() {
        return url.to_owned();
    }
    let st = &r["backend_status"];
    if st.is_null() {
        return match r["backend_cmd"].as_str() {
            Some(_) => "managed (stopped)".into(),
            None => "-".into(),
        };
    }
    let health = st["health"].as_str().unwrap_or("?");
    let mut s = format!("managed {health}");
    if let Some(port) = st["port"].as_u64() {
        s.push_str(&format!(" :{port}"));
    }
    if let Some(reason) = st["reason"].as_str() {
        s.push_str(&format!(" ({reason})"));
    }
    if let Some(n) = st["restarts"].as_u64().filter(|n| *n > 0) {
        s.push_str(&format!(", {n} restarts"));
    }
    if health == "unhealthy" {
        let lines: Vec<&str> = st["last_lines"]
            .as_array()
            .map(|a| a.iter().filter_map(|l| l.as_str()).collect())
            .unwrap_or_default();
        if let Some(last) = lines.last() {
            s.push_str(&format!("; last output: {last}"));
        }
    }
    s
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
                state(r),
                age(now, r["created_at"].as_i64().unwrap_or(now)),
                r["clients"]["total"].as_u64().unwrap_or(0).to_string(),
                r["files"].to_string(),
                bytes(r["size"].as_u64().unwrap_or(0)),
                backend(r),
            ]
        })
        .collect();
    print_table(
        &["ID", "STATE", "AGE", "CLIENTS", "FILES", "SIZE", "BACKEND"],
        &rows,
    );
    Ok(())
}
