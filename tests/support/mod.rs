//! Start/stop the real `skewless` binary and talk to it over HTTP: the
//! boilerplate every end-to-end test shares.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-admin-token";

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_skewless")
}

/// The repository's example app.
pub fn example(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(format!("app-{version}"))
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A running `skewless serve` on a free port with its own data directory.
pub struct Server {
    pub data: tempfile::TempDir,
    pub url: String,
    child: Option<Child>,
    /// The `serve` flags and environment it was started with.
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub http: reqwest::blocking::Client,
}

impl Server {
    pub fn start() -> Server {
        let data = tempfile::tempdir().expect("tempdir");
        Self::start_in(data)
    }

    pub fn start_in(data: tempfile::TempDir) -> Server {
        Self::start_with(data, &[])
    }

    /// Starts with extra `serve` flags.
    pub fn start_with(data: tempfile::TempDir, extra: &[&str]) -> Server {
        Self::start_with_env(data, extra, &[])
    }

    /// Starts with extra `serve` flags and environment variables.
    pub fn start_with_env(data: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args = vec!["--admin-token", TOKEN];
        args.extend_from_slice(extra);
        let (child, url) = spawn_env(data.path(), &args, env);
        Server {
            data,
            url,
            child: Some(child),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            http: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill -9 and start again on the same data directory (a new port).
    pub fn crash_and_restart(&mut self) {
        self.kill9();
        let (child, url) = spawn(self.data.path(), &["--admin-token", TOKEN]);
        self.child = Some(child);
        self.url = url;
    }

    /// Kill -9 and start again on the same data directory with the flags
    /// and environment it was started with (a new port).
    pub fn kill_and_restart(&mut self) {
        self.kill9();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (child, url) = spawn_env(self.data.path(), &args, &env);
        self.child = Some(child);
        self.url = url;
    }

    /// Kill -9 and start again on the same data directory (a new port)
    /// with these `serve` flags.
    pub fn crash_and_restart_with(&mut self, extra: &[&str]) {
        self.kill9();
        let mut args = vec!["--admin-token", TOKEN];
        args.extend_from_slice(extra);
        let (child, url) = spawn(self.data.path(), &args);
        self.child = Some(child);
        self.url = url;
    }

    /// SIGTERM, and wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().expect("wait")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Runs a CLI command against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("SKEWLESS_SERVER", &self.url)
            .env("SKEWLESS_TOKEN", TOKEN)
            .env_remove("SKEWLESS_DATA")
            .output()
            .expect("run cli")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "skewless {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a CLI command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "skewless {args:?} should have failed"
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "error must be one line: {err}"
        );
        assert!(err.starts_with("error: "), "{err}");
        err
    }

    pub fn deploy(&self, dir: &Path, id: &str, promote: bool) {
        self.deploy_with(dir, id, if promote { &["--promote"] } else { &[] });
    }

    /// Deploys `dir` as release `id` with more `deploy` flags (`--backend
    /// URL`, `--promote`, …).
    pub fn deploy_with(&self, dir: &Path, id: &str, flags: &[&str]) {
        let dir = dir.to_str().expect("utf-8 path");
        let mut args = vec!["deploy", dir, "--release", id];
        args.extend_from_slice(flags);
        let out = self.ok(&args);
        assert_eq!(out.trim(), id);
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, format!("{}/_skewless/api/v1{path}", self.url))
            .bearer_auth(TOKEN)
    }

    pub fn current(&self) -> Option<String> {
        let v: serde_json::Value = self
            .get("/_skewless/version")
            .send()
            .expect("version")
            .json()
            .expect("json");
        v["current"].as_str().map(str::to_owned)
    }

    /// Opens an event stream and returns a reader over its raw lines.
    pub fn events(&self, release: &str) -> EventStream {
        let addr = self.url.trim_start_matches("http://").to_owned();
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "GET /_skewless/events?release={release} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("write");
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.contains(" 200 "), "{status}");
        // Skip headers.
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
        }
        EventStream { reader }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(data: &Path, extra: &[&str]) -> (Child, String) {
    spawn_env(data, extra, &[])
}

fn spawn_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let listen: &[&str] = if extra.contains(&"--listen") {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let mut child = Command::new(bin())
        .arg("serve")
        .args(listen)
        .arg("--data")
        .arg(data)
        .args(extra)
        .env("SKEWLESS_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn skewless serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next()
        .expect("server printed nothing")
        .expect("read stdout");
    let url = line
        .strip_prefix("skewless listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// Raw server-sent events, chunked transfer encoding included.
pub struct EventStream {
    reader: BufReader<TcpStream>,
}

impl EventStream {
    /// The next event's (name, data), skipping comments and retry lines.
    pub fn next_event(&mut self) -> (String, String) {
        let mut name = String::from("message");
        let mut data = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("event stream read");
            assert!(n > 0, "event stream closed");
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                return (name, data);
            }
            // Chunk-size lines, comments and retry lines fall through.
        }
    }

    pub fn into_inner(self) -> TcpStream {
        self.reader.into_inner()
    }
}

/// Sends a raw request (for paths a URL library would normalise) and returns
/// the status code and the body.
pub fn raw_get(url: &str, path: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Writes a generated app: index.html plus `n` files of `size` bytes of
/// incompressible data, seeded so each file's content is reproducible.
/// Which of `apps` (each with its own `assets/f1.bin`) a release that
/// became visible without an acknowledgement was deployed from; `what`
/// names the moment for the failure message: a release that matches none
/// is visible but incomplete.
pub fn app_of_release(s: &Server, id: &str, apps: &[tempfile::TempDir], what: &str) -> usize {
    let probe = s
        .get(&format!("/_r/{id}/assets/f1.bin"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    apps.iter()
        .position(|a| probe == std::fs::read(a.path().join("assets/f1.bin")).unwrap())
        .unwrap_or_else(|| panic!("{what}: release {id} is visible but incomplete"))
}

pub fn generate_app(dir: &Path, n: usize, size: usize, seed: u64) {
    std::fs::create_dir_all(dir.join("assets")).expect("mkdir");
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><html><head><title>gen</title><script src=\"/assets/f0.bin\"></script></head><body></body></html>",
    )
    .expect("write");
    for i in 0..n {
        write_file(&dir.join(format!("assets/f{i}.bin")), size, seed + i as u64);
    }
}

/// Writes `size` pseudo-random bytes derived from `seed`.
pub fn write_file(path: &Path, size: usize, seed: u64) {
    let mut data = vec![0u8; size];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    std::fs::write(path, data).expect("write");
}

/// The example back end binary, built on demand.
pub fn example_backend() -> PathBuf {
    let path = Path::new(bin()).with_file_name("example-backend");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "skewless-example-backend"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the example back end failed");
    }
    path
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An example back end run by the test itself (an unmanaged back end).
pub struct Backend {
    child: Child,
    pub url: String,
}

impl Backend {
    pub fn start(api: u32, name: &str) -> Backend {
        let port = free_port();
        let child = Command::new(example_backend())
            .args([
                "--port",
                &port.to_string(),
                "--api",
                &api.to_string(),
                "--name",
                name,
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn example backend");
        let url = format!("http://127.0.0.1:{port}");
        let probe = reqwest::blocking::Client::new();
        wait_for(
            "the example back end to answer",
            Duration::from_secs(20),
            || {
                probe
                    .get(format!("{url}/healthz"))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            },
        );
        Backend { child, url }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|st| !st.contains(") Z ") && !st.contains(") X "))
}

pub mod cluster;
pub mod s3;

/// Reads a response's status line and header fields (names lower-cased)
/// off a raw connection.
pub fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    (status, headers)
}
