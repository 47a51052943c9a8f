//! The skewless gateway: resolves every request to a release (DESIGN.md's
//! resolution order), serves immutable assets and the rewritten shell, pushes
//! releases to open tabs over server-sent events, and exposes the admin API.

mod access_log;
mod admin;
mod auth;
mod client_js;
mod clock;
mod cluster;
mod config;
mod conns;
mod datadir;
mod error;
mod gateway;
mod h1;
mod http1;
mod last_state;
mod limits;
mod listener;
mod metrics;
pub mod operations;
mod prefetch;
mod presence;
mod proxy;
mod reaper;
mod redirect;
mod restyle;
mod sampler;
mod sendfile;
mod serve;
mod server;
mod service_worker;
pub mod shell;
mod snapshot;
mod supervisor;
mod tls;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    BackendDefaults, BlobLocation, ClusterTiming, ObjectStoreTiming, Retention, Role, Sampling,
    ServerConfig, TokenConfig, MAX_WORKERS,
};
pub use datadir::DataLock;
pub use error::ServerError;
pub use gateway::{Adapters, Gateway};
pub use last_state::path as last_state_path;
pub use operations::{Operations, Settings};
pub use server::{bind, run, Bound};
