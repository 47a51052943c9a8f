//! Skew-protected API routing: each client's API calls reach the back end of
//! the release it runs, through a real reverse proxy; managed back ends are
//! started, health-checked, restarted and stopped by skewless.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{alive, example, example_backend, wait_for, Backend, Server};
use reqwest::header;

fn json(resp: reqwest::blocking::Response) -> serde_json::Value {
    resp.json().expect("json body")
}

fn releases(s: &Server) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap()
}

fn release<'a>(list: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap()
}

#[test]
fn pinned_clients_keep_their_back_end() {
    let b1 = Backend::start(1, "b1");
    let b2 = Backend::start(2, "b2");
    let s = Server::start();
    let deploy = |version: &str, id: &str, backend: &str| {
        s.deploy_with(&example(version), id, &["--backend", backend, "--promote"]);
    };
    deploy("v1", "v1", &b1.url);
    deploy("v2", "v2", &b2.url);

    let pinned = s
        .get("/api/items")
        .header("skewless-release", "v1")
        .send()
        .unwrap();
    assert_eq!(pinned.status(), 200);
    assert_eq!(pinned.headers()["skewless-served-by"], "v1");
    assert_eq!(pinned.headers()["skewless-current"], "v2");
    assert!(json(pinned).is_array(), "v1's API answers a list");
    let by_cookie = s
        .get("/api/items")
        .header(header::COOKIE, "skewless_release=v1")
        .send()
        .unwrap();
    assert!(json(by_cookie).is_array());
    let unpinned = s.get("/api/items").send().unwrap();
    assert_eq!(unpinned.headers()["skewless-served-by"], "v2");
    assert!(
        json(unpinned)["items"].is_array(),
        "v2's API answers an object"
    );
    // An unknown pin is served as unpinned.
    assert!(json(
        s.get("/api/items")
            .header("skewless-release", "zz")
            .send()
            .unwrap()
    )
    .is_object());

    // Forwarding headers set, hop-by-hop headers stripped, query kept.
    let who = json(
        s.get("/api/whoami?x=1")
            .header(header::CONNECTION, "keep-alive, x-hop")
            .header("x-hop", "secret")
            .header("x-forwarded-for", "10.1.2.3")
            .header("skewless-release", "v1")
            .send()
            .unwrap(),
    );
    assert_eq!(who["backend"], "b1");
    assert_eq!(who["x_forwarded_for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(who["x_forwarded_proto"], "http");
    let host = s.url.trim_start_matches("http://");
    assert_eq!(who["x_forwarded_host"], host);
    assert_eq!(
        who["forwarded"],
        format!("for=127.0.0.1;host=\"{host}\";proto=http")
    );
    assert!(who["x_hop"].is_null(), "{who}");
    assert_ne!(who["connection"], "keep-alive, x-hop");

    // A release without a back end uses the nearest older one's.
    s.deploy(&example("v2"), "v3", true);
    let r = s.get("/api/items").send().unwrap();
    assert_eq!(r.headers()["skewless-served-by"], "v2");
    assert_eq!(r.headers()["skewless-current"], "v3");
    // A retired release's pin falls back to the current release's routing.
    s.ok(&["retire", "v1"]);
    let r = s
        .get("/api/items")
        .header("skewless-release", "v1")
        .send()
        .unwrap();
    assert_eq!(r.headers()["skewless-served-by"], "v2");
    assert!(json(r).is_object());
}

#[test]
fn connections_to_back_ends_are_reused() {
    let b1 = Backend::start(1, "b1");
    let s = Server::start();
    s.deploy_with(&example("v1"), "v1", &["--backend", &b1.url, "--promote"]);
    let peer = |s: &Server| {
        let who = json(s.get("/api/whoami").send().unwrap());
        assert_eq!(who["host"], b1.url.trim_start_matches("http://"));
        who["peer"].as_str().unwrap().to_owned()
    };
    // One request at a time: every call after the first goes over the
    // connection the first one opened.
    let first = peer(&s);
    for _ in 0..20 {
        assert_eq!(peer(&s), first);
    }
    // Eight clients at once need at most eight connections.
    let peers: std::collections::HashSet<String> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| (0..15).map(|_| peer(&s)).collect::<Vec<_>>()))
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert!(peers.len() <= 8, "{} connections: {peers:?}", peers.len());
    // A client that goes away mid-response costs its connection, not the
    // next caller's answer.
    let addr = s.url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET /api/download?bytes=104857600 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut some = [0u8; 65536];
    let _ = c.read(&mut some).unwrap();
    drop(c);
    assert_eq!(s.get("/api/items").send().unwrap().status(), 200);
}

#[test]
fn websockets_reach_the_pinned_back_end() {
    let b1 = Backend::start(1, "b1");
    let b2 = Backend::start(2, "b2");
    let s = Server::start();
    s.deploy_with(&example("v1"), "v1", &["--backend", &b1.url, "--promote"]);
    s.deploy_with(&example("v2"), "v2", &["--backend", &b2.url, "--promote"]);
    let ws_url = format!("{}/api/ws", s.url.replace("http://", "ws://"));
    for (pin, expect) in [(Some("v1"), "b1: hello"), (None, "b2: hello")] {
        let mut req =
            tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
        if let Some(pin) = pin {
            req.headers_mut()
                .insert("skewless-release", pin.parse().unwrap());
        }
        let (mut socket, resp) = tungstenite::connect(req).expect("websocket through the gateway");
        assert_eq!(resp.status(), 101);
        socket
            .send(tungstenite::Message::Text("hello".into()))
            .unwrap();
        let msg = socket.read().unwrap();
        assert_eq!(msg.to_text().unwrap(), expect);
        socket
            .send(tungstenite::Message::Text("again".into()))
            .unwrap();
        assert!(socket
            .read()
            .unwrap()
            .to_text()
            .unwrap()
            .ends_with(": again"));
        let _ = socket.close(None);
    }
}

#[test]
fn dead_and_slow_back_ends_get_clear_errors() {
    let b1 = Backend::start(1, "slow");
    let s = Server::start_with(tempfile::tempdir().unwrap(), &["--read-timeout-secs", "1"]);
    let closed = format!("http://127.0.0.1:{}", crate::support::free_port());
    s.deploy_with(&example("v1"), "dead", &["--backend", &closed, "--promote"]);
    let r = s.get("/api/items").send().unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    let body = json(r);
    assert!(
        body["error"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );

    s.deploy_with(&example("v2"), "slow", &["--backend", &b1.url, "--promote"]);
    // While one request hangs, the gateway keeps answering.
    let url = format!("{}/api/hang", s.url);
    let hanging = std::thread::spawn(move || reqwest::blocking::get(url).unwrap());
    wait_for(
        "the gateway to answer during a hung request",
        Duration::from_secs(5),
        || {
            s.get("/_skewless/version")
                .send()
                .is_ok_and(|r| r.status() == 200)
        },
    );
    let r = hanging.join().unwrap();
    assert_eq!(r.status(), 504);
    let body = json(r);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1s"),
        "{body}"
    );

    // No back end at all and no default upstream.
    let bare = Server::start();
    bare.deploy(&example("v1"), "v1", true);
    let r = bare.get("/api/items").send().unwrap();
    assert_eq!(r.status(), 502);
    assert!(json(r)["error"]
        .as_str()
        .unwrap()
        .contains("default_upstream"));
    // The default upstream takes API calls when no release has a back end.
    let with_default = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--default-upstream", &b1.url],
    );
    with_default.deploy(&example("v1"), "v1", true);
    let r = with_default.get("/api/items").send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "slow");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn bodies_stream_both_ways_and_disconnects_leak_nothing() {
    let b1 = Backend::start(1, "b1");
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--max-proxy-body-bytes", "1073741824"],
    );
    s.deploy_with(&example("v1"), "v1", &["--backend", &b1.url, "--promote"]);
    let rss_before = rss_kib(s.pid());

    // 256 MiB up, generated on the fly.
    const UP: u64 = 256 * 1024 * 1024;
    struct Gen(u64);
    impl Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.0) as usize;
            buf[..n].fill(b'u');
            self.0 -= n as u64;
            Ok(n)
        }
    }
    let body = reqwest::blocking::Body::sized(Gen(UP), UP);
    let r = s
        .http
        .post(format!("{}/api/echo", s.url))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r)["bytes"], UP);

    // 256 MiB down.
    let mut r = s.get(&format!("/api/download?bytes={UP}")).send().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    assert_eq!(got, UP);
    let rss_after = rss_kib(s.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "the gateway must stream, not buffer: RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // Clients that vanish mid-download and mid-upload.
    for _ in 0..5 {
        let addr = s.url.trim_start_matches("http://");
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(
            c,
            "GET /api/download?bytes=1073741824 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )
        .unwrap();
        let mut first = [0u8; 65536];
        let _ = c.read(&mut first).unwrap();
        drop(c);
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(
            c,
            "POST /api/echo HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1073741824\r\n\r\n"
        )
        .unwrap();
        c.write_all(&[b'x'; 65536]).unwrap();
        drop(c);
    }
    assert_eq!(s.get("/api/items").send().unwrap().status(), 200);
    assert_eq!(s.get("/_skewless/version").send().unwrap().status(), 200);
}

#[test]
fn proxied_bodies_past_the_limit_are_refused() {
    let b1 = Backend::start(1, "b1");
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--max-proxy-body-bytes", "100000"],
    );
    s.deploy_with(&example("v1"), "v1", &["--backend", &b1.url, "--promote"]);
    // Declared too large: refused before the back end sees it.
    let r = s
        .http
        .post(format!("{}/api/echo", s.url))
        .body(vec![b'x'; 200_000])
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(json(r)["error"].as_str().unwrap().contains("proxy limit"));
    // Chunked, no length: cut off at the limit with a 413 (read over a raw
    // socket: the server answers before the client has sent everything).
    let addr = s.url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "POST /api/echo HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for _ in 0..20 {
        if write!(c, "2710\r\n{}\r\n", "y".repeat(10_000)).is_err() {
            break;
        }
    }
    let _ = write!(c, "0\r\n\r\n");
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("proxy limit"), "{answer}");
    // Within the limit: fine (on a new connection: the server closes the
    // one it refused a body on, and a pooled client may not have noticed).
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/echo", s.url))
        .body(vec![b'x'; 50_000])
        .send()
        .unwrap();
    assert_eq!(json(r)["bytes"], 50_000);
}

#[test]
fn managed_back_ends_start_restart_and_stop() {
    let mut s = Server::start();
    let cmd = |api: u32| {
        format!(
            "{} --port {{port}} --api {api}",
            example_backend().display()
        )
    };
    s.ok(&[
        "deploy",
        example("v1").to_str().unwrap(),
        "--release",
        "v1",
        "--backend-cmd",
        &cmd(1),
        "--health",
        "/healthz",
    ]);
    // Promote waits for the health check.
    s.ok(&["promote", "v1"]);
    let r = s.get("/api/items").send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-backend"],
        "v1",
        "SKEWLESS_RELEASE names the release"
    );
    assert!(json(r).is_array());
    let list = releases(&s);
    let st = &release(&list, "v1")["backend_status"];
    assert_eq!(st["health"], "healthy");
    let pid1 = st["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid1));
    let table = s.ok(&["releases"]);
    assert!(table.contains("managed healthy"), "{table}");

    // Killed: restarted, healthy again, traffic flows again.
    std::process::Command::new("kill")
        .args(["-KILL", &pid1.to_string()])
        .status()
        .unwrap();
    wait_for(
        "the back end to be restarted and healthy",
        Duration::from_secs(30),
        || {
            let list = releases(&s);
            let st = &release(&list, "v1")["backend_status"];
            st["health"] == "healthy"
                && st["restarts"].as_u64() >= Some(1)
                && st["pid"].as_u64() != Some(pid1 as u64)
        },
    );
    assert_eq!(s.get("/api/items").send().unwrap().status(), 200);

    // Blue/green: v2's back end beside v1's, traffic shifted by pin.
    s.ok(&[
        "deploy",
        example("v2").to_str().unwrap(),
        "--release",
        "v2",
        "--backend-cmd",
        &cmd(2),
        "--promote",
    ]);
    assert!(json(s.get("/api/items").send().unwrap()).is_object());
    assert!(json(
        s.get("/api/items")
            .header("skewless-release", "v1")
            .send()
            .unwrap()
    )
    .is_array());
    let list = releases(&s);
    let v1_pid = release(&list, "v1")["backend_status"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let v2_pid = release(&list, "v2")["backend_status"]["pid"]
        .as_u64()
        .unwrap() as u32;

    // Retire v1: its back end stops; its pin now reaches v2.
    s.ok(&["retire", "v1"]);
    wait_for("v1's back end to stop", Duration::from_secs(15), || {
        !alive(v1_pid)
    });
    assert!(json(
        s.get("/api/items")
            .header("skewless-release", "v1")
            .send()
            .unwrap()
    )
    .is_object());

    // Shutdown stops the rest.
    let status = s.terminate();
    assert!(status.success(), "{status}");
    wait_for("v2's back end to stop", Duration::from_secs(15), || {
        !alive(v2_pid)
    });
}

#[test]
fn a_back_end_that_dies_at_once_blocks_promotion() {
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--health-timeout-secs", "5"],
    );
    s.deploy(&example("v1"), "v1", true);
    s.ok(&[
        "deploy",
        example("v2").to_str().unwrap(),
        "--release",
        "bad",
        "--backend-cmd",
        "sh -c 'echo boom-line >&2; exit 3'",
    ]);
    let err = s.fails(&["promote", "bad"]);
    assert!(
        err.contains("not healthy")
            && err.contains("exited with status 3")
            && err.contains("boom-line"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(s.current().as_deref(), Some("v1"));
    let table = s.ok(&["releases"]);
    let row = table.lines().find(|l| l.starts_with("bad")).unwrap();
    assert!(
        row.contains("unhealthy")
            && row.contains("exited with status 3")
            && row.contains("boom-line"),
        "{row}"
    );
    // --force overrides.
    s.ok(&["promote", "bad", "--force"]);
    assert_eq!(s.current().as_deref(), Some("bad"));
    // Bad deploy flags.
    let err = s.fails(&[
        "deploy",
        example("v2").to_str().unwrap(),
        "--release",
        "x",
        "--backend",
        "ftp://h",
    ]);
    assert!(err.contains("http://"), "{err}");
}

#[test]
fn promote_and_rollback_twenty_times_under_load() {
    let b1 = Backend::start(1, "b1");
    let b2 = Backend::start(2, "b2");
    let s = Arc::new(Server::start());
    s.deploy_with(&example("v1"), "v1", &["--backend", &b1.url, "--promote"]);
    s.deploy_with(&example("v2"), "v2", &["--backend", &b2.url]);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = [Some("v1"), Some("v2"), None, None]
        .into_iter()
        .map(|pin| {
            let (s, stop, served) = (s.clone(), stop.clone(), served.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) || n == 0 {
                    let mut req = s.get("/api/items");
                    if let Some(p) = pin {
                        req = req.header("skewless-release", p);
                    }
                    let r = req.send().expect("request");
                    assert_eq!(r.status(), 200, "pin {pin:?}");
                    let by = r.headers()["skewless-served-by"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    let backend = r.headers()["x-backend"].to_str().unwrap().to_owned();
                    let body = json(r);
                    if let Some(p) = pin {
                        assert_eq!(by, p, "a pinned client is never moved");
                    }
                    let expect = if by == "v1" {
                        ("b1", true)
                    } else {
                        ("b2", false)
                    };
                    assert_eq!(
                        (backend.as_str(), body.is_array()),
                        expect,
                        "answer consistent with {by}"
                    );
                    n += 1;
                }
                served.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for _ in 0..10 {
        s.ok(&["promote", "v2"]);
        s.ok(&["rollback"]);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .expect("a client saw a failed or inconsistent answer");
    }
    eprintln!(
        "{} API requests, all consistent with their pin, across 20 switches",
        served.load(Ordering::Relaxed)
    );
    assert_eq!(s.current().as_deref(), Some("v1"));
}

/// `--workers 1` runs the whole server on one thread: every kind of
/// request is served while a long download stays open, and a promotion
/// reaches an open event stream and moves unpinned API calls.
#[test]
fn one_worker_thread_serves_every_kind_of_request() {
    let b1 = Backend::start(1, "b1");
    let b2 = Backend::start(2, "b2");
    let s = Server::start_with(tempfile::tempdir().unwrap(), &["--workers", "1"]);
    s.deploy_with(&example("v1"), "v1", &["--backend", &b1.url, "--promote"]);
    s.deploy_with(&example("v2"), "v2", &["--backend", &b2.url]);
    let mut events = s.events("v1");
    assert_eq!(events.next_event().0, "release");

    // A 64 MiB download, started and then left waiting.
    const BIG: usize = 64 << 20;
    let mut big = s
        .get(&format!("/api/download?bytes={BIG}"))
        .header("skewless-release", "v1")
        .send()
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    big.read_exact(&mut buf).unwrap();

    let shell = s.get("/").send().unwrap();
    assert_eq!(shell.status(), 200);
    assert!(shell.text().unwrap().contains("/_r/v1/"));
    let asset = s.get("/_r/v1/assets/index-4f1c9a2e.js").send().unwrap();
    assert_eq!(asset.status(), 200);
    assert_eq!(s.get("/_skewless/version").send().unwrap().status(), 200);
    let r = s.get("/api/items").send().unwrap();
    assert_eq!(r.headers()["x-backend"], "b1");

    s.ok(&["promote", "v2"]);
    let (name, data) = events.next_event();
    assert_eq!(name, "release");
    assert!(data.contains("v2"), "{data}");
    let r = s.get("/api/items").send().unwrap();
    assert_eq!(r.headers()["x-backend"], "b2");
    let r = s
        .get("/api/items")
        .header("skewless-release", "v1")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-backend"], "b1");

    let ws_url = format!("{}/api/ws", s.url.replace("http://", "ws://"));
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    req.headers_mut()
        .insert("skewless-release", "v1".parse().unwrap());
    let (mut socket, _) = tungstenite::connect(req).expect("websocket through the gateway");
    socket
        .send(tungstenite::Message::Text("hello".into()))
        .unwrap();
    assert_eq!(socket.read().unwrap().to_text().unwrap(), "b1: hello");
    let _ = socket.close(None);

    // The download resumes and arrives whole.
    let mut got = buf.len();
    loop {
        let n = big.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, BIG);
}

#[test]
fn config_file_env_and_flags_merge() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("skewless.toml");
    std::fs::write(
        &file,
        "api_prefixes = [\"/rpc/\"]\nread_timeout_secs = 7\ndefault_upstream = \"http://127.0.0.1:9\"\n[backend]\nhealth_path = \"/ready\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:9999"])
        .env("SKEWLESS_READ_TIMEOUT_SECS", "5")
        .env_remove("SKEWLESS_LISTEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "listen = \"127.0.0.1:9999\"",
        "api_prefixes = [\"/rpc/\"]",
        "read_timeout_secs = 5",
        "default_upstream = \"http://127.0.0.1:9\"",
        "health_path = \"/ready\"",
        "connect_timeout_ms = 2000",
        // Not set: one per CPU, shown as a number.
        "workers = ",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    let cpus: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("workers = "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no workers count in:\n{text}"));
    assert!(cpus >= 1);
    let file_arg = file.to_str().unwrap();
    std::fs::write(&file, "api_prefix = [\"/rpc/\"]\n").unwrap();
    assert!(config_error(&["--config", file_arg]).contains("api_prefix"));

    // The configured prefix is what gets proxied.
    let b = Backend::start(1, "rpc");
    std::fs::write(
        &file,
        format!(
            "api_prefixes = [\"/rpc/\"]\ndefault_upstream = \"{}\"\n",
            b.url
        ),
    )
    .unwrap();
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--config", file.to_str().unwrap()],
    );
    s.deploy(&example("v1"), "v1", true);
    // /rpc/ goes to the upstream (which has no such route: its 404), /api/ is static.
    let r = s.get("/rpc/anything").send().unwrap();
    assert_eq!(r.headers()["skewless-served-by"], "v1");
    assert_eq!(s.get("/api/items").send().unwrap().status(), 404);
    config_error(&["--default-upstream", "ftp://x"]);
    // Worker threads: from the file, and at least one.
    std::fs::write(&file, "workers = 1\n").unwrap();
    let out = print_config(&["--config", file_arg]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("workers = 1"));
    assert!(config_error(&["--workers", "0"]).contains("workers must be 1 to 1024"));
    // No read timeout would cut every response body that ever waits.
    assert!(
        config_error(&["--read-timeout-secs", "0"]).contains("read_timeout_secs must be above 0")
    );
}

/// `skewless serve --print-config` with `args`.
fn print_config(args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::support::bin())
        .args(["serve", "--print-config"])
        .args(args)
        .output()
        .unwrap()
}

/// The error of a `--print-config` with `args` that must fail: one line.
fn config_error(args: &[&str]) -> String {
    let out = print_config(args);
    assert!(!out.status.success(), "{args:?} should be refused");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err
}

/// A request as a [`RawBackend`] read it.
struct RawRequest {
    /// "METHOD /target".
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Which connection it came on (in the order they were accepted).
    conn: usize,
}

impl RawRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Answer = dyn Fn(&RawRequest, &mut std::net::TcpStream) -> bool + Send + Sync;

/// A back end on a raw socket, for answers no HTTP library would send:
/// each request (head and body read in full, Content-Length or chunked)
/// goes to `answer`, which writes what it likes; `false` closes the
/// connection (unless `answer` keeps a clone of it). A request with
/// `x-interim` is sent `100 Continue` before its body is read; one with
/// `x-answer-early` goes to `answer` as soon as its head is read, and its
/// body is never read (nor any request after it).
struct RawBackend {
    url: String,
    seen: Arc<std::sync::Mutex<Vec<(String, usize)>>>,
}

impl RawBackend {
    fn start(
        answer: impl Fn(&RawRequest, &mut std::net::TcpStream) -> bool + Send + Sync + 'static,
    ) -> RawBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let log = seen.clone();
        std::thread::spawn(move || {
            for (id, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let (answer, log) = (answer.clone(), log.clone());
                std::thread::spawn(move || serve_raw(stream, id, &*answer, &log));
            }
        });
        RawBackend { url, seen }
    }

    /// Every request so far: its line and connection.
    fn seen(&self) -> Vec<(String, usize)> {
        self.seen.lock().unwrap().clone()
    }

    /// The connection the last request with this line came on.
    fn conn_of(&self, line: &str) -> usize {
        self.seen()
            .iter()
            .rev()
            .find(|(l, _)| l == line)
            .unwrap_or_else(|| panic!("no {line} in {:?}", self.seen()))
            .1
    }
}

fn serve_raw(
    stream: std::net::TcpStream,
    id: usize,
    answer: &Answer,
    seen: &std::sync::Mutex<Vec<(String, usize)>>,
) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut line = String::new();
    let mut read_line = |reader: &mut std::io::BufReader<_>| -> Option<String> {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_owned()),
        }
    };
    loop {
        let Some(request_line) = read_line(&mut reader) else {
            return;
        };
        let mut headers = Vec::new();
        loop {
            let Some(h) = read_line(&mut reader) else {
                return;
            };
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').unwrap();
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut req = RawRequest {
            line: request_line
                .rsplit_once(' ')
                .map(|(l, _)| l.to_owned())
                .unwrap(),
            headers,
            body: Vec::new(),
            conn: id,
        };
        if req.header("x-interim").is_some()
            && out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        if req.header("x-answer-early").is_some() {
            seen.lock().unwrap().push((req.line.clone(), id));
            answer(&req, &mut out);
            return;
        }
        if let Some(n) = req.header("content-length") {
            req.body.resize(n.parse().unwrap(), 0);
            if reader.read_exact(&mut req.body).is_err() {
                return;
            }
        } else if req
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                let Some(size) = read_line(&mut reader) else {
                    return;
                };
                let n = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
                if n == 0 {
                    while read_line(&mut reader).is_some_and(|t| !t.is_empty()) {}
                    break;
                }
                let start = req.body.len();
                req.body.resize(start + n, 0);
                let mut crlf = [0u8; 2];
                if reader.read_exact(&mut req.body[start..]).is_err()
                    || reader.read_exact(&mut crlf).is_err()
                {
                    return;
                }
            }
        }
        seen.lock().unwrap().push((req.line.clone(), id));
        if !answer(&req, &mut out) {
            return;
        }
    }
}

/// Sends `request` over a new connection to the gateway and reads until
/// it closes (ask for that with `Connection: close`).
fn raw_exchange(s: &Server, request: &str) -> String {
    let addr = s.url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(request.replace("{addr}", addr).as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// FNV-1a, to compare large bodies without keeping two copies.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn every_kind_of_response_body_passes_through() {
    let (go_on, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let raw = RawBackend::start(move |req, out| {
        let reply: &[u8] = match req.line.as_str() {
            "GET /api/chunked" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: x-sum\r\n\
                Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Sum: 12\r\n\r\n",
            "GET /api/slow" => {
                out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nthe first piece.\r\n")
                    .unwrap();
                // The rest only once the client has seen the first piece.
                wait.lock().unwrap().recv().unwrap();
                b"10\r\n and the second.\r\n0\r\n\r\n"
            }
            "GET /api/close" => {
                out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
                    .unwrap();
                return false;
            }
            "HEAD /api/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Head: yes\r\n\r\n",
            "GET /api/204" => b"HTTP/1.1 204 No Content\r\nX-Empty: 204\r\n\r\n",
            "GET /api/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
            "GET /api/after" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter",
            "POST /api/continue" => {
                assert_eq!(req.body, b"payload");
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                  HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated"
            }
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        };
        out.write_all(reply).is_ok()
    });
    let s = Server::start();
    s.deploy_with(&example("v1"), "v1", &["--backend", &raw.url, "--promote"]);

    // Chunked, trailer fields passed on to a client that takes them.
    let r = s.get("/api/chunked").send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().unwrap(), "hello, world");
    let answer = raw_exchange(
        &s,
        "GET /api/chunked HTTP/1.1\r\nHost: {addr}\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    );
    assert!(
        answer.to_ascii_lowercase().contains("\r\nx-sum: 12\r\n"),
        "{answer}"
    );

    // Streamed: the client has the first piece before the back end sends
    // the rest.
    let mut r = s.get("/api/slow").send().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"the first piece.") {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "ended early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    go_on.send(()).unwrap();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"the first piece. and the second.");

    // Delimited by the back end closing the connection.
    let r = s.get("/api/close").send().unwrap();
    assert_eq!(r.text().unwrap(), "until the end");

    // No body after HEAD, 204 and 304, and the connection carries the
    // next request.
    for (method, path, status) in [
        (reqwest::Method::HEAD, "/api/head", 200),
        (reqwest::Method::GET, "/api/204", 204),
        (reqwest::Method::GET, "/api/304", 304),
    ] {
        let r = s
            .http
            .request(method.clone(), format!("{}{path}", s.url))
            .send()
            .unwrap();
        assert_eq!(r.status(), status);
        if method == reqwest::Method::HEAD {
            assert_eq!(r.headers()["content-length"], "1234");
            assert_eq!(r.headers()["x-head"], "yes");
        }
        assert_eq!(r.bytes().unwrap().len(), 0);
        let r = s.get("/api/after").send().unwrap();
        assert_eq!(r.text().unwrap(), "after");
        assert_eq!(
            raw.conn_of(&format!("{method} {path}")),
            raw.conn_of("GET /api/after"),
            "{method} {path}: the next request goes over the same connection"
        );
    }

    // Interim responses before the final one are not passed on as it.
    let r = s
        .http
        .post(format!("{}/api/continue", s.url))
        .header(header::EXPECT, "100-continue")
        .body("payload")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.text().unwrap(), "created");
}

#[test]
fn broken_and_closing_back_ends() {
    let armed = std::sync::Mutex::new(std::collections::HashSet::new());
    let closed = Arc::new(AtomicBool::new(false));
    let closed_in = closed.clone();
    let raw = RawBackend::start(move |req, out| {
        // A connection armed by /api/arm closes at its next request
        // without answering, as a back end closing an idle connection
        // just as it is reused.
        if armed.lock().unwrap().remove(&req.conn) {
            return false;
        }
        if req.line == "GET /api/then-close" {
            // Answers as if the connection stayed open, then closes it.
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
            let _ = out.shutdown(std::net::Shutdown::Both);
            closed_in.store(true, Ordering::SeqCst);
            return false;
        }
        let reply = match req.line.as_str() {
            "GET /api/garbage" => "this is not HTTP\r\n\r\n".to_owned(),
            "GET /api/short" => "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_owned(),
            "GET /api/arm" => {
                armed.lock().unwrap().insert(req.conn);
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\narmed".to_owned()
            }
            "GET /api/close-after" => {
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbyes".to_owned()
            }
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                req.body.len() + 2,
                format_args!("ok{}", String::from_utf8_lossy(&req.body))
            ),
        };
        let ok = out.write_all(reply.as_bytes()).is_ok();
        // A short body ends with the connection.
        ok && req.line != "GET /api/short"
    });
    let s = Server::start();
    s.deploy_with(&example("v1"), "v1", &["--backend", &raw.url, "--promote"]);

    // Garbage: a one-line 502, the gateway and the back end fine after.
    let r = s.get("/api/garbage").send().unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    let e = json(r)["error"].as_str().unwrap().to_owned();
    assert!(e.contains("invalid response") && !e.contains('\n'), "{e}");
    assert_eq!(s.get("/api/ok").send().unwrap().text().unwrap(), "ok");
    // A body cut short fails the response (the client's connection is
    // cut), not the gateway.
    assert!(s.get("/api/short").send().and_then(|r| r.bytes()).is_err());
    assert_eq!(s.get("/api/ok").send().unwrap().text().unwrap(), "ok");

    // `Connection: close` from the back end: that connection is not used
    // again, though the back end kept it open.
    assert_eq!(
        s.get("/api/close-after").send().unwrap().text().unwrap(),
        "byes"
    );
    assert_eq!(s.get("/api/ok").send().unwrap().text().unwrap(), "ok");
    assert_ne!(
        raw.conn_of("GET /api/close-after"),
        raw.conn_of("GET /api/ok")
    );

    // A pooled connection closed under an idempotent request without a
    // body: sent once more, on a new connection.
    assert_eq!(s.get("/api/arm").send().unwrap().text().unwrap(), "armed");
    let armed_on = raw.conn_of("GET /api/arm");
    let r = s.get("/api/again").send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "ok");
    assert_ne!(raw.conn_of("GET /api/again"), armed_on);
    let tries = |line: &str| raw.seen().iter().filter(|(l, _)| l == line).count();
    assert_eq!(tries("GET /api/again"), 2, "{:?}", raw.seen());
    // A POST with a body is not sent twice: 502.
    assert_eq!(s.get("/api/arm").send().unwrap().text().unwrap(), "armed");
    let r = s
        .http
        .post(format!("{}/api/once", s.url))
        .body("data")
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(json(r)["error"].as_str().unwrap().contains("unreachable"));
    assert_eq!(tries("POST /api/once"), 1, "{:?}", raw.seen());
    let r = s
        .http
        .post(format!("{}/api/once", s.url))
        .body("data")
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "okdata");

    // A pooled connection the back end closed while it was idle is not
    // used again: even a POST with a body gets through, once.
    assert_eq!(
        s.get("/api/then-close").send().unwrap().text().unwrap(),
        "done"
    );
    wait_for("the back end to close", Duration::from_secs(5), || {
        closed.load(Ordering::SeqCst)
    });
    let r = s
        .http
        .post(format!("{}/api/after-close", s.url))
        .body("more")
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "okmore");
    assert_eq!(tries("POST /api/after-close"), 1, "{:?}", raw.seen());
    assert_ne!(
        raw.conn_of("POST /api/after-close"),
        raw.conn_of("GET /api/then-close")
    );
}

#[test]
fn large_request_bodies_arrive_intact() {
    let raw = RawBackend::start(|req, out| {
        let reply = format!(
            "{} {} {}",
            req.body.len(),
            fnv(&req.body),
            req.header("transfer-encoding").unwrap_or("length")
        );
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .is_ok()
    });
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--max-proxy-body-bytes", "67108864"],
    );
    s.deploy_with(&example("v1"), "v1", &["--backend", &raw.url, "--promote"]);
    const SIZE: usize = 20 * 1024 * 1024;
    let body: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let want = fnv(&body);
    // With a Content-Length, and chunked (streamed from a reader).
    let r = s
        .http
        .post(format!("{}/api/upload", s.url))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), format!("{SIZE} {want} length"));
    let r = s
        .http
        .post(format!("{}/api/upload", s.url))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(body)))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), format!("{SIZE} {want} chunked"));
}

/// Reads what the gateway sends on `c` until it closes the connection (or
/// fails it); a response never ended fails the test after a minute
/// instead of hanging it.
fn read_until_closed(c: &mut std::net::TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the gateway neither ended nor closed the response: {:?}",
                    String::from_utf8_lossy(&got)
                )
            }
            // A reset after what was sent: that is the end too.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The number a counter without labels has in the gateway's metrics.
fn counter(s: &Server, name: &str) -> u64 {
    let text = s.get("/_skewless/metrics").send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn a_back_end_silent_mid_body_is_cut_off_and_a_steady_trickle_is_not() {
    // Connections the back end keeps open without a word more.
    let held = std::sync::Mutex::new(Vec::new());
    let raw = RawBackend::start(move |req, out| {
        let hold = |out: &std::net::TcpStream| held.lock().unwrap().push(out.try_clone().unwrap());
        match req.line.as_str() {
            "GET /api/stall-length" => {
                let _ =
                    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nthe first part");
                hold(out);
                false
            }
            "GET /api/stall-chunked" => {
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\ne\r\nthe first part\r\n",
                );
                hold(out);
                false
            }
            // 30 bytes, one every 50 ms: 1.5 s or more in all, longer
            // than the read timeout, but never silent for long.
            "GET /api/trickle-length" | "GET /api/trickle-chunked" => {
                let chunked = req.line.ends_with("chunked");
                let head: &[u8] = if chunked {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n"
                };
                if out.write_all(head).is_err() {
                    return false;
                }
                for i in 0..30u8 {
                    std::thread::sleep(Duration::from_millis(50));
                    let byte = b'a' + i % 26;
                    let piece = if chunked {
                        format!("1\r\n{}\r\n", byte as char).into_bytes()
                    } else {
                        vec![byte]
                    };
                    if out.write_all(&piece).is_err() {
                        return false;
                    }
                }
                !chunked || out.write_all(b"0\r\n\r\n").is_ok()
            }
            _ => out
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_ok(),
        }
    });
    let s = Server::start_with(tempfile::tempdir().unwrap(), &["--read-timeout-secs", "1"]);
    s.deploy_with(&example("v1"), "v1", &["--backend", &raw.url, "--promote"]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let get = |path: &str| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        read_until_closed(&mut c)
    };

    // Content-Length: the connection closes short of the promised 100 bytes.
    let answer = get("/api/stall-length");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-length: 100"),
        "{answer:?}"
    );
    assert_eq!(body, "the first part");
    // Every request after it goes over another connection.
    assert_eq!(s.get("/api/ok").send().unwrap().text().unwrap(), "ok");
    assert_ne!(
        raw.conn_of("GET /api/ok"),
        raw.conn_of("GET /api/stall-length")
    );

    // Chunked: the connection closes without the last chunk.
    let answer = get("/api/stall-chunked");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{answer:?}"
    );
    assert!(body.contains("the first part"), "{answer:?}");
    assert!(!body.ends_with("0\r\n\r\n"), "{answer:?}");
    assert_eq!(s.get("/api/ok").send().unwrap().text().unwrap(), "ok");
    assert_ne!(
        raw.conn_of("GET /api/ok"),
        raw.conn_of("GET /api/stall-chunked")
    );
    // A client taking the body through a library sees it fail.
    assert!(s
        .get("/api/stall-length")
        .send()
        .and_then(|r| r.bytes())
        .is_err());
    assert_eq!(counter(&s, "skewless_backend_body_timeouts_total"), 3);

    // Slow but steady: whole, with either framing.
    let want: String = (0..30u8).map(|i| (b'a' + i % 26) as char).collect();
    for path in ["/api/trickle-length", "/api/trickle-chunked"] {
        let r = s.get(path).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().unwrap(), want, "{path}");
    }
    assert_eq!(counter(&s, "skewless_backend_body_timeouts_total"), 3);
}

#[test]
fn an_early_answer_to_an_upload_is_passed_on_at_once() {
    let held = std::sync::Mutex::new(Vec::new());
    let raw = RawBackend::start(move |req, out| {
        if req.header("x-answer-early").is_some() {
            // The body stays unread; the connection open.
            let reply = "upload refused before reading it";
            let _ = write!(
                out,
                "HTTP/1.1 413 Payload Too Large\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            );
            held.lock().unwrap().push(out.try_clone().unwrap());
            return false;
        }
        let reply = format!("{} {}", req.body.len(), fnv(&req.body));
        write!(
            out,
            "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .is_ok()
    });
    // A read timeout far longer than the test: waiting for it would fail
    // with a 504, not pass.
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--read-timeout-secs", "300"],
    );
    s.deploy_with(&example("v1"), "v1", &["--backend", &raw.url, "--promote"]);
    const SIZE: usize = 16 * 1024 * 1024;
    let addr = s.url.trim_start_matches("http://").to_owned();

    // 16 MiB the back end never reads, more than the sockets between
    // hold: the 413 comes through while the client is still sending.
    for framing in ["Content-Length: 16777216", "Transfer-Encoding: chunked"] {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "POST /api/upload HTTP/1.1\r\nHost: {addr}\r\n{framing}\r\nx-answer-early: 1\r\n\r\n"
        )
        .unwrap();
        let mut sending = c.try_clone().unwrap();
        let chunked = framing.starts_with("Transfer");
        let sender = std::thread::spawn(move || {
            let piece = vec![b'x'; 64 * 1024];
            for _ in 0..SIZE / piece.len() {
                let sent = if chunked {
                    write!(sending, "10000\r\n")
                        .and_then(|()| sending.write_all(&piece))
                        .and_then(|()| sending.write_all(b"\r\n"))
                } else {
                    sending.write_all(&piece)
                };
                // The gateway closed the connection after its answer.
                if sent.is_err() {
                    return;
                }
            }
            let _ = sending.write_all(if chunked { b"0\r\n\r\n" } else { b"" });
        });
        let answer = read_until_closed(&mut c);
        assert!(answer.starts_with("HTTP/1.1 413"), "{framing}: {answer:?}");
        assert!(
            answer.ends_with("\r\n\r\nupload refused before reading it"),
            "{framing}: {answer:?}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("skewless-served-by: v1"),
            "{answer:?}"
        );
        sender.join().unwrap();
        // The gateway is fine, and does not use that connection again.
        assert_eq!(s.get("/api/ok").send().unwrap().status(), 201);
        assert_ne!(raw.conn_of("GET /api/ok"), raw.conn_of("POST /api/upload"));
    }

    // An interim 100 Continue while the body goes out is not the answer:
    // the whole body reaches the back end, and its final answer the client.
    let body: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 253) as u8).collect();
    let want = format!("{SIZE} {}", fnv(&body));
    let r = s
        .http
        .post(format!("{}/api/interim", s.url))
        .header("x-interim", "1")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().unwrap(), want);
}

#[test]
fn uploads_may_take_longer_than_the_read_timeout_but_not_stall() {
    let held = std::sync::Mutex::new(Vec::new());
    let raw = RawBackend::start(move |req, out| {
        if req.header("x-answer-early").is_some() {
            // Takes none of the body and never answers.
            held.lock().unwrap().push(out.try_clone().unwrap());
            return false;
        }
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            req.body.len()
        )
        .and_then(|()| out.write_all(&req.body))
        .is_ok()
    });
    let s = Server::start_with(tempfile::tempdir().unwrap(), &["--read-timeout-secs", "1"]);
    s.deploy_with(&example("v1"), "v1", &["--backend", &raw.url, "--promote"]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let want: String = (0..30u8).map(|i| (b'a' + i % 26) as char).collect();

    // 30 bytes, one every 50 ms: 1.5 s or more in all, longer than the
    // read timeout, with a length and chunked.
    for chunked in [false, true] {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        let framing = match chunked {
            true => "Transfer-Encoding: chunked",
            false => "Content-Length: 30",
        };
        write!(
            c,
            "POST /api/slow-upload HTTP/1.1\r\nHost: {addr}\r\n{framing}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        for byte in want.bytes() {
            std::thread::sleep(Duration::from_millis(50));
            match chunked {
                true => write!(c, "1\r\n{}\r\n", byte as char).unwrap(),
                false => c.write_all(&[byte]).unwrap(),
            }
        }
        if chunked {
            c.write_all(b"0\r\n\r\n").unwrap();
        }
        let answer = read_until_closed(&mut c);
        assert!(answer.starts_with("HTTP/1.1 200"), "{framing}: {answer:?}");
        assert!(answer.ends_with(&format!("\r\n\r\n{want}")), "{answer:?}");
    }

    // A client that stops sending its body: 408.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST /api/stopped HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\nonly this"
    )
    .unwrap();
    let answer = read_until_closed(&mut c);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        answer.contains("the request body stopped coming for 1s"),
        "{answer:?}"
    );

    // A back end that takes none of a large body and never answers: 504.
    const SIZE: usize = 16 * 1024 * 1024;
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST /api/ignored HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {SIZE}\r\nx-answer-early: 1\r\n\r\n"
    )
    .unwrap();
    let mut sending = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..SIZE / piece.len() {
            if sending.write_all(&piece).is_err() {
                return;
            }
        }
    });
    let answer = read_until_closed(&mut c);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer:?}");
    assert!(answer.contains("did not answer within 1s"), "{answer:?}");
    sender.join().unwrap();

    // The gateway is fine after all of it.
    let r = s
        .http
        .post(format!("{}/api/ok", s.url))
        .body("fine")
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "fine");
}
