//! The end-to-end tests, one binary so that `support` compiles once: each
//! module starts the real `skewless` binary on port 0 with its own data
//! directory and talks to it over real HTTP.

mod support;

mod access_log;
mod admin;
mod browser;
mod cache;
mod cluster;
mod crash;
mod dashboard;
mod deploy;
mod fsck;
mod gateway;
mod http1;
mod large_files;
mod lifecycle;
mod proxy;
mod reliability;
mod s3;
mod soak;
mod tls;
