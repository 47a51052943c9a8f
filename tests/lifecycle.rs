//! Release lifecycle: presence, drain and retirement, garbage collection,
//! canary, required upgrades, metrics and the audit history.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{example, wait_for, write_file, Server};
use reqwest::header;

fn status(s: &Server) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["status", "--json"])).unwrap()
}

fn state_of(s: &Server, id: &str) -> String {
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .unwrap()
}

fn clients(s: &Server, id: &str) -> serde_json::Value {
    status(s)["clients"][id].clone()
}

#[test]
fn presence_counts_rise_and_fall_with_real_streams() {
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--event-keepalive-secs", "1"],
    );
    s.deploy(&example("v1"), "v1", true);
    s.deploy(&example("v2"), "v2", true);
    let mut streams: Vec<_> = (0..3)
        .map(|i| s.events(&format!("v1&client=tab-v1-{i:04}")))
        .collect();
    for st in &mut streams {
        st.next_event();
    }
    let mut anon = s.events("v2");
    anon.next_event();
    wait_for("3 streams on v1", Duration::from_secs(5), || {
        clients(&s, "v1")["streams"] == 3
    });
    assert_eq!(clients(&s, "v1")["total"], 3);
    assert_eq!(clients(&s, "v2")["streams"], 1);
    // Requests with a client id count too, once per id.
    for _ in 0..3 {
        for id in ["tab-v2-aaaa", "tab-v2-bbbb"] {
            s.get("/style.css")
                .header("skewless-release", "v2")
                .header("skewless-client", id)
                .send()
                .unwrap();
        }
    }
    // A poll of the version endpoint counts, even when answered 304.
    let etag = s.get("/_skewless/version").send().unwrap().headers()[header::ETAG].clone();
    let polled = s
        .get("/_skewless/version?release=v2&client=tab-v2-poller")
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .unwrap();
    assert_eq!(polled.status(), 304);
    let c = clients(&s, "v2");
    assert_eq!(
        (
            c["streams"].as_u64(),
            c["recent"].as_u64(),
            c["total"].as_u64()
        ),
        (Some(1), Some(3), Some(4)),
        "{c}"
    );
    let table = s.ok(&["releases"]);
    assert!(table.contains("CLIENTS"), "{table}");
    // Closing streams lowers the count.
    streams.truncate(1);
    wait_for("v1 streams to drop to 1", Duration::from_secs(10), || {
        clients(&s, "v1")["streams"] == 1
    });
    let human = s.ok(&["status"]);
    assert!(
        human.contains("v1") && human.contains("1 streams"),
        "{human}"
    );
}

/// a and b share `shared.js`; each has a unique file.
fn app(dir: &std::path::Path, unique_seed: u64) {
    std::fs::write(
        dir.join("index.html"),
        "<head></head><script src=/shared.js></script>",
    )
    .unwrap();
    write_file(&dir.join("shared.js"), 4096, 1);
    write_file(
        &dir.join(format!("only-{unique_seed}.bin")),
        8192,
        unique_seed,
    );
}

fn blob_exists(s: &Server, data: &[u8]) -> bool {
    let h = blake3::hash(data).to_hex().to_string();
    s.data.path().join("blobs").join(&h[..2]).join(&h).exists()
}

#[test]
fn drained_releases_are_retired_when_idle_and_collected() {
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--keep-last",
            "0",
            "--min-drain-secs",
            "0",
            "--idle-secs",
            "1",
            "--reaper-interval-ms",
            "100",
            "--gc-interval-secs",
            "1",
            "--event-keepalive-secs",
            "1",
            "--presence-window-secs",
            "1",
        ],
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, d) in dirs.iter().enumerate() {
        app(d.path(), 10 + i as u64);
    }
    s.deploy(dirs[0].path(), "a", true);
    // A tab on `a` holds it while its stream is open.
    let mut tab = s.events("a&client=tab-on-a-0001");
    tab.next_event();
    s.deploy(dirs[1].path(), "b", true);
    let (_, data) = tab.next_event();
    assert!(data.contains("\"current\":\"b\""), "{data}");
    s.deploy(dirs[2].path(), "c", true);
    tab.next_event();
    // b drained with no clients: retired; a, older but watched, is not.
    wait_for("b to be retired", Duration::from_secs(15), || {
        state_of(&s, "b") != "draining"
    });
    assert_eq!(state_of(&s, "a"), "draining");
    // Its unique blob goes at the next scheduled gc; the shared one stays.
    let only_b = std::fs::read(dirs[1].path().join("only-11.bin")).unwrap();
    let shared = std::fs::read(dirs[0].path().join("shared.js")).unwrap();
    wait_for("b to be collected", Duration::from_secs(15), || {
        state_of(&s, "b") == "collected"
    });
    wait_for(
        "b's unique blob to be deleted",
        Duration::from_secs(15),
        || !blob_exists(&s, &only_b),
    );
    assert!(blob_exists(&s, &shared));

    // The tab leaves: a is retired too. A client still pinned to it is
    // upgraded, not broken.
    drop(tab);
    wait_for("a to be retired", Duration::from_secs(15), || {
        state_of(&s, "a") != "draining"
    });
    let r = s
        .get("/shared.js")
        .header("skewless-release", "a")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "a pinned client is served, not broken");
    assert_eq!(r.headers()["skewless-served-by"], "c");
    assert_eq!(r.headers()["skewless-required"], "c");
    let v: serde_json::Value = s
        .get("/_skewless/version?release=a")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (v["required"].as_bool(), v["current"].as_str()),
        (Some(true), Some("c"))
    );
    // Nothing retained was collected.
    for f in ["/shared.js", "/only-12.bin", "/"] {
        assert_eq!(s.get(f).send().unwrap().status(), 200, "{f}");
    }
    let history: serde_json::Value = serde_json::from_str(&s.ok(&["history", "--json"])).unwrap();
    let reaped: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["actor"] == "reaper")
        .map(|h| {
            (
                h["action"].as_str().unwrap(),
                h["release"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert!(
        reaped.contains(&("retire", "b")) && reaped.contains(&("retire", "a")),
        "{reaped:?}"
    );
    assert!(reaped.contains(&("collect", "b")), "{reaped:?}");
}

#[test]
fn the_kept_releases_and_the_canary_are_never_retired() {
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--keep-last",
            "1",
            "--min-drain-secs",
            "0",
            "--idle-secs",
            "0",
            "--reaper-interval-ms",
            "100",
        ],
    );
    for id in ["r1", "r2", "r3"] {
        s.deploy(&example("v1"), id, true);
    }
    s.deploy(&example("v2"), "r4", false);
    s.ok(&["promote", "r4", "--percent", "10"]);
    s.deploy(&example("v2"), "r5", true);
    // r1..r3 drain, r4 is the canary, r5 is current. Keep 1: r3 is kept;
    // r1 and r2 go.
    wait_for("r1 and r2 to be retired", Duration::from_secs(15), || {
        state_of(&s, "r1") == "retired" && state_of(&s, "r2") == "retired"
    });
    assert_eq!(state_of(&s, "r3"), "draining");
    assert_eq!(status(&s)["canary"]["release"], "r4");
    assert_ne!(state_of(&s, "r4"), "retired");
    assert_eq!(state_of(&s, "r5"), "current");
}

#[test]
fn canary_splits_new_sessions_within_bounds_and_sticks() {
    let s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    s.deploy(&example("v2"), "v2", false);
    let out = s.ok(&["promote", "v2", "--percent", "30"]);
    assert!(out.contains("canary for 30%"), "{out}");
    let st = status(&s);
    assert_eq!(
        (
            st["current"].as_str(),
            st["canary"]["release"].as_str(),
            st["canary"]["percent"].as_u64()
        ),
        (Some("v1"), Some("v2"), Some(30))
    );

    let mut by: HashMap<String, usize> = HashMap::new();
    let mut sessions = Vec::new();
    for _ in 0..1000 {
        let r = s
            .get("/")
            .header(header::ACCEPT, "text/html")
            .send()
            .unwrap();
        let served = r.headers()["skewless-served-by"]
            .to_str()
            .unwrap()
            .to_owned();
        let cookie = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(cookie, format!("skewless_release={served}"));
        *by.entry(served.clone()).or_default() += 1;
        if sessions.len() < 40 {
            sessions.push((cookie, served));
        }
    }
    let canary = by.get("v2").copied().unwrap_or(0);
    // Binomial(1000, 0.3): mean 300, sd 14.5; ±70 is beyond 4.8 sd.
    assert!(
        (230..=370).contains(&canary),
        "canary got {canary} of 1000 sessions: {by:?}"
    );
    // Sticky: each session's next page loads land on the same release, and
    // the canary's clients are told the canary is their current release.
    for (cookie, served) in &sessions {
        for _ in 0..5 {
            let r = s
                .get("/inbox/1")
                .header(header::ACCEPT, "text/html")
                .header(header::COOKIE, cookie.as_str())
                .send()
                .unwrap();
            assert_eq!(r.headers()["skewless-served-by"], served.as_str());
            assert_eq!(r.headers()["skewless-current"], served.as_str());
        }
    }
    // Aborting the canary never moves pinned clients...
    s.ok(&["canary", "abort"]);
    let pinned = s
        .get("/style.css")
        .header("skewless-release", "v2")
        .send()
        .unwrap();
    assert_eq!(pinned.headers()["skewless-served-by"], "v2");
    // ...but their next page load is the current release.
    let nav = s
        .get("/")
        .header(header::ACCEPT, "text/html")
        .header(header::COOKIE, "skewless_release=v2")
        .send()
        .unwrap();
    assert_eq!(nav.headers()["skewless-served-by"], "v1");
    let err = s.fails(&["canary", "abort"]);
    assert!(err.contains("no canary"), "{err}");
    // Promoting the canary to 100 % ends it.
    s.ok(&["promote", "v2", "--percent", "50"]);
    s.ok(&["promote", "v2"]);
    assert!(status(&s)["canary"].is_null());
    assert_eq!(s.current().as_deref(), Some("v2"));
    let out = s.cli(&["promote", "v2", "--percent", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--percent"));
}

#[test]
fn required_upgrades_reach_streams_and_requests() {
    let s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    s.deploy(&example("v2"), "v2", false);
    let mut old = s.events("v1");
    old.next_event();
    s.ok(&["promote", "v2", "--required"]);
    let (name, data) = old.next_event();
    assert_eq!(name, "required", "{data}");
    let r = s
        .get("/api-free.js")
        .header("skewless-release", "v1")
        .send()
        .unwrap();
    assert_eq!(r.headers()["skewless-required"], "v2");
    let r = s
        .get("/_r/v2/style.css")
        .header("skewless-release", "v2")
        .send()
        .unwrap();
    assert!(r.headers().get("skewless-required").is_none());
    // A server-wide minimum, set and cleared by `require`.
    s.deploy(&example("v1"), "v3", true);
    s.ok(&["require", "--clear"]);
    let r = s
        .get("/style.css")
        .header("skewless-release", "v2")
        .send()
        .unwrap();
    assert!(r.headers().get("skewless-required").is_none());
    let mut v2_tab = s.events("v2");
    v2_tab.next_event();
    s.ok(&["require", "v3"]);
    let (name, _) = v2_tab.next_event();
    assert_eq!(name, "required");
    let r = s
        .get("/style.css")
        .header("skewless-release", "v2")
        .send()
        .unwrap();
    assert_eq!(r.headers()["skewless-required"], "v3");
    let err = s.fails(&["require", "nope"]);
    assert!(err.contains("404"), "{err}");
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    s.deploy(&example("v2"), "v2", true);
    s.ok(&["rollback"]);
    s.ok(&["promote", "v2"]);
    let mut st = s.events("v1&client=metrics-tab-01");
    st.next_event();
    s.get("/")
        .header(header::ACCEPT, "text/html")
        .send()
        .unwrap();
    s.get("/style.css")
        .header("skewless-release", "v1")
        .send()
        .unwrap();
    s.get("/assets/chunk-details-7b3e5d10.js").send().unwrap();
    s.get("/assets/chunk-deadbeef01.js").send().unwrap();
    s.get("/api/x").send().unwrap();
    let resp = s.get("/_skewless/metrics").send().unwrap();
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert!(
        value(
            "skewless_requests_total",
            &[("kind", "shell"), ("status", "200")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            "skewless_requests_total",
            &[("kind", "asset"), ("status", "404")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            "skewless_requests_total",
            &[("kind", "api"), ("status", "502")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value("skewless_requests_total", &[("kind", "system")]) >= 1.0,
        "{text}"
    );
    assert!(
        value("skewless_skew_saved_total", &[("kind", "asset")]) >= 2.0,
        "{text}"
    );
    assert_eq!(value("skewless_skew_missed_total", &[]), 1.0, "{text}");
    assert_eq!(value("skewless_promotions_total", &[]), 3.0, "{text}");
    assert_eq!(value("skewless_rollbacks_total", &[]), 1.0, "{text}");
    assert_eq!(
        value("skewless_live_clients", &[("release", "v1")]),
        1.0,
        "{text}"
    );
    assert_eq!(value("skewless_event_streams", &[]), 1.0, "{text}");
    assert_eq!(
        value("skewless_releases", &[("state", "current")]),
        1.0,
        "{text}"
    );
}

#[test]
fn history_names_the_token_and_read_only_tokens_cannot_act() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("skewless.toml");
    std::fs::write(
        &config,
        "[[tokens]]\nname = \"ci\"\ntoken = \"ci-token-0123456789abcdef\"\n\n[[tokens]]\nname = \"viewer\"\ntoken = \"viewer-token-0123456789ab\"\nrole = \"read\"\n",
    )
    .unwrap();
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--config", config.to_str().unwrap()],
    );
    let as_token = |token: &str, args: &[&str]| {
        std::process::Command::new(crate::support::bin())
            .args(args)
            .args(["--server", &s.url, "--token", token])
            .output()
            .unwrap()
    };
    let ci = "ci-token-0123456789abcdef";
    let viewer = "viewer-token-0123456789ab";
    for args in [
        vec![
            "deploy",
            example("v1").to_str().unwrap(),
            "--release",
            "v1",
            "--promote",
        ],
        vec!["deploy", example("v2").to_str().unwrap(), "--release", "v2"],
        vec!["promote", "v2", "--percent", "20"],
        vec!["canary", "abort"],
        vec!["promote", "v2"],
        vec!["rollback"],
        vec!["retire", "v2"],
        vec!["gc"],
    ] {
        let out = as_token(ci, &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = as_token(viewer, &["status", "--json"]);
    assert!(out.status.success());
    let out = as_token(viewer, &["promote", "v1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-only") && err.contains("403"), "{err}");
    // The admin token still works and is named "admin".
    s.ok(&["history"]);
    let history: serde_json::Value = serde_json::from_str(&s.ok(&["history", "--json"])).unwrap();
    let rows: Vec<(String, String, String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let f = |k: &str| h[k].as_str().unwrap_or("-").to_owned();
            (f("action"), f("actor"), f("before"), f("after"))
        })
        .collect();
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "deploy",
            "promote",
            "deploy",
            "canary",
            "canary-abort",
            "promote",
            "rollback",
            "retire",
            "collect",
            "gc"
        ]
    );
    assert!(rows.iter().all(|r| r.1 == "ci"), "{rows:?}");
    assert_eq!(rows[3].3, "v2 at 20%");
    assert_eq!((rows[5].2.as_str(), rows[5].3.as_str()), ("v1", "v2"));
    assert_eq!((rows[6].2.as_str(), rows[6].3.as_str()), ("v2", "v1"));
    let table = s.ok(&["history"]);
    assert!(
        table.contains("canary-abort") && table.contains(" ci "),
        "{table}"
    );
}
