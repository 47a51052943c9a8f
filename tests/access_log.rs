//! The access log: one JSON line per request on every way into the server
//! (shell, asset, API, system, both event-stream paths, refusals), never a
//! token or a cookie, rotation by SIGHUP, standard output, and a full disk
//! that loses lines but not the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{example, wait_for, Backend, Server, TOKEN};
use reqwest::header;
use serde_json::Value;

const AUTH_SECRET: &str = "auth-secret-4f6a1e";
const COOKIE_SECRET: &str = "cookie-secret-9b2c7d";
const QUERY_SECRET: &str = "query-secret-3e8f0a";

/// Every line of the log, each parsed (a line that is not JSON fails).
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Only whole lines: the writer may be mid-flush.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// Waits for a line matching `pred` and returns it.
fn wait_line(path: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    wait_for(what, Duration::from_secs(20), || {
        found = lines(path).into_iter().find(|l| pred(l));
        found.is_some()
    });
    found.unwrap()
}

fn raw(url: &str, request: &[u8]) -> (u16, Vec<u8>) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let code = String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, buf)
}

fn body_len(answer: &[u8]) -> u64 {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (answer.len() - at - 4) as u64
}

/// The checks every line passes: the time's shape, a client address, a
/// duration, a kind.
fn well_formed(l: &Value) {
    let time = l["time"].as_str().expect("time");
    let b = time.as_bytes();
    assert_eq!(b.len(), 24, "{time}");
    assert!(
        b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "{time}"
    );
    assert!(time.starts_with("20"), "{time}");
    assert_eq!(l["client"], "127.0.0.1", "{l}");
    assert!(l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{l}");
    assert!(l["status"].as_u64().is_some(), "{l}");
    assert!(l["bytes"].as_u64().is_some(), "{l}");
    let kind = l["kind"].as_str().unwrap();
    assert!(
        ["shell", "asset", "api", "system", "event-stream"].contains(&kind),
        "{l}"
    );
}

#[test]
fn every_way_in_writes_one_json_line_without_secrets() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let backend = Backend::start(1, "b1");
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--access-log", log.to_str().unwrap()],
    );
    s.deploy_with(
        &example("v1"),
        "v1",
        &["--backend", &backend.url, "--promote"],
    );

    // Shell: pinned by cookie, with a bearer token, a session cookie and a
    // query string that must not be written.
    let shell = s
        .get(&format!("/?token={QUERY_SECRET}"))
        .header(header::ACCEPT, "text/html")
        .header(
            header::COOKIE,
            format!("skewless_release=v1; session={COOKIE_SECRET}"),
        )
        .header(header::AUTHORIZATION, format!("Bearer {AUTH_SECRET}"))
        .send()
        .unwrap();
    assert_eq!(shell.status(), 200);
    let shell_len = shell.bytes().unwrap().len() as u64;
    // Asset by a /_r/ path, and one pinned by header.
    let asset = s.get("/_r/v1/style.css").send().unwrap();
    assert_eq!(asset.status(), 200);
    let asset_len = asset.bytes().unwrap().len() as u64;
    let pinned = s
        .get("/assets/index-4f1c9a2e.js")
        .header("skewless-release", "v1")
        .header(header::AUTHORIZATION, format!("Bearer {AUTH_SECRET}"))
        .send()
        .unwrap();
    assert_eq!(pinned.status(), 200);
    // HEAD: nothing of the body is sent.
    let head = s.http.head(format!("{}/style.css", s.url)).send().unwrap();
    assert_eq!(head.status(), 200);
    // API through the back end.
    let api = s
        .get(&format!("/api/items?key={QUERY_SECRET}"))
        .header("skewless-release", "v1")
        .header(header::COOKIE, format!("session={COOKIE_SECRET}"))
        .send()
        .unwrap();
    assert_eq!(api.status(), 200);
    let api_len = api.bytes().unwrap().len() as u64;
    // A WebSocket through the back end: logged when it is switched.
    let ws_url = format!("{}/api/ws", s.url.replace("http://", "ws://"));
    let mut ws_req =
        tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    ws_req
        .headers_mut()
        .insert("skewless-release", "v1".parse().unwrap());
    let (mut socket, resp) = tungstenite::connect(ws_req).expect("websocket");
    assert_eq!(resp.status(), 101);
    socket
        .send(tungstenite::Message::Text("hello".into()))
        .unwrap();
    assert!(socket.read().unwrap().to_text().unwrap().ends_with("hello"));
    let _ = socket.close(None);
    drop(socket);
    // System.
    let version = s.get("/_skewless/version").send().unwrap();
    assert_eq!(version.status(), 200);
    let version_len = version.bytes().unwrap().len() as u64;
    // Event stream on the lean path: one event, then the client leaves.
    let mut stream = s.events("v1");
    let (name, _) = stream.next_event();
    assert_eq!(name, "release");
    drop(stream);
    // Event stream through the general stack (HTTP/2).
    let h2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut sse = h2
        .get(format!("{}/_skewless/events?release=v1", s.url))
        .send()
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut first = [0u8; 16];
    sse.read_exact(&mut first).unwrap();
    drop(sse);
    drop(h2);
    // Refusals: a long header line (the gateway's check), a head over the
    // limit (the HTTP layer's), and a long line on the event-stream path.
    let big = format!("x-big: {}\r\n", "a".repeat(9000));
    let (code, refused) = raw(
        &s.url,
        format!(
            "GET /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {AUTH_SECRET}\r\n{big}\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(code, 431);
    let refused_len = body_len(&refused);
    let many: String = (0..40)
        .map(|i| format!("x-h{i}: {}\r\n", "b".repeat(900)))
        .collect();
    let (code, _) = raw(
        &s.url,
        format!("GET /logo.svg HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(code, 431);
    let (code, _) = raw(
        &s.url,
        format!("GET /_skewless/events?release=v1 HTTP/1.1\r\nHost: x\r\n{big}\r\n").as_bytes(),
    );
    assert_eq!(code, 431);

    let shell_line = wait_line(&log, "the shell's line", |l| l["kind"] == "shell");
    assert_eq!(shell_line["method"], "GET");
    assert_eq!(shell_line["path"], "/");
    assert_eq!(shell_line["status"], 200);
    assert_eq!(shell_line["bytes"], shell_len);
    assert_eq!(shell_line["release"], "v1");
    assert_eq!(shell_line["pin"], "v1");

    let asset_line = wait_line(&log, "the /_r/ asset's line", |l| {
        l["path"] == "/_r/v1/style.css"
    });
    assert_eq!(asset_line["kind"], "asset");
    assert_eq!(asset_line["bytes"], asset_len);
    assert_eq!(asset_line["release"], "v1");
    assert_eq!(asset_line["pin"], "v1");
    let pinned_line = wait_line(&log, "the pinned asset's line", |l| {
        l["path"] == "/assets/index-4f1c9a2e.js"
    });
    assert_eq!(pinned_line["pin"], "v1");
    assert_eq!(pinned_line["kind"], "asset");
    let head_line = wait_line(&log, "the HEAD line", |l| l["method"] == "HEAD");
    assert_eq!(head_line["path"], "/style.css");
    assert_eq!(head_line["bytes"], 0);
    assert!(head_line["pin"].is_null());

    // Found by its path: its line is written when its body ends, which
    // may come after the WebSocket's switch (lines are in the order
    // responses finish, not the order requests came).
    let api_line = wait_line(&log, "the API call's line", |l| {
        l["kind"] == "api" && l["path"] == "/api/items"
    });
    assert_eq!(api_line["status"], 200);
    assert_eq!(api_line["bytes"], api_len);
    assert_eq!(api_line["release"], "v1");
    assert_eq!(api_line["pin"], "v1");

    let ws_line = wait_line(&log, "the WebSocket's line", |l| l["status"] == 101);
    assert_eq!(ws_line["path"], "/api/ws");
    assert_eq!(ws_line["kind"], "api");
    assert_eq!(ws_line["release"], "v1");
    assert_eq!(ws_line["pin"], "v1");

    let version_line = wait_line(&log, "the version line", |l| {
        l["path"] == "/_skewless/version"
    });
    assert_eq!(version_line["kind"], "system");
    assert_eq!(version_line["bytes"], version_len);
    assert!(version_line["release"].is_null());

    let streams = |l: &Value| l["kind"] == "event-stream" && l["status"] == 200;
    wait_for("both event streams' lines", Duration::from_secs(20), || {
        lines(&log).iter().filter(|l| streams(l)).count() == 2
    });
    for l in lines(&log).iter().filter(|l| streams(l)) {
        assert_eq!(l["path"], "/_skewless/events", "{l}");
        assert_eq!(l["pin"], "v1", "{l}");
        assert!(l["bytes"].as_u64().unwrap() >= 16, "{l}");
    }

    let refusals = |status: u64| {
        lines(&log)
            .into_iter()
            .filter(|l| l["status"] == status)
            .collect::<Vec<_>>()
    };
    wait_for("three 431 lines", Duration::from_secs(20), || {
        refusals(431).len() == 3
    });
    let r431 = refusals(431);
    assert!(r431
        .iter()
        .all(|l| l["kind"] != "shell" && l["kind"] != "asset"));
    let gateway_check = r431.iter().find(|l| l["path"] == "/style.css").unwrap();
    assert_eq!(gateway_check["kind"], "system");
    assert_eq!(gateway_check["bytes"], refused_len);
    let http_layer = r431.iter().find(|l| l["path"].is_null()).unwrap();
    assert!(http_layer["method"].is_null());
    let lean = r431
        .iter()
        .find(|l| l["path"] == "/_skewless/events")
        .unwrap();
    assert_eq!(lean["kind"], "event-stream");

    // The deploy's own admin calls are logged too, and every line parses.
    let all = lines(&log);
    assert!(all.iter().any(|l| l["path"]
        .as_str()
        .unwrap_or("")
        .starts_with("/_skewless/api/v1/")));
    all.iter().for_each(well_formed);
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        AUTH_SECRET,
        COOKIE_SECRET,
        QUERY_SECRET,
        TOKEN,
        "Bearer",
        "session=",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the log");
    }
}

#[test]
fn sighup_reopens_a_log_moved_away() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let moved = logs.path().join("access.log.1");
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--access-log", log.to_str().unwrap()],
    );
    assert_eq!(
        s.get("/_skewless/version?n=0").send().unwrap().status(),
        200
    );
    wait_line(&log, "the first line", |l| {
        l["path"] == "/_skewless/version"
    });
    std::fs::rename(&log, &moved).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // Until the signal is handled, lines still go to the moved file.
    wait_for("a new log file", Duration::from_secs(20), || {
        assert_eq!(s.get("/_skewless/version").send().unwrap().status(), 200);
        !lines(&log).is_empty()
    });
    assert!(crate::support::alive(s.pid()));
    let old = lines(&moved);
    assert!(!old.is_empty());
    old.iter().chain(lines(&log).iter()).for_each(well_formed);
}

/// A server started by hand, so its standard output can be read.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn standard_output_gets_the_lines_after_the_listening_line() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(crate::support::bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", TOKEN])
            .arg("--data")
            .arg(data.path())
            .env("SKEWLESS_ACCESS_LOG", "-")
            .env("SKEWLESS_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Lines arrive through a thread, so a missing one fails at a deadline
    // instead of blocking the test.
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a line on stdout")
    };
    let first = next();
    let url = first
        .strip_prefix("skewless listening on ")
        .unwrap_or_else(|| panic!("first line {first:?}"))
        .to_owned();
    let (code, _) = raw(
        &url,
        b"GET /_skewless/version?secret=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    let line = next();
    let l: Value = serde_json::from_str(&line).unwrap();
    well_formed(&l);
    assert_eq!(l["path"], "/_skewless/version");
    assert_eq!(l["status"], 200);
}

#[test]
fn a_log_that_cannot_be_written_loses_lines_not_the_server() {
    // Every write to /dev/full fails as a full disk does.
    let s = Server::start_with(tempfile::tempdir().unwrap(), &["--access-log", "/dev/full"]);
    s.deploy(&example("v1"), "v1", true);
    for _ in 0..50 {
        assert_eq!(s.get("/style.css").send().unwrap().status(), 200);
    }
    wait_for(
        "write errors to be counted",
        Duration::from_secs(20),
        || {
            let text = s.get("/_skewless/metrics").send().unwrap().text().unwrap();
            text.lines().any(|l| {
                l.starts_with("skewless_access_log_write_errors_total ")
                    && l.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
            })
        },
    );
    assert_eq!(s.get("/").send().unwrap().status(), 200);

    // A log that cannot be opened stops the start with one line.
    let out = Command::new(crate::support::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--access-log"])
        .arg("/nonexistent-dir/access.log")
        .arg("--data")
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot open access log /nonexistent-dir/access.log"),
        "{err}"
    );
}

#[test]
fn https_and_the_redirect_listener_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let g = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, g.cert.pem()).unwrap();
    std::fs::write(&key, g.signing_key.serialize_pem()).unwrap();
    let log = dir.path().join("access.log");
    let redirect = format!("127.0.0.1:{}", crate::support::free_port());
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--http-redirect-listen",
            &redirect,
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    let https = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(g.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = https
        .get(format!("{}/_skewless/version", s.url))
        .header(header::AUTHORIZATION, format!("Bearer {AUTH_SECRET}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let (code, _) = raw(
        &format!("http://{redirect}"),
        format!("GET /somewhere?key={QUERY_SECRET} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(code, 308);

    let over_tls = wait_line(&log, "the HTTPS request's line", |l| {
        l["path"] == "/_skewless/version"
    });
    assert_eq!(over_tls["status"], 200);
    assert_eq!(over_tls["kind"], "system");
    let redirected = wait_line(&log, "the redirect's line", |l| l["path"] == "/somewhere");
    assert_eq!(redirected["status"], 308);
    assert_eq!(redirected["kind"], "system");
    lines(&log).iter().for_each(well_formed);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(AUTH_SECRET) && !text.contains(QUERY_SECRET));
}
