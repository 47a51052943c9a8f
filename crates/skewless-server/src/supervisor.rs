//! Managed back ends: skewless runs a release's back-end command on a free
//! port, waits for its health check, restarts it with backoff when it dies,
//! logs its output with the release id, and stops it (SIGTERM, then SIGKILL
//! after a grace period) when its release is retired or the server stops.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use skewless_core::ReleaseId;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::proxy::Upstream;
use crate::BackendDefaults;

/// Output lines kept per back end for `skewless releases`.
const KEPT_LINES: usize = 20;
/// A back end that stayed up this long has its restart backoff reset.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Consecutive failed health checks that take a running back end out.
const FAILS_TO_UNHEALTHY: u32 = 3;

pub use skewless_wire::{BackendStatus as Status, Health};

struct Managed {
    status: Arc<Mutex<Status>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the managed back ends of all served releases.
pub struct Supervisor {
    managed: Mutex<HashMap<ReleaseId, Managed>>,
    healthy: Arc<ArcSwap<HashMap<ReleaseId, Arc<Upstream>>>>,
    defaults: BackendDefaults,
}

/// What the supervisor needs of a release.
pub struct Wanted {
    /// The release.
    pub id: ReleaseId,
    /// Its command (`{port}` is replaced by the port).
    pub command: String,
    /// Its health-check path.
    pub health_path: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Supervisor {
    /// A supervisor with the configured defaults.
    pub fn new(defaults: BackendDefaults) -> Self {
        Supervisor {
            managed: Mutex::new(HashMap::new()),
            healthy: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            defaults,
        }
    }

    /// The upstream of a release's managed back end while it is healthy.
    /// Lock-free: read on every API request.
    pub fn upstream(&self, id: &ReleaseId) -> Option<Arc<Upstream>> {
        self.healthy.load().get(id).cloned()
    }

    /// Status of a release's managed back end.
    pub fn status(&self, id: &ReleaseId) -> Option<Status> {
        lock(&self.managed).get(id).map(|m| lock(&m.status).clone())
    }

    /// Starts back ends that should run and stops those that should not.
    pub fn sync(&self, wanted: Vec<Wanted>) {
        let mut managed = lock(&self.managed);
        let keep: std::collections::HashSet<&ReleaseId> = wanted.iter().map(|w| &w.id).collect();
        let gone: Vec<ReleaseId> = managed
            .keys()
            .filter(|id| !keep.contains(id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(m) = managed.remove(&id) {
                tracing::info!(release = %id, "stopping managed back end");
                let _ = m.stop.send(true);
            }
        }
        for w in wanted {
            if managed.contains_key(&w.id) {
                continue;
            }
            let status = Arc::new(Mutex::new(Status {
                command: w.command.clone(),
                health: Health::Starting,
                reason: None,
                port: None,
                pid: None,
                restarts: 0,
                last_exit: None,
                last_lines: VecDeque::new(),
            }));
            let (stop, stop_rx) = watch::channel(false);
            let runner = Runner {
                id: w.id.clone(),
                command: w.command,
                health_path: w.health_path,
                status: status.clone(),
                healthy: self.healthy.clone(),
                defaults: self.defaults.clone(),
                stop: stop_rx,
            };
            let task = tokio::spawn(runner.run());
            managed.insert(w.id, Managed { status, stop, task });
        }
    }

    /// Waits until a release's back end is healthy, for at most the health
    /// timeout. `Err` says why it is not.
    pub async fn wait_healthy(&self, id: &ReleaseId) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(self.defaults.health_timeout_secs);
        loop {
            let Some(st) = self.status(id) else {
                return Err("it is not running".into());
            };
            match st.health {
                Health::Healthy => return Ok(()),
                Health::Unhealthy if st.restarts > 0 || Instant::now() >= deadline => {
                    return Err(describe(&st));
                }
                Health::Stopped => return Err("it is stopped".into()),
                _ if Instant::now() >= deadline => return Err(describe(&st)),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Stops every back end and waits for them to exit.
    pub async fn stop_all(&self) {
        let all: Vec<Managed> = lock(&self.managed).drain().map(|(_, m)| m).collect();
        for m in &all {
            let _ = m.stop.send(true);
        }
        for m in all {
            let _ = m.task.await;
        }
    }
}

/// A one-line description of an unhealthy back end.
pub fn describe(st: &Status) -> String {
    let mut s = st
        .reason
        .clone()
        .unwrap_or_else(|| format!("{:?}", st.health).to_lowercase());
    if let Some(last) = st.last_lines.back() {
        s.push_str(&format!("; last output: {last}"));
    }
    s
}

struct Runner {
    id: ReleaseId,
    command: String,
    health_path: String,
    status: Arc<Mutex<Status>>,
    healthy: Arc<ArcSwap<HashMap<ReleaseId, Arc<Upstream>>>>,
    defaults: BackendDefaults,
    stop: watch::Receiver<bool>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Runner {
    fn set(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
    }

    fn publish(&self, up: Option<Upstream>) {
        self.healthy.rcu(|map| {
            let mut next = HashMap::clone(map);
            match &up {
                Some(u) => next.insert(self.id.clone(), Arc::new(u.clone())),
                None => next.remove(&self.id),
            };
            next
        });
    }

    async fn run(mut self) {
        let mut backoff = Duration::from_secs(1);
        let max_backoff = Duration::from_secs(self.defaults.restart_backoff_max_secs.max(1));
        loop {
            let started = Instant::now();
            match self.run_once().await {
                Ok(Exit::Stopped) => break,
                Ok(Exit::Died(how)) => {
                    tracing::warn!(release = %self.id, exit = %how, "managed back end exited");
                    self.set(|s| {
                        s.health = Health::Unhealthy;
                        s.reason = Some(format!("exited {how}"));
                        s.last_exit = Some(how);
                        s.pid = None;
                    });
                }
                Err(e) => {
                    tracing::error!(release = %self.id, error = %e, "managed back end could not start");
                    self.set(|s| {
                        s.health = Health::Unhealthy;
                        s.reason = Some(format!("could not start: {e}"));
                    });
                }
            }
            self.publish(None);
            if started.elapsed() > STABLE_AFTER {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut self.stop) => break,
            }
            backoff = (backoff * 2).min(max_backoff);
            self.set(|s| s.restarts += 1);
        }
        self.publish(None);
        self.set(|s| {
            s.health = Health::Stopped;
            s.pid = None;
        });
    }

    async fn run_once(&self) -> std::io::Result<Exit> {
        let port = free_port()?;
        let command = self.command.replace("{port}", &port.to_string());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .env("PORT", port.to_string())
            .env("SKEWLESS_RELEASE", self.id.as_str())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id();
        tracing::info!(release = %self.id, port, pid, command = %command, "started managed back end");
        self.set(|s| {
            s.health = Health::Starting;
            s.reason = None;
            s.port = Some(port);
            s.pid = pid;
        });
        let mut log_tasks = Vec::new();
        if let Some(out) = child.stdout.take() {
            log_tasks.push(tokio::spawn(capture(
                self.id.clone(),
                "stdout",
                out,
                self.status.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            log_tasks.push(tokio::spawn(capture(
                self.id.clone(),
                "stderr",
                err,
                self.status.clone(),
            )));
        }
        let upstream = Upstream::local(port);
        let checker: Client<hyper_util::client::legacy::connect::HttpConnector, Body> =
            Client::builder(TokioExecutor::new()).build_http();
        let health_uri: axum::http::Uri = format!("http://127.0.0.1:{port}{}", self.health_path)
            .parse()
            .map_err(std::io::Error::other)?;
        let deadline = Instant::now() + Duration::from_secs(self.defaults.health_timeout_secs);
        let mut healthy = false;
        let mut fails = 0u32;
        let mut stop = self.stop.clone();
        let exit = loop {
            let pause = if healthy {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(100)
            };
            tokio::select! {
                status = child.wait() => {
                    let how = match status {
                        Ok(s) => match s.code() {
                            Some(code) => format!("with status {code}"),
                            None => format!("by signal ({s})"),
                        },
                        Err(e) => format!("(wait failed: {e})"),
                    };
                    break Exit::Died(how);
                }
                _ = stopped(&mut stop) => {
                    self.publish(None);
                    terminate(&mut child, Duration::from_secs(self.defaults.stop_grace_secs)).await;
                    break Exit::Stopped;
                }
                _ = tokio::time::sleep(pause) => {
                    let ok = check(&checker, &health_uri).await;
                    if ok {
                        fails = 0;
                        if !healthy {
                            healthy = true;
                            tracing::info!(release = %self.id, port, "managed back end is healthy");
                            self.set(|s| { s.health = Health::Healthy; s.reason = None; });
                            self.publish(Some(upstream.clone()));
                        }
                    } else if healthy {
                        fails += 1;
                        if fails >= FAILS_TO_UNHEALTHY {
                            healthy = false;
                            tracing::warn!(release = %self.id, "managed back end fails its health check");
                            self.set(|s| {
                                s.health = Health::Unhealthy;
                                s.reason = Some(format!("fails its health check GET {}", self.health_path));
                            });
                            self.publish(None);
                        }
                    } else if Instant::now() >= deadline {
                        let reason = format!(
                            "no healthy answer from GET {} within {}s",
                            self.health_path, self.defaults.health_timeout_secs
                        );
                        self.set(|s| { s.health = Health::Unhealthy; s.reason = Some(reason); });
                    }
                }
            }
        };
        for t in log_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        Ok(exit)
    }
}

/// Resolves once the stop flag is set.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

enum Exit {
    Stopped,
    Died(String),
}

async fn check(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
    uri: &axum::http::Uri,
) -> bool {
    let req = match axum::http::Request::get(uri.clone()).body(Body::empty()) {
        Ok(r) => r,
        Err(_) => return false,
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request(req)).await,
        Ok(Ok(resp)) if resp.status().is_success()
    )
}

/// SIGTERM to the back end's process group, SIGKILL after `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Some(pid) = child.id() else { return };
    let pgid = Pid::from_raw(pid as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Children the back end left behind in its group.
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// Logs every output line with the release id and keeps the last few.
async fn capture(
    id: ReleaseId,
    stream: &'static str,
    out: impl tokio::io::AsyncRead + Unpin,
    status: Arc<Mutex<Status>>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(release = %id, stream, "{line}");
        let mut st = lock(&status);
        if st.last_lines.len() == KEPT_LINES {
            st.last_lines.pop_front();
        }
        st.last_lines.push_back(line);
    }
}
