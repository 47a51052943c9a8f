//! `skewless promote ID`.

use clap::Args;

use super::Remote;

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Release to make current.
    id: String,
    /// Clients of older releases must reload now.
    #[arg(long)]
    required: bool,
    /// Promote even if the release's managed back end is not healthy.
    #[arg(long)]
    force: bool,
    /// Give the release to this share of new sessions only (a canary, sticky by cookie); 100 promotes fully.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100), default_value_t = 100)]
    percent: u8,
    #[command(flatten)]
    remote: Remote,
}

pub async fn run(args: PromoteArgs) -> anyhow::Result<()> {
    let p = args
        .remote
        .client()?
        .promote_to(&args.id, args.percent, args.required, args.force)
        .await?;
    if args.percent < 100 {
        println!(
            "{} is the canary for {}% of new sessions ({} stays current)",
            args.id,
            args.percent,
            p.current.as_ref().map_or("?", |c| c.as_str())
        );
        return Ok(());
    }
    println!(
        "{} is current (generation {}){}",
        args.id,
        p.generation,
        if args.required {
            "; older clients must reload"
        } else {
            ""
        }
    );
    Ok(())
}
