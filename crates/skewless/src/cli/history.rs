//! `skewless history`.

use clap::Args;

use super::{print_table, Remote};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many entries, newest last.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let h = args.remote.client()?.history(args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(());
    }
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let rows: Vec<Vec<String>> = h
        .iter()
        .map(|e| {
            let when = time::OffsetDateTime::from_unix_timestamp(e.at)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| e.at.to_string());
            vec![
                when,
                e.action.to_string(),
                s(&e.release),
                s(&e.before),
                s(&e.after),
                e.actor.clone(),
                s(&e.detail),
            ]
        })
        .collect();
    print_table(
        &[
            "TIME", "ACTION", "RELEASE", "BEFORE", "AFTER", "BY", "DETAIL",
        ],
        &rows,
    );
    Ok(())
}
