//! `deploy`: hash a build directory, upload only the blobs the server lacks
//! (concurrently, streamed from disk), then register the release.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde::Serialize;
use skewless_core::manifest::FileSpec;
use skewless_core::BlobHash;
use skewless_wire::{CreateRelease, MissingRequest, MissingResponse, Release};

use crate::{api_error, Client, ClientError};

/// Files hashed at once.
const HASH_CONCURRENCY: usize = 4;
/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 8;
/// How long an upload of a blob a garbage collection is deleting is tried
/// again before the deploy gives up.
const COLLECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One file of the directory being deployed.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// `/`-separated path relative to the directory.
    pub rel: String,
    /// Where it is on disk.
    pub abs: PathBuf,
    /// BLAKE3 hex digest.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
}

/// Options of a deploy.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Release id; the server generates one when absent.
    pub release: Option<String>,
    /// Back end URL to bind.
    pub backend: Option<String>,
    /// Managed back-end command to bind (`{port}` is replaced).
    pub backend_cmd: Option<String>,
    /// Health-check path of the managed back end.
    pub health: Option<String>,
    /// Promote once registered.
    pub promote: bool,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// The registered release.
    pub id: String,
    /// Files in the release.
    pub files: usize,
    /// Bytes in the release.
    pub bytes: u64,
    /// Blobs uploaded (the server lacked them).
    pub uploaded_files: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Whether it was promoted.
    pub promoted: bool,
}

fn io_err(path: &Path, source: std::io::Error) -> ClientError {
    ClientError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Lists and hashes every file under `dir`. Refuses a directory without
/// `index.html`, symlinks that lead outside it, and names that are not UTF-8.
pub async fn scan(dir: &Path) -> Result<Vec<LocalFile>, ClientError> {
    let root = std::fs::canonicalize(dir).map_err(|e| io_err(dir, e))?;
    if !root.is_dir() {
        return Err(ClientError::Input(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if !root.join("index.html").is_file() {
        return Err(ClientError::Input(format!(
            "{} has no index.html at its root; deploy the build output directory",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(&root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            ClientError::Input(format!("cannot walk {path}: {e}"))
        })?;
        if entry.file_type().is_dir() {
            continue;
        }
        let path = entry.path();
        let rel = path.strip_prefix(&root).unwrap_or(path);
        let rel_str = rel.to_str().ok_or_else(|| {
            ClientError::Input(format!("file name {} is not valid UTF-8", rel.display()))
        })?;
        if entry.path_is_symlink() || path_has_symlink(&root, rel) {
            let target = std::fs::canonicalize(path).map_err(|e| io_err(path, e))?;
            if !target.starts_with(&root) {
                return Err(ClientError::Input(format!(
                    "{rel_str} is a symlink to {}, outside {}; refusing to deploy it",
                    target.display(),
                    dir.display()
                )));
            }
        }
        if !entry.file_type().is_file() {
            continue;
        }
        files.push((rel_str.replace('\\', "/"), path.to_path_buf()));
    }
    futures::stream::iter(files)
        .map(|(rel, abs)| async move {
            tokio::task::spawn_blocking(move || {
                let mut f = std::fs::File::open(&abs).map_err(|e| io_err(&abs, e))?;
                let mut h = blake3::Hasher::new();
                let size = std::io::copy(&mut f, &mut h).map_err(|e| io_err(&abs, e))?;
                Ok(LocalFile {
                    rel,
                    hash: h.finalize().to_hex().to_string(),
                    size,
                    abs,
                })
            })
            .await
            .map_err(|e| ClientError::Input(e.to_string()))?
        })
        .buffered(HASH_CONCURRENCY)
        .try_collect()
        .await
}

/// Whether any directory between `root` and `root/rel` is a symlink.
fn path_has_symlink(root: &Path, rel: &Path) -> bool {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return true;
        }
    }
    false
}

impl Client {
    /// Deploys `dir`: uploads what the server lacks and registers a release.
    pub async fn deploy(
        &self,
        dir: &Path,
        opts: &DeployOptions,
    ) -> Result<DeployReport, ClientError> {
        let files = scan(dir).await?;
        let mut uploaded_files = 0;
        let mut uploaded_bytes = 0;
        // A gc between the missing-check and registration can delete a blob
        // the check counted on; registration then says so and one more round
        // uploads it.
        let mut attempts = 0;
        let release = loop {
            attempts += 1;
            let (n, bytes) = self.upload_missing(&files).await?;
            uploaded_files += n;
            uploaded_bytes += bytes;
            match self.register(&files, opts).await {
                Err(ClientError::Api {
                    status: 422,
                    message,
                }) if message.contains("not uploaded") && attempts < 3 => continue,
                other => break other?,
            }
        };
        let id = release.id.to_string();
        if opts.promote {
            self.promote(&id, false, false).await?;
        }
        Ok(DeployReport {
            id,
            files: files.len(),
            bytes: files.iter().map(|f| f.size).sum(),
            uploaded_files,
            uploaded_bytes,
            promoted: opts.promote,
        })
    }

    async fn upload_missing(&self, files: &[LocalFile]) -> Result<(usize, u64), ClientError> {
        let mut by_hash: HashMap<&str, &LocalFile> = HashMap::new();
        for f in files {
            by_hash.entry(f.hash.as_str()).or_insert(f);
        }
        let hashes = by_hash
            .keys()
            .map(|h| BlobHash::parse(h).map_err(|e| ClientError::Input(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let resp: MissingResponse = self
            .send(
                self.request(Method::POST, "/blobs/missing")
                    .json(&MissingRequest { hashes }),
            )
            .await?;
        let missing: Vec<LocalFile> = resp
            .missing
            .iter()
            .filter_map(|h| by_hash.get(h.as_str()).map(|f| (*f).clone()))
            .collect();
        let count = missing.len();
        let bytes = missing.iter().map(|f| f.size).sum();
        futures::stream::iter(missing)
            .map(|f| {
                let client = self.clone();
                async move { client.upload(&f).await }
            })
            .buffer_unordered(UPLOAD_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok((count, bytes))
    }

    /// Uploads one file; an upload refused because a garbage collection is
    /// deleting that blob right now is made again, with growing pauses,
    /// until the collection has forgotten it.
    async fn upload(&self, f: &LocalFile) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + COLLECTION_WAIT;
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            match self.upload_once(f).await {
                Err(ClientError::Api {
                    status: 409,
                    message,
                }) if message.contains("being deleted by a garbage collection")
                    && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    async fn upload_once(&self, f: &LocalFile) -> Result<(), ClientError> {
        let file = tokio::fs::File::open(&f.abs)
            .await
            .map_err(|e| io_err(&f.abs, e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            64 * 1024,
        ));
        let resp = self
            .request(Method::PUT, &format!("/blobs/{}", f.hash))
            .header(reqwest::header::CONTENT_LENGTH, f.size)
            .body(body)
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        match api_error(status, &body) {
            ClientError::Api { status, message } => Err(ClientError::Api {
                status,
                message: format!("upload of {} refused: {message}", f.rel),
            }),
            other => Err(other),
        }
    }

    async fn register(
        &self,
        files: &[LocalFile],
        opts: &DeployOptions,
    ) -> Result<Release, ClientError> {
        let files = files
            .iter()
            .map(|f| {
                Ok(FileSpec {
                    path: f.rel.clone(),
                    hash: BlobHash::parse(&f.hash)
                        .map_err(|e| ClientError::Input(e.to_string()))?,
                    size: f.size,
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let body = CreateRelease {
            id: opts.release.clone(),
            files,
            backend: opts.backend.clone(),
            backend_cmd: opts.backend_cmd.clone(),
            health: opts.health.clone(),
        };
        let req = self
            .slow
            .request(Method::POST, self.url("/releases"))
            .bearer_auth(&self.token)
            .json(&body);
        self.send(req).await
    }
}
