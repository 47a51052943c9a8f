//! `skewless fsck [--repair]`.

use clap::Args;

use super::{print_table, Remote};

#[derive(Debug, Args)]
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
    let r = args.remote.client()?.fsck(args.repair).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
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
