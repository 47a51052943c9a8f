//! The command line: one file per subcommand, each parse → call → print.

pub mod canary;
pub mod deploy;
pub mod fsck;
pub mod gc;
pub mod history;
pub mod nodes;
pub mod promote;
pub mod releases;
pub mod require;
pub mod retire;
pub mod rollback;
pub mod serve;
pub mod status;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use skewless_client_api::Client;

/// Deploy a single-page app many times a day without breaking open tabs.
#[derive(Debug, Parser)]
#[command(name = "skewless", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and admin API.
    Serve(Box<serve::ServeArgs>),
    /// Upload a build directory as a new release (only the files the server lacks).
    Deploy(deploy::DeployArgs),
    /// Make a release current, or the canary for a share of new sessions.
    Promote(promote::PromoteArgs),
    /// Manage the canary.
    Canary(canary::CanaryArgs),
    /// Make every client run at least a given release (older ones reload now).
    Require(require::RequireArgs),
    /// Make the previous current release current again.
    Rollback(rollback::RollbackArgs),
    /// List releases: id, state, age, live clients, size, back end.
    Releases(releases::ReleasesArgs),
    /// Show the current release, canary, generation and live clients per release.
    Status(status::StatusArgs),
    /// Stop serving a release.
    Retire(retire::RetireArgs),
    /// Collect retired releases and delete blobs no release needs.
    Gc(gc::GcArgs),
    /// Check the blob store and state against each other (and --repair).
    Fsck(fsck::FsckArgs),
    /// Show the history of admin actions.
    History(history::HistoryArgs),
    /// List the nodes of a cluster (a single node lists itself): heartbeat, state version, streams, clients, leases, back ends.
    Nodes(nodes::NodesArgs),
}

/// How to reach a running server's admin API.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Server URL.
    #[arg(long, env = "SKEWLESS_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Admin token (default: the one in <data>/admin-token).
    #[arg(long, env = "SKEWLESS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate to trust for an https:// server (a private CA or the gateway's self-signed certificate).
    #[arg(long, env = "SKEWLESS_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Data directory to read the generated admin token from when no token is given [default: ./skewless-data].
    #[arg(long = "data", env = "SKEWLESS_DATA")]
    pub data: Option<PathBuf>,
}

impl Remote {
    /// The data directory: `--data`, else `./skewless-data`.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| PathBuf::from("./skewless-data"))
    }

    /// A client for the configured server.
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let path = self.data_dir().join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: pass --token or SKEWLESS_TOKEN (could not read {})",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        let client = Client::new(&self.server, &token)?;
        match &self.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read CA certificate {}", path.display()))?;
                Ok(client.trusting(&pem)?)
            }
            None => Ok(client),
        }
    }
}

/// Age in a short human form.
pub fn age(now: i64, then: i64) -> String {
    let s = (now - then).max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Bytes in a short human form.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Prints rows as an aligned table.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
