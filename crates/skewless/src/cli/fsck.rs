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
