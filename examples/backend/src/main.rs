//! A tiny API back end for the example app and the tests. Its API shape
//! differs by version, the way real APIs break between releases:
//! `--api 1` answers `GET /api/items` with a list, `--api 2` with an object.
//!
//! Usage: `example-backend [--port N] [--api 1|2] [--name NAME]`; the port
//! defaults to `$PORT`, the name to `$SKEWLESS_RELEASE`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::json;

#[derive(Clone)]
struct App {
    name: String,
    api: u32,
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port")
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(9001);
    let app = App {
        name: arg(&args, "--name")
            .or_else(|| std::env::var("SKEWLESS_RELEASE").ok())
            .unwrap_or_else(|| "dev".into()),
        api: arg(&args, "--api")
            .and_then(|a| a.parse().ok())
            .unwrap_or(1),
    };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/items", get(items))
        .route("/api/whoami", get(whoami))
        .route("/api/echo", post(echo))
        .route("/api/download", get(download))
        .route("/api/hang", get(hang))
        .route("/api/slow", get(slow))
        .route("/api/stats", get(stats))
        .route("/api/ws", get(ws))
        .with_state(app.clone());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("example-backend: cannot listen on {addr}: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "example-backend {} (api {}) listening on {addr}",
        app.name, app.api
    );
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        eprintln!("example-backend: {e}");
        std::process::exit(1);
    }
}

fn tagged(app: &App, body: serde_json::Value) -> Response {
    let mut resp = Json(body).into_response();
    if let Ok(v) = app.name.parse() {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}

async fn items(State(app): State<App>) -> Response {
    let list = json!([{ "id": 1, "title": "Welcome" }, { "id": 2, "title": "Release notes" }]);
    let body = if app.api >= 2 {
        json!({ "items": list, "total": 2, "backend": app.name })
    } else {
        list
    };
    tagged(&app, body)
}

async fn whoami(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    tagged(
        &app,
        json!({
            "backend": app.name,
            "api": app.api,
            "peer": peer.to_string(),
            "host": h("host"),
            "x_forwarded_for": h("x-forwarded-for"),
            "x_forwarded_proto": h("x-forwarded-proto"),
            "x_forwarded_host": h("x-forwarded-host"),
            "forwarded": h("forwarded"),
            "skewless_release": h("skewless-release"),
            "connection": h("connection"),
            "te": h("te"),
            "x_hop": h("x-hop"),
        }),
    )
}

/// Consumes the body as a stream and reports its size: never holds it whole.
async fn echo(State(app): State<App>, body: Body) -> Response {
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => n += c.len() as u64,
            Err(_) => break,
        }
    }
    tagged(&app, json!({ "bytes": n }))
}

#[derive(serde::Deserialize)]
struct DownloadQuery {
    bytes: u64,
}

/// Streams `bytes` bytes without building them in memory.
async fn download(Query(q): Query<DownloadQuery>) -> Response {
    const CHUNK: usize = 64 * 1024;
    let chunks = q.bytes.div_ceil(CHUNK as u64);
    let total = q.bytes;
    let stream = futures::stream::iter(0..chunks).map(move |i| {
        let len = (total - i * CHUNK as u64).min(CHUNK as u64) as usize;
        Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'; len]))
    });
    Body::from_stream(stream).into_response()
}

/// Requests being answered by `/api/slow` right now.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(serde::Deserialize)]
struct SlowQuery {
    ms: u64,
}

/// Answers after `ms` milliseconds.
async fn slow(State(app): State<App>, Query(q): Query<SlowQuery>) -> Response {
    use std::sync::atomic::Ordering;
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(q.ms)).await;
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    tagged(&app, json!({ "slept_ms": q.ms }))
}

async fn stats() -> Response {
    let n = IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst);
    Json(json!({ "in_flight": n })).into_response()
}

/// Accepts the request and never answers.
async fn hang() -> Response {
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    "late".into_response()
}

async fn ws(State(app): State<App>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| echo_socket(socket, app.name))
}

/// Echoes every text message, prefixed with this back end's name.
async fn echo_socket(mut socket: WebSocket, name: String) {
    while let Some(Ok(msg)) = socket.recv().await {
        match msg {
            Message::Text(t)
                if socket
                    .send(Message::Text(format!("{name}: {}", t.as_str()).into()))
                    .await
                    .is_err() =>
            {
                return
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}
