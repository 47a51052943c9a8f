//! `skewless releases`.

use clap::Args;
use skewless_client_api::wire::{Health, Release};

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
fn state(r: &Release) -> String {
    if r.canary {
        format!("{} (canary)", r.state)
    } else {
        r.state.to_string()
    }
}

/// The back end column: a URL, or a managed command's health.
fn backend(r: &Release) -> String {
    if let Some(url) = &r.backend {
        return url.clone();
    }
    let Some(st) = &r.backend_status else {
        return match r.backend_cmd {
            Some(_) => "managed (stopped)".into(),
            None => "-".into(),
        };
    };
    let mut s = format!("managed {}", st.health.as_str());
    if let Some(port) = st.port {
        s.push_str(&format!(" :{port}"));
    }
    if let Some(reason) = &st.reason {
        s.push_str(&format!(" ({reason})"));
    }
    if st.restarts > 0 {
        s.push_str(&format!(", {} restarts", st.restarts));
    }
    if st.health == Health::Unhealthy {
        if let Some(last) = st.last_lines.back() {
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
                r.id.to_string(),
                state(r),
                age(now, r.created_at),
                r.clients.total.to_string(),
                r.files.to_string(),
                bytes(r.size),
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
