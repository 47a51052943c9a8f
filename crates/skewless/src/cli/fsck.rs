//! `skewless fsck [--repair]`: through a running server's admin API, or, with
//! `--data DIR` naming a stopped server's data directory, on its embedded
//! store directly.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use skewless_server::DataLock;
use skewless_state::Sqlite;
use skewless_store::LocalDir;

use super::{print_table, Remote};

#[derive(Debug, Args)]
#[command(
    after_help = "With --data DIR and no server holding DIR (the server is stopped), fsck opens \
                  the embedded store in DIR itself and holds DIR's lock while it runs, so a \
                  server cannot start on it meanwhile. Otherwise it asks the running server."
)]
pub struct FsckArgs {
    /// Mend what can be mended: remake variants, delete corrupt blobs so the
    /// next deploy uploads them again. Without it nothing changes.
    #[arg(long)]
    repair: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: FsckArgs) -> anyhow::Result<()> {
    let r = match args.remote.data.as_deref() {
        Some(dir) if is_stopped_store(dir) => offline(dir, args.repair).await?,
        _ => args.remote.client()?.fsck(args.repair).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&r);
    }
    if r["ok"].as_bool() != Some(true) {
        anyhow::bail!(
            "fsck found problems{}",
            if args.repair {
                " it could not repair"
            } else {
                "; see above, or run with --repair"
            }
        );
    }
    Ok(())
}

/// `dir` holds an embedded store that no process has open.
fn is_stopped_store(dir: &Path) -> bool {
    dir.join("state.db").is_file() && !DataLock::is_held(dir)
}

/// Checks the embedded store in `dir` without a server.
async fn offline(dir: &Path, repair: bool) -> anyhow::Result<serde_json::Value> {
    let _lock = DataLock::acquire(dir)?;
    eprintln!(
        "checking the embedded store in {} directly (no server is running on it)",
        dir.display()
    );
    let state = Sqlite::open(&dir.join("state.db"))
        .with_context(|| format!("cannot open {}", dir.join("state.db").display()))?;
    let store = LocalDir::open(dir.join("blobs"))?;
    let report = skewless_server::fsck::check(&state, &store, repair).await?;
    Ok(serde_json::to_value(report)?)
}

fn print_report(r: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let problems = r["problems"].as_array().cloned().unwrap_or_default();
    if !problems.is_empty() {
        let rows: Vec<Vec<String>> = problems
            .iter()
            .map(|p| {
                let hash = s(&p["hash"]);
                vec![
                    s(&p["kind"]),
                    s(&p["release"]),
                    s(&p["path"]),
                    hash.chars().take(12).collect(),
                    s(&p["detail"]),
                    s(&p["repaired"]),
                ]
            })
            .collect();
        print_table(
            &["PROBLEM", "RELEASE", "PATH", "BLOB", "DETAIL", "REPAIRED"],
            &rows,
        );
    }
    println!(
        "checked {} releases, {} blobs: {}",
        r["releases"],
        r["blobs"],
        if r["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "problems found"
        }
    );
}
