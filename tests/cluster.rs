//! Several `skewless serve` nodes over one PostgreSQL database and one blob
//! directory, behind HAProxy: promotion reaches every node, pins hold on
//! every node, presence sums over nodes, leases fail over, the nodes ride
//! out a lost listener and a database restart, and a node restarted while
//! the database is down serves the routing state it saved last.

use std::time::{Duration, Instant};

use crate::support::cluster::{
    holder, node, node_args, node_env, nodes, Database, Haproxy, PrivatePostgres,
};
use crate::support::{bin, example, example_backend, wait_for, Backend, Server, TOKEN};

fn status(s: &Server) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["status", "--json"])).expect("status json")
}

fn releases(s: &Server) -> Vec<serde_json::Value> {
    serde_json::from_str(&s.ok(&["releases", "--json"])).expect("releases json")
}

fn state_of(s: &Server, id: &str) -> String {
    releases(s)
        .into_iter()
        .find(|r| r["id"] == id)
        .map(|r| r["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// The release a request pinned to `pin` (or unpinned) is served by.
/// The paths of a release's files other than its shell, from its manifest.
fn asset_paths(s: &Server, release: &str) -> Vec<String> {
    let detail: serde_json::Value = s
        .admin(reqwest::Method::GET, &format!("/releases/{release}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    detail["manifest"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| !p.ends_with("index.html"))
        .cloned()
        .collect()
}

fn served_by(url: &str, path: &str, pin: Option<&str>) -> (u16, String) {
    let http = reqwest::blocking::Client::new();
    let mut req = http.get(format!("{url}{path}"));
    if let Some(pin) = pin {
        req = req.header("cookie", format!("skewless_release={pin}"));
    }
    let r = req.send().expect("request");
    let by = r
        .headers()
        .get("skewless-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (r.status().as_u16(), by)
}

#[test]
fn three_nodes_behind_haproxy_serve_one_promotion_and_every_pin() {
    let db = Database::create();
    let blobs = tempfile::tempdir().unwrap();
    let url = db.url();
    let n1 = node(&url, blobs.path(), "n1", &[]);
    let n2 = node(&url, blobs.path(), "n2", &[]);
    let n3 = node(&url, blobs.path(), "n3", &[]);
    let lb = Haproxy::start(&[&n1, &n2, &n3]);
    let b1 = Backend::start(1, "b1");
    let b2 = Backend::start(2, "b2");

    // Deploy through node 1, promote through node 2: node 3 serves it.
    n1.deploy_with(&example("v1"), "v1", &["--backend", &b1.url]);
    n2.ok(&["promote", "v1"]);
    wait_for("node 3 to serve v1", Duration::from_secs(5), || {
        n3.current().as_deref() == Some("v1")
    });
    n1.deploy_with(&example("v2"), "v2", &["--backend", &b2.url]);

    // Event streams on all three nodes receive the promotion of v2.
    let mut streams: Vec<_> = [&n1, &n2, &n3].iter().map(|n| n.events("v1")).collect();
    for s in &mut streams {
        let (name, data) = s.next_event();
        assert_eq!(name, "release");
        assert!(data.contains("\"current\":\"v1\""), "{data}");
    }
    // Presence: the three streams sum in the status of any node.
    wait_for(
        "status to count a stream on each node",
        Duration::from_secs(10),
        || status(&n1)["clients"]["v1"]["streams"] == 3,
    );
    wait_for(
        "every node to count three streams",
        Duration::from_secs(10),
        || status(&n3)["event_streams"] == 3 && status(&n2)["clients"]["v1"]["streams"] == 3,
    );

    // Each stream is read on its own thread, so arrival times are those of
    // the events, not of the order they are read in.
    let before = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let (name, data) = s.next_event();
                (before.elapsed(), name, data)
            })
        })
        .collect();
    n2.ok(&["promote", "v2"]);
    let promoted = before.elapsed();
    let mut arrivals = Vec::new();
    for r in readers {
        let (at, name, data) = r.join().unwrap();
        assert_eq!(name, "release", "{data}");
        assert!(data.contains("\"current\":\"v2\""), "{data}");
        arrivals.push(at);
    }
    arrivals.sort();
    eprintln!(
        "promotion acknowledged after {promoted:?}; streams on three nodes notified at {arrivals:?} (spread first to last {:?})",
        arrivals[2] - arrivals[0]
    );
    for n in [&n1, &n2, &n3] {
        assert_eq!(n.current().as_deref(), Some("v2"));
    }

    // A client pinned to v1 gets v1's assets and back end from every node
    // and through the load balancer; a new one gets v2.
    let v1_files = asset_paths(&n3, "v1");
    assert!(!v1_files.is_empty());
    for base in [&n1.url, &n2.url, &n3.url, &lb.url] {
        assert_eq!(served_by(base, "/", None), (200, "v2".into()), "{base}");
        for path in &v1_files {
            let (code, by) = served_by(base, path, Some("v1"));
            assert_eq!((code, by.as_str()), (200, "v1"), "{base}/{path}");
        }
        let api: serde_json::Value = reqwest::blocking::Client::new()
            .get(format!("{base}/api/items"))
            .header("cookie", "skewless_release=v1")
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            api.is_array(),
            "v1's back end (api 1) answers a list: {api}"
        );
        let api: serde_json::Value = reqwest::blocking::get(format!("{base}/api/items"))
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(api["backend"], "b2", "{api}");
    }

    // `skewless nodes` lists all three with their state version.
    // Deploy, promote, deploy, promote: every node reports state version 4.
    wait_for(
        "every node to report version 4",
        Duration::from_secs(10),
        || {
            let listed = nodes(&n1);
            listed.len() == 3
                && listed.iter().all(|n| {
                    n["cluster_version"] == 4
                        && n["live"] == true
                        && n["version"] == env!("CARGO_PKG_VERSION")
                })
        },
    );
    let text = n2.ok(&["nodes"]);
    assert!(text.contains("n1") && text.contains("n3"), "{text}");
}

#[test]
fn leases_fail_over_and_a_release_with_clients_on_one_node_is_kept() {
    let db = Database::create();
    let blobs = tempfile::tempdir().unwrap();
    let url = db.url();
    let fast = [
        "--lease-ttl-secs",
        "3",
        "--reaper-interval-ms",
        "200",
        "--keep-last",
        "0",
        "--min-drain-secs",
        "0",
        "--idle-secs",
        "1",
        "--presence-window-secs",
        "1",
    ];
    let mut n1 = node(&url, blobs.path(), "n1", &fast);
    wait_for(
        "node 1 to take the reaper lease",
        Duration::from_secs(10),
        || holder(&n1, "reaper").as_deref() == Some("n1"),
    );
    let n2 = node(&url, blobs.path(), "n2", &fast);
    let n3 = node(&url, blobs.path(), "n3", &fast);
    for r in ["a", "b", "c"] {
        n2.deploy(&example("v1"), r, false);
    }
    n2.ok(&["promote", "a"]);
    wait_for("node 3 to serve a", Duration::from_secs(5), || {
        n3.current().as_deref() == Some("a")
    });
    // The only client of a is on node 3.
    let mut stream = n3.events("a");
    wait_for(
        "node 1 to see the client on node 3",
        Duration::from_secs(10),
        || status(&n1)["clients"]["a"]["streams"] == 1,
    );
    n1.ok(&["promote", "b"]);
    n1.ok(&["promote", "c"]);
    let (name, _) = stream.next_event();
    assert_eq!(name, "release");
    wait_for(
        "the reaper on node 1 to retire b",
        Duration::from_secs(15),
        || state_of(&n2, "b") == "retired",
    );
    assert_eq!(state_of(&n2, "a"), "draining", "a has a client on node 3");

    // SIGKILL of the lease holder: another node takes over within the
    // lease time, and the reaper keeps working there.
    n1.kill9();
    let killed = Instant::now();
    wait_for(
        "another node to take the reaper lease",
        Duration::from_secs(15),
        || holder(&n2, "reaper").is_some_and(|h| h != "n1"),
    );
    eprintln!(
        "reaper lease taken over {:?} after SIGKILL",
        killed.elapsed()
    );
    wait_for(
        "node 1's presence to expire",
        Duration::from_secs(10),
        || {
            nodes(&n2)
                .iter()
                .any(|n| n["id"] == "n1" && n["live"] == false)
        },
    );
    n2.deploy(&example("v2"), "d", false);
    n2.ok(&["promote", "d"]);
    wait_for(
        "the new reaper to retire c",
        Duration::from_secs(15),
        || state_of(&n3, "c") == "retired",
    );
    assert_eq!(state_of(&n3, "a"), "draining", "a still has its client");
    drop(stream);
    wait_for(
        "a to be retired once its client left",
        Duration::from_secs(20),
        || state_of(&n3, "a") == "retired",
    );
}

#[test]
fn nodes_ride_out_a_lost_listener_and_a_database_restart() {
    let pg = PrivatePostgres::start();
    let db = Database::create_on(&pg.server());
    let blobs = tempfile::tempdir().unwrap();
    let url = db.url();
    // Polling is slowed down so that catching up must come from the
    // listener's resync after it reconnects.
    let slow_poll = ["--cluster-poll-ms", "60000"];
    let n1 = node(&url, blobs.path(), "n1", &slow_poll);
    let n2 = node(&url, blobs.path(), "n2", &slow_poll);
    n1.deploy(&example("v1"), "v1", true);
    n1.deploy(&example("v2"), "v2", false);
    wait_for("node 2 to serve v1", Duration::from_secs(5), || {
        n2.current().as_deref() == Some("v1")
    });

    // The listening connections are killed; a promotion made meanwhile
    // still reaches node 2.
    let killed = db.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    );
    assert_ne!(killed.trim(), "0", "no listener found");
    n1.ok(&["promote", "v2"]);
    wait_for(
        "node 2 to catch up after losing its listener",
        Duration::from_secs(10),
        || n2.current().as_deref() == Some("v2"),
    );

    // The database goes down: both nodes keep serving their snapshot,
    // open event streams stay open, writes are refused in one line.
    let mut stream = n2.events("v2");
    assert_eq!(stream.next_event().0, "release");
    let v1_files = asset_paths(&n1, "v1");
    pg.down();
    for n in [&n1, &n2] {
        serves_without_the_database(n, "v2", "v1", &v1_files);
    }
    let r = n2.admin(reqwest::Method::POST, "/rollback").send().unwrap();
    assert_eq!(r.status(), 503);

    // It comes back: writes work again and every node catches up.
    pg.up();
    wait_for("writes to work again", Duration::from_secs(20), || {
        n2.cli(&["promote", "v1"]).status.success()
    });
    let (name, data) = stream.next_event();
    assert_eq!(
        (name.as_str(), data.contains("\"v1\"")),
        ("release", true),
        "{data}"
    );
    wait_for(
        "node 1 to catch up after the restart",
        Duration::from_secs(10),
        || n1.current().as_deref() == Some("v1"),
    );
    // Nothing acknowledged was lost.
    let ids: Vec<_> = releases(&n1).into_iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, ["v1", "v2"]);
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&n1.ok(&["history", "--json"])).unwrap();
    let promotions = history.iter().filter(|h| h["action"] == "promote").count();
    assert_eq!(promotions, 3, "{history:?}");
}

/// A node restarted (kill -9) while the database is down serves the routing
/// state it saved last: the current page, an older release's files to its
/// tabs; writes are refused in one line; once the database is back it
/// follows it again. A node that never reached the database has nothing to
/// serve and does not start.
#[test]
fn a_node_restarted_while_the_database_is_down_serves_its_saved_state() {
    let pg = PrivatePostgres::start();
    let db = Database::create_on(&pg.server());
    let blobs = tempfile::tempdir().unwrap();
    let url = db.url();
    let mut n1 = node(&url, blobs.path(), "n1", &[]);
    n1.deploy(&example("v1"), "v1", true);
    n1.deploy(&example("v2"), "v2", true);
    let v1_files = asset_paths(&n1, "v1");
    assert!(!v1_files.is_empty());
    let saved = n1.data.path().join("last-state.json");
    let saved_current = |id: &str| {
        std::fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["pointer"]["current"] == id)
    };
    wait_for(
        "the node to save v2 as current",
        Duration::from_secs(10),
        || saved_current("v2"),
    );

    pg.down();
    n1.kill_and_restart();
    serves_without_the_database(&n1, "v2", "v1", &v1_files);
    assert_eq!(saved_state_metric(&n1), 1.0);

    // Nothing saved, nothing to serve: one line, and no start.
    refused_start(&url, blobs.path());

    pg.up();
    wait_for("writes to work again", Duration::from_secs(30), || {
        n1.cli(&["promote", "v1"]).status.success()
    });
    assert_eq!(served_by(&n1.url, "/", None), (200, "v1".into()));
    assert_eq!(n1.current().as_deref(), Some("v1"));
    assert_eq!(saved_state_metric(&n1), 0.0);
    wait_for(
        "the node to save v1 as current",
        Duration::from_secs(10),
        || saved_current("v1"),
    );
}

/// With the database down, `n` serves `current`'s page and `older`'s files
/// to its tabs, and refuses a write in one line.
fn serves_without_the_database(n: &Server, current: &str, older: &str, older_files: &[String]) {
    assert_eq!(served_by(&n.url, "/", None), (200, current.into()));
    for path in older_files {
        assert_eq!(served_by(&n.url, path, Some(older)), (200, older.into()));
    }
    let err = n.fails(&["promote", older]);
    assert!(
        err.contains("state database") && err.contains("PostgreSQL"),
        "{err}"
    );
}

/// Starts a node over `url` on a fresh data directory, which must not
/// start; returns its error, one line naming the state database.
fn refused_start(url: &str, blobs: &std::path::Path) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .arg("serve")
        .arg("--data")
        .arg(data.path())
        .args(["--listen", "127.0.0.1:0", "--admin-token", TOKEN])
        .args(node_args(url, blobs, "refused", &[]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("cannot open the state database"), "{err}");
    err
}

/// `skewless_serving_saved_state` as the node exports it.
fn saved_state_metric(s: &Server) -> f64 {
    let text = s.get("/_skewless/metrics").send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("skewless_serving_saved_state "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no skewless_serving_saved_state in:\n{text}"))
}

/// Over a database that accepts only TLS connections, a node that verifies
/// its certificate (`sslmode=verify-full`, `sslrootcert`) works, and all its
/// connections are encrypted; without TLS, or without trusting the
/// certificate, the node does not start and says why in one line.
#[test]
fn nodes_reach_a_database_that_accepts_only_tls() {
    let (pg, ca) = PrivatePostgres::start_tls();
    let db = Database::create_on(&pg.server());
    let blobs = tempfile::tempdir().unwrap();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url(),
        ca.display()
    );
    let n1 = node(&url, blobs.path(), "n1", &[]);
    n1.deploy(&example("v1"), "v1", true);
    assert_eq!(served_by(&n1.url, "/", None), (200, "v1".into()));
    let count = |encrypted: bool| {
        db.sql(&format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'skewless' AND s.ssl = {encrypted}"
        ))
        .trim()
        .parse::<u32>()
        .unwrap()
    };
    assert!(count(true) > 0, "no encrypted connection of the node");
    assert_eq!(count(false), 0, "a plain connection of the node");

    let err = refused_start(&format!("{}?sslmode=disable", db.url()), blobs.path());
    assert!(
        err.contains("no encryption") || err.contains("pg_hba"),
        "{err}"
    );
    let err = refused_start(&format!("{}?sslmode=verify-full", db.url()), blobs.path());
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn deploys_through_one_node_and_gc_through_another_never_lose_a_blob() {
    let db = Database::create();
    let blobs = tempfile::tempdir().unwrap();
    let url = db.url();
    let n1 = node(
        &url,
        blobs.path(),
        "n1",
        &["--reaper-interval-ms", "600000"],
    );
    let n2 = node(
        &url,
        blobs.path(),
        "n2",
        &["--reaper-interval-ms", "600000"],
    );
    let apps = tempfile::tempdir().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        let (server, token) = (n2.url.clone(), crate::support::TOKEN);
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = std::process::Command::new(crate::support::bin())
                    .args(["gc", "--server", &server, "--token", token])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            runs
        })
    };
    let mut acknowledged = Vec::new();
    for round in 0..12u64 {
        // Each round shares most files with the one two rounds before,
        // whose release is retired (and collected by the concurrent gc).
        let dir = apps.path().join(format!("r{round}"));
        crate::support::generate_app(&dir, 6, 2000, round % 2);
        crate::support::write_file(&dir.join("assets/own.bin"), 500, 1000 + round);
        let id = format!("r{round}");
        let out = n1.cli(&[
            "deploy",
            dir.to_str().unwrap(),
            "--release",
            &id,
            "--promote",
        ]);
        if out.status.success() {
            wait_for(
                "node 2 to serve the new release",
                Duration::from_secs(5),
                || n2.current().as_deref() == Some(id.as_str()),
            );
            acknowledged.push(id.clone());
        } else {
            // A deploy may lose a race cleanly; it must say so in one line.
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
        if round >= 2 {
            let old = format!("r{}", round - 2);
            let _ = n1.cli(&["retire", &old]);
        }
        // Every acknowledged release still served has every blob, on both nodes.
        for r in releases(&n2) {
            if !matches!(
                r["state"].as_str(),
                Some("current" | "draining" | "uploaded")
            ) {
                continue;
            }
            let id = r["id"].as_str().unwrap();
            let detail: serde_json::Value = n2
                .admin(reqwest::Method::GET, &format!("/releases/{id}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let manifest = detail["manifest"].as_object().unwrap();
            for path in manifest.keys().filter(|p| !p.ends_with("index.html")) {
                for n in [&n1, &n2] {
                    let (code, by) = served_by(&n.url, path, Some(id));
                    assert_eq!((code, by.as_str()), (200, id), "{id}/{path} on {}", n.url);
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = gc.join().unwrap();
    assert!(
        acknowledged.len() >= 10,
        "most deploys succeed: {acknowledged:?}"
    );
    eprintln!(
        "{} deploys acknowledged, {runs} collections ran alongside",
        acknowledged.len()
    );
}

#[test]
fn a_managed_back_end_must_be_healthy_on_every_node_before_promotion() {
    let db = Database::create();
    let blobs = tempfile::tempdir().unwrap();
    let url = db.url();
    let wait = ["--cluster-backend-wait-secs", "3"];
    let mut n1 = node(&url, blobs.path(), "n1", &wait);
    // Node 2's environment breaks back ends that need it clean.
    let mut n2 = node_env(&url, blobs.path(), "n2", &wait, &[("BACKEND_BROKEN", "1")]);
    let backend = example_backend();
    let good = format!("{} --port {{port}} --api 1", backend.display());
    let picky = format!(
        "sh -c 'test -z \"$BACKEND_BROKEN\" && exec {} --port {{port}} --api 2'",
        backend.display()
    );
    n1.deploy_with(&example("v1"), "v1", &["--backend-cmd", &good]);
    n1.deploy_with(&example("v2"), "v2", &["--backend-cmd", &picky]);

    // Each node runs its own copy; promotion through node 2 waits for both.
    n2.ok(&["promote", "v1"]);
    wait_for("node 1 to serve v1", Duration::from_secs(5), || {
        n1.current().as_deref() == Some("v1")
    });
    for n in [&n1, &n2] {
        let r = n.get("/api/items").send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-backend"], "v1");
    }
    wait_for(
        "both nodes to report v1's back end healthy",
        Duration::from_secs(10),
        || nodes(&n1).iter().all(|n| n["backends"]["v1"] == "healthy"),
    );

    // v2's back end cannot start on node 2: refused, naming the node.
    let err = n1.fails(&["promote", "v2"]);
    assert!(err.contains("n2") && !err.contains("n1"), "{err}");
    assert_eq!(n1.current().as_deref(), Some("v1"));
    assert_eq!(n2.current().as_deref(), Some("v1"));
    // A graceful stop stops each node's own back ends.
    for n in [&mut n1, &mut n2] {
        assert!(n.terminate().success());
    }
}

#[test]
fn cluster_mode_needs_an_admin_token_and_a_postgres_url() {
    let data = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::bin())
            .arg("serve")
            .arg("--data")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("SKEWLESS_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        err
    };
    // A generated token would differ per node: cluster mode refuses to start.
    let err = serve(&["--state", "postgres://postgres@127.0.0.1:5432/skewless"]);
    assert!(
        err.contains("needs an admin token shared by every node"),
        "{err}"
    );
    let err = serve(&["--state", "mysql://x", "--admin-token", "0123456789abcdef"]);
    assert!(err.contains("postgres://"), "{err}");
    assert!(
        !data.path().join("admin-token").exists(),
        "nothing was created"
    );
}
