//! The skewless gateway: resolves every request to a release (DESIGN.md's
//! resolution order), serves immutable assets and the rewritten shell, pushes
//! releases to open tabs over server-sent events, and exposes the admin API.

mod access_log;
mod admin;
mod auth;
mod client_js;
mod clock;
mod config;
mod conns;
mod datadir;
mod error;
mod events;
pub mod fsck;
mod gateway;
mod limits;
mod listener;
mod metrics;
mod presence;
mod proxy;
mod reaper;
mod redirect;
mod restyle;
mod serve;
mod service_worker;
pub mod shell;
mod snapshot;
mod sse;
mod supervisor;
mod system;
mod tls;

pub use clock::{Clock, SystemClock};
pub use config::{BackendDefaults, Retention, Role, ServerConfig, TokenConfig};
pub use datadir::DataLock;
pub use error::ServerError;
pub use gateway::{run, Gateway};
