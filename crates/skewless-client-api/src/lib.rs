//! A typed client for the skewless admin API, used by the CLI and the tests:
//! deploy a directory (hash, upload only what the server lacks, register),
//! promote, rollback, retire, gc, list, status, history.

mod deploy;
mod error;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use skewless_wire::{
    FsckReport, FsckRequest, GcReport, GcRequest, HistoryEntry, PointerState, PromoteRequest,
    Release, ReleaseDetail, RequiredRequest, Retired, Status,
};

pub use deploy::{scan, DeployOptions, DeployReport, LocalFile};
pub use error::ClientError;
pub use skewless_wire as wire;

/// How long the server may stay silent during a request: a server that
/// dies mid-request must not leave the CLI waiting for ever.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The same for a registration, which makes the compressed variants of
/// every new file before it answers: minutes for a large app on a small
/// machine or over an object store.
const REGISTER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// The HTTP client: bounded connect and read times, and extra trusted roots.
fn http_client(
    roots: Option<Vec<reqwest::Certificate>>,
    read_timeout: std::time::Duration,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(read_timeout)
        .pool_max_idle_per_host(16);
    for cert in roots.into_iter().flatten() {
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| ClientError::Connect(e.to_string()))
}

/// A connection to one skewless server's admin API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    /// For registrations.
    slow: reqwest::Client,
}

impl Client {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`) with an admin token.
    pub fn new(server: &str, token: &str) -> Result<Self, ClientError> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Input(format!(
                "server {server:?} must be an http:// or https:// URL"
            )));
        }
        Ok(Client {
            base,
            token: token.to_owned(),
            http: http_client(None, READ_TIMEOUT)?,
            slow: http_client(None, REGISTER_READ_TIMEOUT)?,
        })
    }

    /// Also trusts the PEM certificate(s) in `pem` for an `https://`
    /// server, e.g. a private CA or a self-signed gateway certificate.
    pub fn trusting(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ClientError::Input(format!("CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Input(
                "CA certificate file holds no PEM certificate".into(),
            ));
        }
        self.http = http_client(Some(certs.clone()), READ_TIMEOUT)?;
        self.slow = http_client(Some(certs), REGISTER_READ_TIMEOUT)?;
        Ok(self)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_skewless/api/v1{path}", self.base)
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = req.send().await.map_err(|e| self.connect_error(e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!("unexpected answer from {}: {e}", self.base))
        })
    }

    pub(crate) fn connect_error(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::Connect(format!("cannot reach the skewless server at {}", self.base))
        } else if e.is_timeout() {
            ClientError::Connect(format!("the skewless server at {} timed out", self.base))
        } else {
            ClientError::Connect(format!("request to {} failed: {e}", self.base))
        }
    }

    /// Makes a release current; `required` makes older clients reload now;
    /// `force` promotes even when its managed back end is not healthy.
    pub async fn promote(
        &self,
        id: &str,
        required: bool,
        force: bool,
    ) -> Result<PointerState, ClientError> {
        self.promote_to(id, 100, required, force).await
    }

    /// Gives a release to `percent` % of new sessions (a canary), or to
    /// everyone at 100.
    pub async fn promote_to(
        &self,
        id: &str,
        percent: u8,
        required: bool,
        force: bool,
    ) -> Result<PointerState, ClientError> {
        check_id(id)?;
        let body = PromoteRequest {
            required,
            force,
            percent: Some(percent),
        };
        self.send(
            self.request(Method::POST, &format!("/releases/{id}/promote"))
                .json(&body),
        )
        .await
    }

    /// Ends the canary; its clients stay on it until they navigate.
    pub async fn abort_canary(&self) -> Result<PointerState, ClientError> {
        self.send(self.request(Method::POST, "/canary/abort")).await
    }

    /// Sets (or, with `None`, clears) the release every client must run at least.
    pub async fn set_required(&self, min: Option<&str>) -> Result<PointerState, ClientError> {
        if let Some(id) = min {
            check_id(id)?;
        }
        let body = RequiredRequest {
            min: min.map(str::to_owned),
        };
        self.send(self.request(Method::POST, "/required").json(&body))
            .await
    }

    /// Makes the previous current release current again.
    pub async fn rollback(&self) -> Result<PointerState, ClientError> {
        self.send(self.request(Method::POST, "/rollback")).await
    }

    /// Every release, oldest first.
    pub async fn releases(&self) -> Result<Vec<Release>, ClientError> {
        self.send(self.request(Method::GET, "/releases")).await
    }

    /// One release with its manifest.
    pub async fn release(&self, id: &str) -> Result<ReleaseDetail, ClientError> {
        check_id(id)?;
        self.send(self.request(Method::GET, &format!("/releases/{id}")))
            .await
    }

    /// Stops serving a release.
    pub async fn retire(&self, id: &str) -> Result<Retired, ClientError> {
        check_id(id)?;
        self.send(self.request(Method::POST, &format!("/releases/{id}/retire")))
            .await
    }

    /// Collects retired releases and deletes unreferenced blobs.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport, ClientError> {
        self.send(
            self.request(Method::POST, "/gc")
                .json(&GcRequest { dry_run }),
        )
        .await
    }

    /// Checks store and state against each other; `repair` mends what it can.
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport, ClientError> {
        if repair {
            self.send(
                self.request(Method::POST, "/fsck")
                    .json(&FsckRequest { repair: true }),
            )
            .await
        } else {
            self.send(self.request(Method::GET, "/fsck")).await
        }
    }

    /// Current, generation and release counts.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.send(self.request(Method::GET, "/status")).await
    }

    /// Every node of the cluster.
    pub async fn nodes(&self) -> Result<Vec<skewless_wire::Node>, ClientError> {
        self.send(self.request(Method::GET, "/nodes")).await
    }

    /// Live clients per release over the last `seconds`, as the server
    /// sampled them.
    pub async fn client_history(
        &self,
        seconds: i64,
    ) -> Result<skewless_wire::ClientHistory, ClientError> {
        self.send(self.request(Method::GET, &format!("/clients/history?seconds={seconds}")))
            .await
    }

    /// The name and role of the token this client uses.
    pub async fn whoami(&self) -> Result<skewless_wire::TokenInfo, ClientError> {
        self.send(self.request(Method::GET, "/whoami")).await
    }

    /// The newest `limit` history entries.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, ClientError> {
        self.send(self.request(Method::GET, &format!("/history?limit={limit}")))
            .await
    }
}

/// Refuses an id that breaks the id rule before it reaches a URL.
fn check_id(id: &str) -> Result<(), ClientError> {
    skewless_core::ReleaseId::parse(id)
        .map(|_| ())
        .map_err(|e| ClientError::Input(e.to_string()))
}

pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<skewless_wire::ErrorBody>(body)
        .ok()
        .map(|b| b.error)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}
