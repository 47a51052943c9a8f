//! Hostile input, limits, the admin surface, graceful shutdown and restart
//! under load: each promise proven against the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{
    alive, example, example_backend, free_port, wait_for, Backend, Server, TOKEN,
};
use reqwest::header;

/// Sends raw bytes, returns the status code (0 if the server closed without
/// answering) and the whole answer.
fn raw(url: &str, request: &[u8]) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn get_req(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").into_bytes()
}

#[test]
fn attacks_get_clear_answers_and_the_server_stays_healthy() {
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--max-upload",
            "4096",
            "--max-event-streams-per-ip",
            "3",
            "--header-read-timeout-secs",
            "1",
        ],
    );
    s.deploy(&example("v1"), "v1", true);
    s.deploy(&example("v2"), "v2", true);
    s.ok(&["retire", "v1"]);
    let state_db = std::fs::read(s.data.path().join("state.db")).unwrap();
    let secret_marker = String::from_utf8_lossy(&state_db[..16]).into_owned();

    // (name, raw request, expected status, must the body be a JSON error)
    let long = "a".repeat(600 * 1024);
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let table: Vec<(&str, Vec<u8>, u16, bool)> = vec![
        ("dot-dot", get_req("/../state.db", ""), 400, true),
        (
            "encoded dot-dot",
            get_req("/%2e%2e/state.db", ""),
            400,
            true,
        ),
        (
            "mixed-case encoding",
            get_req("/%2E%2e/%2e%2E/state.db", ""),
            400,
            true,
        ),
        ("half-encoded", get_req("/.%2e/state.db", ""), 400, true),
        (
            "encoded slash",
            get_req("/_r/v2/..%2f..%2fstate.db", ""),
            400,
            true,
        ),
        (
            "backslash",
            get_req("/_r/v2/..\\..\\state.db", ""),
            400,
            true,
        ),
        (
            "encoded backslash",
            get_req("/_r/v2/..%5c..%5cstate.db", ""),
            400,
            true,
        ),
        ("NUL", get_req("/style.css%00.html", ""), 400, true),
        (
            "overlong UTF-8 dot",
            get_req("/%c0%ae%c0%ae/state.db", ""),
            400,
            true,
        ),
        (
            "double encoding is literal",
            get_req("/%252e%252e/state.db", ""),
            404,
            true,
        ),
        (
            "traversal through the API prefix",
            get_req("/api/../_skewless/api/v1/status", ""),
            400,
            true,
        ),
        (
            "traversal in a release id",
            get_req("/_r/..%2f/state.db", ""),
            400,
            true,
        ),
        (
            "overlong header",
            get_req("/", &format!("x-long: {long}\r\n")),
            431,
            false,
        ),
        ("too many headers", get_req("/", &many), 431, false),
        (
            "malformed header line",
            b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n".to_vec(),
            400,
            false,
        ),
        (
            "garbage request line",
            b"\x16\x03\x01\x02\x00 hello\r\n\r\n".to_vec(),
            400,
            false,
        ),
        (
            "pin naming an unknown release",
            get_req("/style.css", "skewless-release: nope\r\n"),
            200,
            false,
        ),
        (
            "pin cookie naming a retired release",
            get_req("/style.css", "cookie: skewless_release=v1\r\n"),
            200,
            false,
        ),
        (
            "pin header too long for an id",
            get_req(
                "/style.css",
                &format!("skewless-release: {}\r\n", "v".repeat(300)),
            ),
            200,
            false,
        ),
        (
            "admin without token",
            get_req("/_skewless/api/v1/status", ""),
            401,
            true,
        ),
        (
            "admin with a wrong token",
            get_req("/_skewless/api/v1/status", "authorization: Bearer nope\r\n"),
            401,
            true,
        ),
        (
            "admin with a token in basic auth",
            get_req(
                "/_skewless/api/v1/status",
                "authorization: Basic dGVzdC1hZG1pbi10b2tlbg==\r\n",
            ),
            401,
            true,
        ),
    ];
    for (name, req, want, json_body) in &table {
        let (code, text) = raw(&s.url, req);
        assert_eq!(code, *want, "{name}: {}", text.lines().next().unwrap_or(""));
        if *json_body {
            assert!(
                text.contains("{\"error\":"),
                "{name}: no JSON error body in {text}"
            );
        }
        assert!(
            !text.contains(&secret_marker),
            "{name}: served the state database"
        );
    }
    // A retired pin is served the current release and told to upgrade.
    let r = s
        .get("/style.css")
        .header(header::COOKIE, "skewless_release=v1")
        .send()
        .unwrap();
    assert_eq!(r.headers()["skewless-served-by"], "v2");
    assert_eq!(r.headers()["skewless-required"], "v2");

    // Blob upload whose bytes mismatch the hash; upload past the limit.
    let data = b"hello".to_vec();
    let wrong = blake3::hash(b"other").to_hex().to_string();
    let r = s
        .admin(reqwest::Method::PUT, &format!("/blobs/{wrong}"))
        .body(data)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let big = vec![1u8; 10_000];
    let r = s
        .admin(
            reqwest::Method::PUT,
            &format!("/blobs/{}", blake3::hash(&big).to_hex()),
        )
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().unwrap().contains("upload limit"));

    // More event streams from one address than the limit.
    let mut held: Vec<_> = (0..3).map(|_| s.events("v2")).collect();
    for st in &mut held {
        st.next_event();
    }
    let r = s.get("/_skewless/events?release=v2").send().unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.text().unwrap().contains("too many event streams"));
    drop(held);
    wait_for("stream slots to free up", Duration::from_secs(30), || {
        s.get("/_skewless/api/v1/status")
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json::<serde_json::Value>()
            .unwrap()["event_streams"]
            == 0
    });

    // A slow client holding its headers open is cut off at the timeout; an
    // idle keep-alive connection too.
    let started = Instant::now();
    let (code, _) = raw(&s.url, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    assert!(code == 408 || code == 0, "slowloris got {code}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the header timeout did not fire"
    );
    let addr = s.url.trim_start_matches("http://");
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(idle, "GET /_skewless/version HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 65536];
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match idle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("idle keep-alive connection was not closed: {e}"),
        }
        assert!(Instant::now() < deadline);
    }
    assert!(total > 0);

    // Healthy after all of it.
    assert_eq!(
        s.get("/")
            .header(header::ACCEPT, "text/html")
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(s.get("/_r/v2/style.css").send().unwrap().status(), 200);
}

#[test]
fn read_only_tokens_and_the_dashboard_policy() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("skewless.toml");
    std::fs::write(
        &config,
        "[[tokens]]\nname = \"viewer\"\ntoken = \"viewer-token-0123456789\"\nrole = \"read\"\n",
    )
    .unwrap();
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--config", config.to_str().unwrap()],
    );
    s.deploy(&example("v1"), "v1", true);
    let viewer = |m: reqwest::Method, p: &str| {
        s.http
            .request(m, format!("{}/_skewless/api/v1{p}", s.url))
            .bearer_auth("viewer-token-0123456789")
            .send()
            .unwrap()
    };
    assert_eq!(viewer(reqwest::Method::GET, "/status").status(), 200);
    assert_eq!(viewer(reqwest::Method::GET, "/fsck").status(), 200);
    for (m, p) in [
        (reqwest::Method::POST, "/releases/v1/promote"),
        (reqwest::Method::POST, "/rollback"),
        (reqwest::Method::POST, "/gc"),
        (reqwest::Method::POST, "/fsck"),
        (reqwest::Method::POST, "/releases/v1/retire"),
    ] {
        let r = viewer(m.clone(), p);
        assert_eq!(r.status(), 403, "{m} {p}");
        assert!(r.text().unwrap().contains("read-only"));
    }
    // Short tokens are refused at start-up, with a one-line error.
    std::fs::write(&config, "[[tokens]]\nname = \"weak\"\ntoken = \"short\"\n").unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .args([
            "serve",
            "--print-config",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shorter than 16") && err.trim().lines().count() == 1,
        "{err}"
    );
    // The token is never echoed or printed by print-config.
    std::fs::write(
        &config,
        "[[tokens]]\nname = \"ci\"\ntoken = \"ci-secret-0123456789abcdef\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .args([
            "serve",
            "--print-config",
            "--config",
            config.to_str().unwrap(),
            "--admin-token",
            "flag-secret-0123456789",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("ci-secret") && !text.contains("flag-secret"),
        "{text}"
    );

    // The dashboard and its files carry a strict Content-Security-Policy.
    for p in [
        "/_skewless/dashboard",
        "/_skewless/dashboard/app.js",
        "/_skewless/dashboard/style.css",
        "/_skewless/dashboard/icon.svg",
    ] {
        let r = s.get(p).send().unwrap();
        assert_eq!(r.status(), 200, "{p}");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
    let html = s
        .get("/_skewless/dashboard")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline code"
    );
}

#[test]
fn header_limits_hold_on_http1_and_http2_and_are_configurable() {
    let s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    let line = |len: usize| format!("x-big: {}\r\n", "a".repeat(len - 7));
    // HTTP/1: a line of exactly 8 KiB passes, one byte more is refused with
    // a JSON reason; a head of short lines over 32 KiB is refused too.
    assert_eq!(raw(&s.url, &get_req("/", &line(8192))).0, 200);
    let (code, answer) = raw(&s.url, &get_req("/", &line(8193)));
    assert_eq!(code, 431, "{answer}");
    assert!(
        answer.contains("header line x-big is longer than 8 KiB"),
        "{answer}"
    );
    let (code, answer) = raw(&s.url, &get_req("/api/x", &line(200 * 1024)));
    assert_eq!(code, 431, "{answer}");
    let short: String = (0..40)
        .map(|i| format!("x-h{i}: {}\r\n", "b".repeat(900)))
        .collect();
    assert_eq!(raw(&s.url, &get_req("/", &short)).0, 431);
    let (code, answer) = raw(&s.url, &get_req(&format!("/{}", "c".repeat(9000)), ""));
    assert_eq!(code, 414, "{answer}");
    // HTTP/2 (prior knowledge): the same limits.
    let h2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let get2 = |name: &str, len: usize| {
        h2.get(format!("{}/style.css", s.url))
            .header(name, "d".repeat(len))
            .send()
    };
    let ok = get2("x-fine", 4000).unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    assert_eq!(ok.status(), 200);
    let long = get2("x-big", 9000).unwrap();
    assert_eq!(long.status(), 431);
    assert!(long.text().unwrap().contains("longer than 8 KiB"));
    let mut req = h2.get(format!("{}/style.css", s.url));
    for i in 0..40 {
        req = req.header(format!("x-h{i}"), "e".repeat(1000));
    }
    assert_eq!(req.send().unwrap().status(), 431);
    // Healthy afterwards on both.
    assert_eq!(get2("x-fine", 10).unwrap().status(), 200);
    assert_eq!(raw(&s.url, &get_req("/", "")).0, 200);

    // Configurable: larger limits let a 12 KiB line through.
    let wide = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--max-header-line-bytes",
            "16384",
            "--max-request-head-bytes",
            "65536",
        ],
    );
    wide.deploy(&example("v1"), "v1", true);
    assert_eq!(raw(&wide.url, &get_req("/", &line(12 * 1024))).0, 200);
    assert_eq!(raw(&wide.url, &get_req("/", &line(17 * 1024))).0, 431);
    // Nonsense limits stop the server with one line.
    let bad = std::process::Command::new(crate::support::bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-request-head-bytes",
            "100",
        ])
        .arg("--data")
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.trim_end().lines().count() == 1
            && err.contains("max_request_head_bytes must be at least 8192"),
        "{err}"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_stops_everything() {
    let backend = Backend::start(1, "slow");
    let mut s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--shutdown-grace-secs", "10"],
    );
    s.deploy_with(
        &example("v1"),
        "v1",
        &["--backend", &backend.url, "--promote"],
    );
    let cmd = format!("{} --port {{port}} --api 2", example_backend().display());
    s.deploy_with(&example("v2"), "v2", &["--backend-cmd", &cmd]);
    wait_for("v2's managed back end", Duration::from_secs(30), || {
        let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
        list[1]["backend_status"]["health"] == "healthy"
    });
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
    let managed_pid = list[1]["backend_status"]["pid"].as_u64().unwrap() as u32;
    let mut stream = s.events("v1");
    stream.next_event();

    let url = format!("{}/api/slow?ms=1500", s.url);
    let slow = std::thread::spawn(move || {
        reqwest::blocking::get(url).map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
    });
    let probe = reqwest::blocking::Client::new();
    wait_for(
        "the slow request to reach the back end",
        Duration::from_secs(10),
        || {
            probe
                .get(format!("{}/api/stats", backend.url))
                .send()
                .unwrap()
                .json::<serde_json::Value>()
                .unwrap()["in_flight"]
                == 1
        },
    );
    let addr = s.url.trim_start_matches("http://").to_owned();
    let status = {
        let pid = s.pid();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        // The stream hears of the shutdown with a reconnect hint.
        let (name, _) = stream.next_event();
        assert_eq!(name, "shutdown");
        s.terminate()
    };
    assert!(status.success(), "exit {status}");
    let (code, body) = slow
        .join()
        .unwrap()
        .expect("the in-flight request completed");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("slept_ms"));
    assert!(
        TcpStream::connect(&addr).is_err(),
        "no new connections after shutdown"
    );
    wait_for(
        "the managed back end to stop",
        Duration::from_secs(15),
        || !alive(managed_pid),
    );
}

#[test]
fn a_restart_under_load_loses_no_retryable_request() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut s = Server::start_with(tempfile::tempdir().unwrap(), &["--listen", &listen]);
    assert_eq!(s.url, format!("http://{listen}"));
    s.deploy(&example("v1"), "v1", true);
    let css = std::fs::read(example("v1").join("style.css")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done, retried, css, url) = (
                stop.clone(),
                done.clone(),
                retried.clone(),
                css.clone(),
                s.url.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    // One logical GET, retried while the server is away.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        match client.get(format!("{url}/_r/v1/style.css")).send() {
                            Ok(r) => {
                                assert_eq!(r.status(), 200, "no error answers during a restart");
                                assert_eq!(r.bytes().unwrap(), css, "no truncated answers");
                                break;
                            }
                            Err(e) => {
                                assert!(
                                    e.is_connect() || e.is_request(),
                                    "unexpected failure: {e}"
                                );
                                retried.fetch_add(1, Ordering::Relaxed);
                                assert!(Instant::now() < deadline, "the server did not come back");
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_for("load to build", Duration::from_secs(10), || {
        done.load(Ordering::Relaxed) > 200
    });
    let status = s.terminate();
    assert!(status.success());
    let data = std::mem::replace(&mut s.data, tempfile::tempdir().unwrap());
    let before = done.load(Ordering::Relaxed);
    let s2 = Server::start_with(data, &["--listen", &listen]);
    wait_for(
        "load to continue on the restarted server",
        Duration::from_secs(20),
        || done.load(Ordering::Relaxed) > before + 200,
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a request was lost or answered wrongly");
    }
    eprintln!(
        "{} requests across a restart, {} connection-level retries, none lost",
        done.load(Ordering::Relaxed),
        retried.load(Ordering::Relaxed)
    );
    assert_eq!(s2.current().as_deref(), Some("v1"));
}
