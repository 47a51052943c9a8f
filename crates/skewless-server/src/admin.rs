//! The admin API under `/_skewless/api/v1/`, bearer-token protected. Each
//! handler parses its request into a wire type, calls one function of
//! [`Operations`] and answers with a wire type; nothing else.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Extension;
use axum::{middleware, Json, Router};
use futures::TryStreamExt;
use skewless_core::{BlobHash, HistoryEntry, Lifecycle, ReleaseId};
use skewless_store::ByteStream;
use skewless_wire::{
    ClientHistory, ClientHistoryQuery, CreateRelease, FsckReport, FsckRequest, GcReport, GcRequest,
    HistoryQuery, MissingRequest, MissingResponse, Node, PointerState, PromoteRequest, Release,
    ReleaseDetail, RequiredRequest, Retired, Status, TokenInfo,
};

use crate::auth::{require_admin, Actor, Tokens};
use crate::gateway::AppState;
use crate::operations::Operations;
use crate::ServerError;

/// Largest JSON body (a manifest of 100 000 files fits).
const MAX_JSON: usize = 64 * 1024 * 1024;

/// Admin routes, all behind the token check.
pub fn routes(tokens: Arc<Tokens>) -> Router<AppState> {
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
        .route("/nodes", get(nodes))
        .route("/clients/history", get(client_history))
        .route("/whoami", get(whoami))
        .fallback(|| async { ServerError::NotFound("no such admin endpoint".into()) })
        .layer(DefaultBodyLimit::max(MAX_JSON))
        .layer(middleware::from_fn_with_state(tokens, require_admin))
}

type ApiResult<T> = Result<T, ServerError>;
type Ops = State<Arc<Operations>>;

fn parse_id(s: &str) -> ApiResult<ReleaseId> {
    ReleaseId::parse(s).map_err(ServerError::from)
}

async fn missing_blobs(
    State(ops): Ops,
    Json(req): Json<MissingRequest>,
) -> ApiResult<Json<MissingResponse>> {
    let missing = ops.missing_blobs(req.hashes).await?;
    Ok(Json(MissingResponse { missing }))
}

async fn put_blob(State(ops): Ops, Path(hash): Path<String>, body: Body) -> ApiResult<Response> {
    let hash = BlobHash::parse(&hash)?;
    let stream: ByteStream = Box::pin(body.into_data_stream().map_err(std::io::Error::other));
    let stored = ops.put_blob(hash, stream).await?;
    let status = if stored.stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)).into_response())
}

async fn create_release(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
    Json(req): Json<CreateRelease>,
) -> ApiResult<Response> {
    let rec = ops.register(req, &actor.name).await?;
    Ok((StatusCode::CREATED, Json(ops.release_view(&rec))).into_response())
}

async fn list_releases(State(ops): Ops) -> ApiResult<Json<Vec<Release>>> {
    Ok(Json(ops.releases().await?))
}

async fn get_release(State(ops): Ops, Path(id): Path<String>) -> ApiResult<Json<ReleaseDetail>> {
    Ok(Json(ops.release(&parse_id(&id)?).await?))
}

async fn promote(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Option<Json<PromoteRequest>>,
) -> ApiResult<Json<PointerState>> {
    let id = parse_id(&id)?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let p = ops.promote(&id, &req, &actor.name).await?;
    Ok(Json(PointerState::from(&p)))
}

async fn abort_canary(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<PointerState>> {
    let p = ops.abort_canary(&actor.name).await?;
    Ok(Json(PointerState::from(&p)))
}

async fn set_required(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
    Json(req): Json<RequiredRequest>,
) -> ApiResult<Json<PointerState>> {
    let id = req.min.as_deref().map(parse_id).transpose()?;
    let p = ops.require(id, &actor.name).await?;
    Ok(Json(PointerState::from(&p)))
}

async fn rollback(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<PointerState>> {
    let p = ops.rollback(&actor.name).await?;
    Ok(Json(PointerState::from(&p)))
}

async fn retire(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Json<Retired>> {
    let id = parse_id(&id)?;
    ops.retire(&id, &actor.name).await?;
    Ok(Json(Retired {
        id,
        state: Lifecycle::Retired,
    }))
}

async fn gc(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
    body: Option<Json<GcRequest>>,
) -> ApiResult<Json<GcReport>> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    Ok(Json(ops.collect_garbage(req.dry_run, &actor.name).await?))
}

async fn fsck_check(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<FsckReport>> {
    Ok(Json(ops.fsck(false, &actor.name).await?))
}

async fn fsck(
    State(ops): Ops,
    Extension(actor): Extension<Actor>,
    body: Option<Json<FsckRequest>>,
) -> ApiResult<Json<FsckReport>> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    Ok(Json(ops.fsck(req.repair, &actor.name).await?))
}

async fn status(State(ops): Ops) -> ApiResult<Json<Status>> {
    Ok(Json(ops.status().await?))
}

async fn history(
    State(ops): Ops,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    Ok(Json(ops.history(q.limit.unwrap_or(100).min(10_000)).await?))
}

async fn nodes(State(ops): Ops) -> ApiResult<Json<Vec<Node>>> {
    Ok(Json(ops.nodes().await?))
}

async fn client_history(
    State(ops): Ops,
    Query(q): Query<ClientHistoryQuery>,
) -> ApiResult<Json<ClientHistory>> {
    Ok(Json(ops.client_history(q.seconds.unwrap_or(3600)).await?))
}

async fn whoami(Extension(actor): Extension<Actor>) -> Json<TokenInfo> {
    Json(TokenInfo {
        name: actor.name.to_string(),
        role: actor.role,
    })
}
