//! `skewless serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use skewless_server::ServerConfig;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, env = "SKEWLESS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory: state database, blobs and the generated admin token.
    #[arg(long, env = "SKEWLESS_DATA", default_value = "./skewless-data")]
    data: PathBuf,
    /// Admin token (default: generated on first start into <data>/admin-token).
    #[arg(long, env = "SKEWLESS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Largest blob upload accepted, in bytes.
    #[arg(long, env = "SKEWLESS_MAX_UPLOAD", default_value_t = 512 * 1024 * 1024)]
    max_upload: u64,
    /// Deploy and promote the bundled example app once the server is up.
    #[arg(long)]
    demo: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKEWLESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = ServerConfig::new(args.listen, args.data.clone());
    config.admin_token = args.admin_token;
    config.max_upload_bytes = args.max_upload;
    if args.demo {
        let data = args.data.clone();
        let listen = args.listen;
        tokio::spawn(async move {
            if let Err(e) = demo(listen, data).await {
                eprintln!("error: demo deploy failed: {e:#}");
            }
        });
    }
    skewless_server::run(config)
        .await
        .context("gateway stopped")?;
    Ok(())
}

/// Deploys the example app v1 to the server that is starting in this process.
async fn demo(listen: SocketAddr, data: PathBuf) -> anyhow::Result<()> {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let token_path = data.join("admin-token");
    let server = format!("http://{listen}");
    // Wait until the server has written its token and answers.
    let client = loop {
        if let Ok(t) = std::fs::read_to_string(&token_path) {
            let client = skewless_client_api::Client::new(&server, t.trim())?;
            if client.status().await.is_ok() {
                break client;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let status = client.status().await?;
    if !status["current"].is_null() {
        println!(
            "demo: {} is already current at {server}/",
            status["current"]
        );
        return Ok(());
    }
    let report = client
        .deploy(
            &examples.join("app-v1"),
            &skewless_client_api::DeployOptions {
                release: None,
                backend: None,
                promote: true,
            },
        )
        .await?;
    println!(
        "demo: deployed example v1 as {} — open {server}/",
        report.id
    );
    println!(
        "demo: now deploy v2 while the tab stays open:  cargo run --release -- deploy {} --promote",
        examples.join("app-v2").display()
    );
    Ok(())
}
