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
        format!("for=127.0.0.1;host={host};proto=http")
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
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    std::fs::write(&file, "api_prefix = [\"/rpc/\"]\n").unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api_prefix") && err.trim().lines().count() == 1,
        "{err}"
    );

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
    let bad = std::process::Command::new(crate::support::bin())
        .args(["serve", "--print-config", "--default-upstream", "ftp://x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
