//! `skewless fsck [--repair]`: through a running server's admin API, or, with
//! `--data DIR` naming a stopped server's data directory, on its embedded
//! store directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use skewless_client_api::wire::FsckReport;
use skewless_server::{BlobLocation, DataLock, ServerConfig};
use skewless_state::Sqlite;
use skewless_store::{BlobStore, LocalDir};

use super::{print_table, Remote};

#[derive(Debug, Args)]
#[command(
    after_help = "With --data DIR and no server holding DIR (the server is stopped), fsck opens \
                  the embedded store in DIR itself, with the blobs where --blobs says, and holds \
                  DIR's lock while it runs, so a server cannot start on it meanwhile. Otherwise \
                  it asks the running server, which repairs from its own local copies (its cache)."
)]
pub struct FsckArgs {
    /// Mend what can be mended: store lost or corrupt blobs again from a
    /// local copy where there is one, else delete corrupt blobs so the next
    /// deploy uploads them again; remake variants. Without it nothing changes.
    #[arg(long)]
    repair: bool,
    /// Where the stopped server's blobs live (as `serve --blobs`): a
    /// directory or s3://bucket[/prefix] [default: <data>/blobs].
    #[arg(long, env = "SKEWLESS_BLOBS", value_name = "DIR|s3://BUCKET[/PREFIX]")]
    blobs: Option<PathBuf>,
    /// A blob directory (as `serve --blobs DIR` keeps one) holding copies
    /// that --repair may store again; only with --data of a stopped server.
    #[arg(long, value_name = "DIR")]
    copy_from: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: FsckArgs) -> anyhow::Result<()> {
    let r = match args.remote.data.as_deref() {
        Some(dir) if is_stopped_store(dir) => offline(dir, &args).await?,
        _ if args.copy_from.is_some() => {
            anyhow::bail!("--copy-from needs --data DIR naming a stopped server's data directory")
        }
        _ => args.remote.client()?.fsck(args.repair).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_report(&r);
    }
    if !r.ok {
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
async fn offline(dir: &Path, args: &FsckArgs) -> anyhow::Result<FsckReport> {
    let _lock = DataLock::acquire(dir)?;
    eprintln!(
        "checking the embedded store in {} directly (no server is running on it)",
        dir.display()
    );
    let state = Sqlite::open(&dir.join("state.db"))
        .with_context(|| format!("cannot open {}", dir.join("state.db").display()))?;
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), dir.to_owned());
    config.blobs = args.blobs.clone();
    let store: Arc<dyn BlobStore> = match config.blob_location()? {
        BlobLocation::Dir(blobs) => Arc::new(LocalDir::open(blobs)?),
        BlobLocation::S3(url) => super::serve::remote_blobs(&config, url)?,
    };
    let copies = match &args.copy_from {
        Some(d) if !d.is_dir() => anyhow::bail!("--copy-from {}: no such directory", d.display()),
        Some(d) => Some(LocalDir::open_shared(d)?),
        None => None,
    };
    let copies = copies.as_ref().map(|c| c as &dyn BlobStore);
    Ok(skewless_server::operations::check(&state, store.as_ref(), args.repair, copies).await?)
}

fn print_report(r: &FsckReport) {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    if !r.problems.is_empty() {
        let rows: Vec<Vec<String>> = r
            .problems
            .iter()
            .map(|p| {
                vec![
                    p.kind.clone(),
                    s(&p.release),
                    s(&p.path),
                    s(&p.hash).chars().take(12).collect(),
                    p.detail.clone(),
                    s(&p.repaired),
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
        r.releases,
        r.blobs,
        if r.ok { "ok" } else { "problems found" }
    );
}
