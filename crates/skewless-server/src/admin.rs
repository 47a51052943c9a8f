//! The admin API under `/_skewless/api/v1/`, bearer-token protected: blob
//! upload, release registration, promote, rollback, retire, gc, status,
//! history.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Extension;
use axum::{middleware, Json, Router};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use skewless_core::manifest::{FileSpec, SHELL};
use skewless_core::{BlobHash, Entry, Lifecycle, Manifest, ReleaseId};
use skewless_state::{HistoryEntry, NewRelease, ReleaseRecord};
use skewless_store::{ByteStream, Put, Variant};

use crate::auth::{require_admin, Actor};
use crate::gateway::Gateway;
use crate::presence::Counts;
use crate::proxy::Upstream;
use crate::supervisor::Status;
use crate::{shell, ServerError};

/// Largest JSON body (a manifest of 100 000 files fits).
const MAX_JSON: usize = 64 * 1024 * 1024;

/// Admin routes, all behind the token check.
pub fn routes(gw: Arc<Gateway>) -> axum::Router<Arc<Gateway>> {
    Router::new()
        .route("/blobs/missing", post(missing_blobs))
        .route(
            "/blobs/{hash}",
            put(put_blob).layer(DefaultBodyLimit::disable()),
        )
        .route("/releases", get(list_releases).post(create_release))
        .route("/releases/{id}", get(get_release))
        .route("/releases/{id}/promote", post(promote))
        .route("/releases/{id}/retire", post(retire))
        .route("/rollback", post(rollback))
        .route("/canary/abort", post(abort_canary))
        .route("/required", post(set_required))
        .route("/gc", post(gc))
        .route("/fsck", get(fsck_check).post(fsck))
        .route("/status", get(status))
        .route("/history", get(history))
        .fallback(|| async { ServerError::NotFound("no such admin endpoint".into()) })
        .layer(DefaultBodyLimit::max(MAX_JSON))
        .layer(middleware::from_fn_with_state(gw, require_admin))
}

type ApiResult<T> = Result<T, ServerError>;

fn parse_id(s: &str) -> ApiResult<ReleaseId> {
    ReleaseId::parse(s).map_err(ServerError::from)
}

/// Body of `POST /blobs/missing`.
#[derive(Debug, Deserialize)]
struct MissingRequest {
    hashes: Vec<BlobHash>,
}

async fn missing_blobs(
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<MissingRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let unique: Vec<BlobHash> = req
        .hashes
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let missing = gw.store.missing(&unique).await?;
    Ok(Json(json!({ "missing": missing })))
}

async fn put_blob(
    State(gw): State<Arc<Gateway>>,
    Path(hash): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let hash = BlobHash::parse(&hash)?;
    let stream: ByteStream = Box::pin(body.into_data_stream().map_err(std::io::Error::other));
    let put = gw
        .store
        .put(&hash, stream, gw.config.max_upload_bytes)
        .await?;
    let (status, size, stored) = match put {
        Put::Stored { size } => (StatusCode::CREATED, size, true),
        Put::Existed { size } => (StatusCode::OK, size, false),
    };
    Ok((
        status,
        Json(json!({ "hash": hash, "size": size, "stored": stored })),
    )
        .into_response())
}

/// Body of `POST /releases`.
#[derive(Debug, Deserialize)]
struct CreateRelease {
    id: Option<String>,
    files: Vec<FileSpec>,
    backend: Option<String>,
    backend_cmd: Option<String>,
    health: Option<String>,
}

/// A release as the admin API shows it.
#[derive(Debug, Serialize)]
struct ReleaseJson {
    id: ReleaseId,
    state: Lifecycle,
    created_at: i64,
    promoted_at: Option<i64>,
    retired_at: Option<i64>,
    files: u64,
    size: u64,
    backend: Option<String>,
    backend_cmd: Option<String>,
    health_path: Option<String>,
    backend_status: Option<Status>,
    current: bool,
    canary: bool,
    drained_at: Option<i64>,
    clients: Counts,
}

fn release_json(gw: &Gateway, r: &ReleaseRecord, current: Option<&ReleaseId>) -> ReleaseJson {
    ReleaseJson {
        id: r.id.clone(),
        state: r.state,
        created_at: r.created_at,
        promoted_at: r.promoted_at,
        retired_at: r.retired_at,
        files: r.files,
        size: r.size,
        backend: r.backend.clone(),
        backend_cmd: r.backend_cmd.clone(),
        health_path: r.health_path.clone(),
        backend_status: gw.supervisor.status(&r.id),
        current: current == Some(&r.id),
        canary: gw.snapshot.load().pointer.canary.as_ref() == Some(&r.id),
        drained_at: r.drained_at,
        clients: gw
            .presence
            .counts(gw.clock.now())
            .get(&r.id)
            .copied()
            .unwrap_or_default(),
    }
}

fn validate_backend(url: &str) -> ApiResult<String> {
    Upstream::parse(url)
        .map(|_| url.to_owned())
        .map_err(ServerError::BadRequest)
}

fn generated_id(now: i64, manifest: &Manifest) -> ApiResult<ReleaseId> {
    let mut h = blake3::Hasher::new();
    for (p, e) in &manifest.files {
        h.update(p.as_bytes());
        h.update(e.hash.as_str().as_bytes());
    }
    let stamp = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| now.to_string());
    parse_id(&format!("{stamp}-{}", &h.finalize().to_hex()[..6]))
}

async fn create_release(
    State(gw): State<Arc<Gateway>>,
    Extension(actor): Extension<Actor>,
    Json(req): Json<CreateRelease>,
) -> ApiResult<Response> {
    let now = gw.clock.now();
    let mut manifest = Manifest::from_specs(&req.files)?;
    let id = match &req.id {
        Some(id) => parse_id(id)?,
        None => generated_id(now, &manifest)?,
    };
    let backend = req.backend.as_deref().map(validate_backend).transpose()?;
    if backend.is_some() && req.backend_cmd.is_some() {
        return Err(ServerError::BadRequest(
            "a release binds either a back-end URL or a back-end command, not both".into(),
        ));
    }
    if req
        .backend_cmd
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        return Err(ServerError::BadRequest(
            "the back-end command is empty".into(),
        ));
    }
    if let Some(h) = &req.health {
        if !h.starts_with('/') || h.chars().any(char::is_whitespace) {
            return Err(ServerError::BadRequest(format!(
                "health path {h:?} must start with / and hold no spaces"
            )));
        }
        if req.backend_cmd.is_none() {
            return Err(ServerError::BadRequest(
                "--health needs --backend-cmd".into(),
            ));
        }
    }
    if gw.snapshot.load().releases.contains_key(&id) || gw.state.release(&id).await.is_ok() {
        return Err(ServerError::Conflict(format!(
            "release {id} already exists; deploy under a new id"
        )));
    }

    // Registration holds the gc lock shared: blobs verified present below
    // stay present until the release refers to them.
    let _gc = gw.gc_lock.read().await;
    let mut hashes: Vec<BlobHash> = manifest.files.values().map(|e| e.hash.clone()).collect();
    hashes.sort();
    hashes.dedup();
    let missing = gw.store.missing(&hashes).await?;
    if !missing.is_empty() {
        let sample: Vec<&str> = missing.iter().take(3).map(|h| h.as_str()).collect();
        return Err(ServerError::Unprocessable(format!(
            "{} blob(s) of this release are not uploaded, e.g. {}",
            missing.len(),
            sample.join(", ")
        )));
    }
    fill_variants(&gw, &mut manifest).await?;

    let original = gw
        .store
        .read(&manifest.files[SHELL].hash, Variant::Identity, None)
        .await?;
    let html = std::str::from_utf8(&original)
        .map_err(|_| ServerError::Unprocessable("index.html is not valid UTF-8".into()))?;
    let rewritten = shell::rewrite(html, &id, &manifest).map_err(ServerError::Unprocessable)?;
    let shell_entry = store_bytes(&gw, rewritten.into_bytes(), "text/html; charset=utf-8").await?;

    let rec = gw
        .state
        .create_release(
            NewRelease {
                id: id.clone(),
                manifest,
                shell: shell_entry,
                backend,
                backend_cmd: req.backend_cmd,
                health_path: req.health,
                created_at: now,
            },
            &actor.name,
        )
        .await?;
    drop(_gc);
    gw.refresh().await?;
    tracing::info!(release = %id, files = rec.files, bytes = rec.size, "release registered");
    let current = gw.snapshot.load().pointer.current.clone();
    Ok((
        StatusCode::CREATED,
        Json(release_json(&gw, &rec, current.as_ref())),
    )
        .into_response())
}

/// Makes the br/gzip variants of every compressible file (once per blob) and
/// records their sizes in the manifest.
async fn fill_variants(gw: &Arc<Gateway>, manifest: &mut Manifest) -> ApiResult<()> {
    let mut todo: Vec<BlobHash> = manifest
        .files
        .values()
        .filter(|e| e.compressible())
        .map(|e| e.hash.clone())
        .collect();
    todo.sort();
    todo.dedup();
    let results: Vec<(BlobHash, skewless_store::Variants)> = futures::stream::iter(todo)
        .map(|h| {
            let store = gw.store.clone();
            async move { store.ensure_variants(&h).await.map(|v| (h, v)) }
        })
        .buffer_unordered(4)
        .try_collect()
        .await?;
    let by_hash: std::collections::HashMap<BlobHash, skewless_store::Variants> =
        results.into_iter().collect();
    for e in manifest.files.values_mut() {
        if let Some(v) = by_hash.get(&e.hash) {
            e.br = v.br;
            e.gzip = v.gzip;
        }
    }
    Ok(())
}

/// Stores server-made bytes (the rewritten shell) as a blob with variants.
async fn store_bytes(gw: &Arc<Gateway>, data: Vec<u8>, content_type: &str) -> ApiResult<Entry> {
    let hash = BlobHash::from_bytes(blake3::hash(&data).as_bytes());
    let size = data.len() as u64;
    let body: ByteStream = Box::pin(futures::stream::once(async move {
        Ok(bytes::Bytes::from(data))
    }));
    gw.store.put(&hash, body, u64::MAX).await?;
    let v = gw.store.ensure_variants(&hash).await?;
    Ok(Entry {
        hash,
        size,
        content_type: content_type.to_owned(),
        br: v.br,
        gzip: v.gzip,
    })
}

async fn list_releases(State(gw): State<Arc<Gateway>>) -> ApiResult<Json<Vec<ReleaseJson>>> {
    let current = gw.snapshot.load().pointer.current.clone();
    let all = gw.state.release_summaries().await?;
    Ok(Json(
        all.iter()
            .map(|r| release_json(&gw, r, current.as_ref()))
            .collect(),
    ))
}

async fn get_release(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let rec = gw.state.release(&id).await?;
    let current = gw.snapshot.load().pointer.current.clone();
    let mut v = serde_json::to_value(release_json(&gw, &rec, current.as_ref())).unwrap_or_default();
    v["manifest"] = serde_json::to_value(&rec.manifest.files).unwrap_or_default();
    Ok(Json(v))
}

/// Body of `POST /releases/{id}/promote`.
#[derive(Debug, Default, Deserialize)]
struct PromoteRequest {
    #[serde(default)]
    required: bool,
    #[serde(default)]
    force: bool,
    /// Below 100: make the release the canary for this share of new sessions.
    percent: Option<u8>,
}

fn pointer_json(p: &skewless_state::Pointer) -> serde_json::Value {
    json!({
        "current": p.current,
        "generation": p.generation,
        "required_min": p.required_min,
        "canary": p.canary.as_ref().map(|c| json!({ "release": c, "percent": p.canary_percent })),
    })
}

async fn promote(
    State(gw): State<Arc<Gateway>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Option<Json<PromoteRequest>>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let rec = gw.state.release(&id).await?;
    if rec.backend_cmd.is_some() && !req.force {
        if let Err(why) = gw.supervisor.wait_healthy(&id).await {
            return Err(ServerError::Conflict(format!(
                "the back end of release {id} is not healthy ({why}); fix it or promote with --force"
            )));
        }
    }
    let now = gw.clock.now();
    let p = match req.percent {
        Some(0) | Some(101..) => {
            return Err(ServerError::BadRequest("--percent must be 1 to 100".into()));
        }
        Some(percent @ 1..=99) => {
            if req.required {
                return Err(ServerError::BadRequest(
                    "a canary cannot be required; promote it to 100 % with --required".into(),
                ));
            }
            let p = gw
                .state
                .set_canary(Some(&id), percent, &actor.name, now)
                .await?;
            tracing::info!(release = %id, percent, "canary");
            p
        }
        _ => {
            let p = gw
                .state
                .promote(&id, req.required, &actor.name, now)
                .await?;
            crate::metrics::promotion();
            tracing::info!(release = %id, generation = p.generation, required = req.required, "promoted");
            p
        }
    };
    gw.refresh().await?;
    Ok(Json(pointer_json(&p)))
}

async fn abort_canary(
    State(gw): State<Arc<Gateway>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = gw
        .state
        .set_canary(None, 0, &actor.name, gw.clock.now())
        .await?;
    gw.refresh().await?;
    tracing::info!("canary aborted");
    Ok(Json(pointer_json(&p)))
}

/// Body of `POST /required`.
#[derive(Debug, Deserialize)]
struct RequiredRequest {
    /// The release every client must run at least; null clears it.
    min: Option<String>,
}

async fn set_required(
    State(gw): State<Arc<Gateway>>,
    Extension(actor): Extension<Actor>,
    Json(req): Json<RequiredRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = req.min.as_deref().map(parse_id).transpose()?;
    let p = gw
        .state
        .set_required_min(id.as_ref(), &actor.name, gw.clock.now())
        .await?;
    gw.refresh().await?;
    Ok(Json(pointer_json(&p)))
}

async fn rollback(
    State(gw): State<Arc<Gateway>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = gw.state.rollback(&actor.name, gw.clock.now()).await?;
    crate::metrics::rollback();
    gw.refresh().await?;
    tracing::info!(current = ?p.current, generation = p.generation, "rolled back");
    Ok(Json(pointer_json(&p)))
}

async fn retire(
    State(gw): State<Arc<Gateway>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    gw.state.retire(&id, &actor.name, gw.clock.now()).await?;
    gw.refresh().await?;
    tracing::info!(release = %id, "retired");
    Ok(Json(json!({ "id": id, "state": "retired" })))
}

/// Body of `POST /gc`.
#[derive(Debug, Default, Deserialize)]
struct GcRequest {
    #[serde(default)]
    dry_run: bool,
}

async fn gc(
    State(gw): State<Arc<Gateway>>,
    Extension(actor): Extension<Actor>,
    body: Option<Json<GcRequest>>,
) -> ApiResult<Json<serde_json::Value>> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let r = gw.collect_garbage(req.dry_run, &actor.name).await?;
    Ok(Json(json!({
        "dry_run": req.dry_run,
        "collected_releases": r.collected,
        "blobs": r.blobs.iter().map(|b| json!({"hash": b.hash, "bytes": b.bytes})).collect::<Vec<_>>(),
        "bytes": r.bytes,
    })))
}

/// Body of `POST /fsck`.
#[derive(Debug, Default, Deserialize)]
struct FsckRequest {
    #[serde(default)]
    repair: bool,
}

async fn fsck_check(State(gw): State<Arc<Gateway>>) -> ApiResult<Json<crate::fsck::Report>> {
    Ok(Json(gw.fsck(false).await?))
}

async fn fsck(
    State(gw): State<Arc<Gateway>>,
    Extension(actor): Extension<Actor>,
    body: Option<Json<FsckRequest>>,
) -> ApiResult<Json<crate::fsck::Report>> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let report = gw.fsck(req.repair).await?;
    if req.repair {
        let repaired = report
            .problems
            .iter()
            .filter(|p| p.repaired.is_some())
            .count();
        gw.state
            .record(HistoryEntry {
                seq: 0,
                at: gw.clock.now(),
                action: skewless_core::Action::FsckRepair,
                release: None,
                before: None,
                after: None,
                actor: actor.name.to_string(),
                detail: Some(format!(
                    "{} problems, {repaired} repaired",
                    report.problems.len()
                )),
            })
            .await?;
    }
    Ok(Json(report))
}

async fn status(State(gw): State<Arc<Gateway>>) -> ApiResult<Json<serde_json::Value>> {
    let snap = gw.snapshot.load();
    let all = gw.state.release_summaries().await?;
    let mut counts = serde_json::Map::new();
    for r in &all {
        let c = counts.entry(r.state.as_str()).or_insert(json!(0));
        *c = json!(c.as_u64().unwrap_or(0) + 1);
    }
    let clients = gw.presence.counts(gw.clock.now());
    let clients_json: serde_json::Map<String, serde_json::Value> = snap
        .ordered
        .iter()
        .filter(|v| v.record.state.is_served())
        .map(|v| {
            let c = clients.get(&v.record.id).copied().unwrap_or_default();
            (v.record.id.to_string(), json!(c))
        })
        .collect();
    Ok(Json(json!({
        "current": snap.pointer.current,
        "generation": snap.pointer.generation,
        "required_min": snap.pointer.required_min,
        "changed_at": snap.pointer.changed_at,
        "canary": snap.pointer.canary.as_ref().map(|c| json!({ "release": c, "percent": snap.pointer.canary_percent })),
        "releases": counts,
        "clients": clients_json,
        "event_streams": gw.notices.receiver_count(),
    })))
}

/// Query of `GET /history`.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    Ok(Json(
        gw.state.history(q.limit.unwrap_or(100).min(10_000)).await?,
    ))
}
