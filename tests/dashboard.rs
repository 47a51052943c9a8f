//! What the dashboard reads from the admin API: the series of live clients
//! per release (sampled into state, the same from every node, kept across
//! restarts), the token's role, and the actions a read token may not take.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::support::cluster::{holder, node, nodes, Database};
use crate::support::{example, wait_for, Server};

fn history(s: &Server, seconds: i64) -> Value {
    let r = s
        .admin(Method::GET, &format!("/clients/history?seconds={seconds}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

/// The newest sample of `release`, if any.
fn last_clients(h: &Value, release: &str) -> Option<u64> {
    h["releases"]
        .as_array()?
        .iter()
        .find(|r| r["release"] == release)?["points"]
        .as_array()?
        .last()?["clients"]
        .as_u64()
}

fn points(h: &Value, release: &str) -> Vec<(i64, u64)> {
    h["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["release"] == release)
        .flat_map(|r| r["points"].as_array().cloned().unwrap_or_default())
        .map(|p| (p["at"].as_i64().unwrap(), p["clients"].as_u64().unwrap()))
        .collect()
}

#[test]
fn live_clients_are_sampled_into_a_series_that_survives_a_restart() {
    let mut s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--sample-interval-secs", "1"],
    );
    s.deploy(&example("v1"), "v1", true);
    wait_for("a first sample of v1", Duration::from_secs(10), || {
        last_clients(&history(&s, 3600), "v1") == Some(0)
    });
    let streams: Vec<_> = (0..2).map(|_| s.events("v1")).collect();
    wait_for("v1's series to reach 2", Duration::from_secs(10), || {
        last_clients(&history(&s, 3600), "v1") == Some(2)
    });
    let h = history(&s, 3600);
    assert_eq!(h["interval_secs"], 1);
    assert_eq!(h["kept_secs"], 86_400);
    assert_eq!(
        h["now"].as_i64().unwrap() - h["from"].as_i64().unwrap(),
        3600
    );
    let v1 = points(&h, "v1");
    assert!(
        v1.windows(2).all(|w| w[0].0 < w[1].0),
        "oldest first: {v1:?}"
    );
    assert!(v1.iter().any(|p| p.1 == 0) && v1.iter().any(|p| p.1 == 2));
    // The longest window is what is kept.
    let all = history(&s, 10_000_000);
    assert_eq!(
        all["now"].as_i64().unwrap() - all["from"].as_i64().unwrap(),
        86_400
    );
    // A window of nothing is refused with a one-line reason.
    let bad = s
        .admin(Method::GET, "/clients/history?seconds=0")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("seconds must be 1 to 86400"),
        "{body}"
    );
    let unauthenticated = s.get("/_skewless/api/v1/clients/history").send().unwrap();
    assert_eq!(unauthenticated.status(), 401);
    drop(streams);

    // The series lives in state: a restart after kill -9 keeps it. The
    // newest slot may still be rewritten by a later tick of the same slot
    // (the streams just closed), so every point before it must survive.
    let mut before = points(&history(&s, 3600), "v1");
    before.pop();
    assert!(!before.is_empty(), "{before:?}");
    s.crash_and_restart();
    let after = points(&history(&s, 3600), "v1");
    assert!(
        before.iter().all(|p| after.contains(p)),
        "{before:?} vs {after:?}"
    );
}

#[test]
fn a_read_token_reads_everything_and_may_do_nothing() {
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
    s.deploy(&example("v2"), "v2", false);
    let viewer = |m: Method, p: &str, body: Option<&str>| {
        let mut r = s
            .http
            .request(m, format!("{}/_skewless/api/v1{p}", s.url))
            .bearer_auth("viewer-token-0123456789");
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        r.send().unwrap()
    };
    let me: Value = viewer(Method::GET, "/whoami", None).json().unwrap();
    assert_eq!(me, serde_json::json!({"name": "viewer", "role": "read"}));
    let admin: Value = s
        .admin(Method::GET, "/whoami")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(admin, serde_json::json!({"name": "admin", "role": "admin"}));
    for p in [
        "/status",
        "/releases",
        "/nodes",
        "/history?limit=50",
        "/clients/history?seconds=3600",
    ] {
        assert_eq!(viewer(Method::GET, p, None).status(), 200, "GET {p}");
    }
    // Every action of the dashboard, refused.
    for (p, body) in [
        ("/releases/v2/promote", "{}"),
        ("/releases/v2/promote", r#"{"percent": 10}"#),
        ("/canary/abort", "{}"),
        ("/rollback", "{}"),
        ("/releases/v2/retire", "{}"),
        ("/required", r#"{"min": "v1"}"#),
    ] {
        let r = viewer(Method::POST, p, Some(body));
        assert_eq!(r.status(), 403, "POST {p} {body}");
        let e: Value = r.json().unwrap();
        assert!(e["error"].as_str().unwrap().contains("read-only"), "{e}");
    }
    assert_eq!(s.current().as_deref(), Some("v1"));
    // A single node lists itself.
    let nodes: Value = viewer(Method::GET, "/nodes", None).json().unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["live"], true);
    assert!(nodes[0]["address"]
        .as_str()
        .is_some_and(|a| s.url.ends_with(a)));
}

#[test]
fn in_a_cluster_one_node_samples_and_every_node_serves_the_same_series() {
    let db = Database::create();
    let blobs = tempfile::tempdir().unwrap();
    let url = db.url();
    let extra = ["--sample-interval-secs", "1", "--lease-ttl-secs", "3"];
    let n1 = node(&url, blobs.path(), "n1", &extra);
    let n2 = node(&url, blobs.path(), "n2", &extra);
    n1.deploy(&example("v1"), "v1", true);
    wait_for(
        "a node to hold the samples lease",
        Duration::from_secs(10),
        || holder(&n1, "samples").is_some(),
    );
    // Clients on both nodes: the series counts them over the cluster.
    let _a = n1.events("v1");
    let _b = n2.events("v1");
    let _c = n2.events("v1");
    wait_for(
        "the series to count 3 clients",
        Duration::from_secs(15),
        || last_clients(&history(&n1, 3600), "v1") == Some(3),
    );
    // Both nodes answer from the one series in state.
    wait_for(
        "both nodes to answer alike",
        Duration::from_secs(10),
        || {
            let (h1, h2) = (history(&n1, 3600), history(&n2, 3600));
            let (p1, p2) = (points(&h1, "v1"), points(&h2, "v1"));
            !p1.is_empty() && p1 == p2
        },
    );
    // Exactly one node writes.
    let writers = nodes(&n2)
        .iter()
        .filter(|n| {
            n["leases"]
                .as_array()
                .is_some_and(|l| l.iter().any(|j| j == "samples"))
        })
        .count();
    assert_eq!(writers, 1);
}
