//! The gateway's typed configuration, built once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory of the embedded state database, blobs and admin token.
    pub data_dir: PathBuf,
    /// Admin token; generated and stored in `<data>/admin-token` when absent.
    pub admin_token: Option<String>,
    /// Largest blob upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Unreferenced blobs younger than this survive gc (deploys in flight).
    pub gc_grace_secs: i64,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_grace_secs: u64,
}

impl ServerConfig {
    /// Defaults for a data directory.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            data_dir,
            admin_token: None,
            max_upload_bytes: 512 * 1024 * 1024,
            gc_grace_secs: 3600,
            shutdown_grace_secs: 10,
        }
    }
}
