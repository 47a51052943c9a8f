//! A moto S3 server for tests, from the virtualenv that
//! `scripts/install-test-deps.sh` makes (`target/moto-venv`, or the
//! `moto_server` that `SKEWLESS_MOTO_SERVER` names). Each server runs
//! under a small shell that stops it when its standard input closes, so it
//! goes away with the test process however that ends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server on a free loopback port.
pub struct Moto {
    wrapper: Child,
    /// moto's own process id (for SIGSTOP and SIGCONT).
    pub pid: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The moto_server to run.
pub fn moto_server() -> PathBuf {
    if let Ok(p) = std::env::var("SKEWLESS_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = root
        .ancestors()
        .find(|p| p.join("scripts/install-test-deps.sh").is_file())
        .map(PathBuf::from)
        .unwrap_or(root);
    let p = root.join("target/moto-venv/bin/moto_server");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-test-deps.sh (or make test) first",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One HTTP/1.0 request; the status code and body, or `None` if there is
/// no answer.
fn request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

impl Moto {
    /// Starts a server and waits until it answers.
    pub fn start() -> Moto {
        let port = free_port();
        let script = r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 &
pid=$!
echo "$pid"
read -r _
kill -CONT "$pid" 2>/dev/null
kill "$pid" 2>/dev/null
wait "$pid""#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(moto_server())
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("moto's pid");
        let pid: u32 = line.trim().parse().expect("moto's pid");
        let moto = Moto { wrapper, pid, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while request(port, "GET", "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// Its URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (an HTTP `PUT /<name>`).
    pub fn create_bucket(&self, name: &str) {
        let status = request(self.port, "PUT", &format!("/{name}")).map(|r| r.0);
        assert_eq!(status, Some(200), "creating bucket {name}");
    }

    /// How many objects the bucket holds under `prefix` (counted up to
    /// 1000, one listing page).
    pub fn count(&self, bucket: &str, prefix: &str) -> usize {
        let (status, body) = request(
            self.port,
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
        )
        .expect("moto answers a listing");
        assert_eq!(status, 200, "listing {bucket}: {body}");
        body.matches("<Key>").count()
    }

    /// Stores an object directly, as something other than skewless would
    /// (moto checks that a request carries credentials, not its signature;
    /// it refuses anonymous overwrites).
    pub fn put_object(&self, bucket: &str, key: &str, data: &[u8]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "PUT /{bucket}/{key} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n",
            self.port,
            data.len()
        )
        .expect("write");
        s.write_all(data).expect("write");
        let mut head = String::new();
        BufReader::new(&mut s).read_line(&mut head).expect("read");
        assert!(head.contains(" 200"), "put {key}: {head}");
    }

    /// Freezes the server (SIGSTOP): it keeps its memory and its socket,
    /// and answers nothing.
    pub fn freeze(&self) {
        signal("-STOP", self.pid);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        signal("-CONT", self.pid);
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing its input makes the wrapper stop moto.
        drop(self.wrapper.stdin.take());
        let _ = self.wrapper.wait();
    }
}
