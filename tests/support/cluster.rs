//! Cluster fixtures: a fresh PostgreSQL database per test (on the shared
//! server, or on a private one the test may stop), gateway nodes over it
//! with a shared blob directory, and HAProxy in front of them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for, Server};

/// The PostgreSQL server fresh databases are created on.
pub fn shared_server() -> String {
    std::env::var("SKEWLESS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn psql(server: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!("{server}/postgres"))
        .args(["-c", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A database of its own, dropped when this is dropped (even on failure).
pub struct Database {
    pub server: String,
    pub name: String,
}

impl Database {
    pub fn create_on(server: &str) -> Database {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "skewless_c_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        psql(server, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("PostgreSQL at {server} is needed for this test: {e}"));
        Database {
            server: server.to_owned(),
            name,
        }
    }

    pub fn create() -> Database {
        Self::create_on(&shared_server())
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Runs SQL in this database.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .args(["-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("{name} not found under /usr/lib/postgresql (install postgresql)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL server binary; as root, as the `postgres` user.
fn pg_command(bin: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(bin));
        c
    } else {
        Command::new(pg_bin(bin))
    }
}

/// A PostgreSQL server of the test's own on a free port, so it may stop it.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        Self::init(false).0
    }

    /// The same, accepting only TLS connections over the network, with a
    /// self-signed certificate for 127.0.0.1 and localhost made for it;
    /// also returns the path of that certificate (to trust).
    pub fn start_tls() -> (PrivatePostgres, PathBuf) {
        let (pg, ca) = Self::init(true);
        (pg, ca.expect("certificate"))
    }

    fn init(tls: bool) -> (PrivatePostgres, Option<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the private database directory failed");
        }
        let out = pg_command("initdb")
            .arg("-D")
            .arg(dir.path().join("db"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ca = tls.then(|| {
            let db = dir.path().join("db");
            let g = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("certificate");
            let cert = g.cert.pem();
            std::fs::write(db.join("server.crt"), &cert).expect("server.crt");
            std::fs::write(db.join("server.key"), g.signing_key.serialize_pem()).expect("server.key");
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, &cert).expect("ca.pem");
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(db.join("postgresql.conf"))
                .expect("postgresql.conf");
            std::io::Write::write_all(
                &mut conf,
                b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            )
            .expect("postgresql.conf");
            // Over the network, TLS or nothing.
            std::fs::write(
                db.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            )
            .expect("pg_hba.conf");
            if is_root() {
                let ok = Command::new("chown")
                    .args(["postgres:postgres"])
                    .args([db.join("server.crt"), db.join("server.key"), db.join("pg_hba.conf")])
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "chown of the certificate failed");
            }
            let ok = Command::new("chmod")
                .arg("600")
                .arg(db.join("server.key"))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chmod of the key failed");
            ca
        });
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
        };
        pg.up();
        (pg, ca)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    pub fn server(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast: open connections are cut).
    pub fn down(&self) {
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Starts a node over `db` sharing `blobs`, with quick cluster timings.
pub fn node(db: &str, blobs: &Path, id: &str, extra: &[&str]) -> Server {
    node_env(db, blobs, id, extra, &[])
}

/// The same, with environment variables for the node (and its back ends).
pub fn node_env(db: &str, blobs: &Path, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let args = node_args(db, blobs, id, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with_env(tempfile::tempdir().expect("tempdir"), &args, env)
}

/// The `serve` flags of a node over `db` sharing `blobs`.
pub fn node_args(db: &str, blobs: &Path, id: &str, extra: &[&str]) -> Vec<String> {
    let blobs = blobs.to_str().expect("utf-8 path");
    let mut args = vec![
        "--state",
        db,
        "--blobs",
        blobs,
        "--node-id",
        id,
        "--heartbeat-ms",
        "300",
    ];
    args.extend_from_slice(extra);
    args.into_iter().map(str::to_owned).collect()
}

/// The nodes as `skewless nodes --json` lists them.
pub fn nodes(via: &Server) -> Vec<serde_json::Value> {
    let out = via.ok(&["nodes", "--json"]);
    serde_json::from_str(&out).expect("nodes json")
}

/// Which node holds the lease `job`, if one does.
pub fn holder(via: &Server, job: &str) -> Option<String> {
    nodes(via)
        .into_iter()
        .filter(|n| n["live"] == true)
        .find(|n| {
            n["leases"]
                .as_array()
                .is_some_and(|l| l.iter().any(|j| j == job))
        })
        .map(|n| n["id"].as_str().unwrap_or_default().to_owned())
}

/// HAProxy in front of the nodes, health-checking each.
pub struct Haproxy {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(nodes: &[&Server]) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cfg = format!(
            "global\n  maxconn 1000\n\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  timeout tunnel 1h\n\n\
             frontend web\n  bind 127.0.0.1:{port}\n  default_backend skewless\n\n\
             backend skewless\n  balance roundrobin\n  option httpchk GET /_skewless/version\n  http-check expect status 200\n"
        );
        for (i, n) in nodes.iter().enumerate() {
            let addr = n.url.trim_start_matches("http://");
            cfg.push_str(&format!(
                "  server node{} {addr} check inter 500ms fall 2 rise 1\n",
                i + 1
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (install Debian's haproxy: scripts/install-test-deps.sh)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::new();
        wait_for("HAProxy to answer", Duration::from_secs(20), || {
            http.get(format!("{url}/_skewless/version"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        Haproxy {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
