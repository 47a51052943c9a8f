//! Several nodes over one PostgreSQL database and one S3 bucket (moto),
//! each reading it through its own disk cache: every node serves what any
//! node deployed, an object store that stops answering fails a deploy
//! cleanly while cached files are still served, deploys and collections on
//! different nodes lose nothing, and neither do nodes killed at random
//! points; fsck finds and repairs what went wrong in the bucket.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::cluster::{Database, Haproxy};
use crate::support::s3::{node, Bucket};
use crate::support::{app_of_release, example, generate_app, wait_for, Server, TOKEN};

/// Quick timeouts for the object store, so an outage shows in seconds.
const QUICK: &[&str] = &[
    "--blobs-connect-timeout-ms",
    "500",
    "--blobs-request-timeout-ms",
    "1500",
];

/// Every file of `dir` (index.html aside: it is rewritten) is served by
/// `s` byte-for-byte under `/_r/<id>/`.
fn assert_serves(s: &Server, dir: &Path, id: &str) {
    for entry in walkdir(dir) {
        let rel = entry
            .strip_prefix(dir)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if rel == "index.html" {
            continue;
        }
        let r = s.get(&format!("/_r/{id}/{rel}")).send().unwrap();
        assert_eq!(r.status(), 200, "{} {id}/{rel}", s.url);
        let got = r.bytes().unwrap();
        let want = std::fs::read(&entry).unwrap();
        assert!(got == want, "{} serves {id}/{rel} with other bytes", s.url);
    }
    let shell = s
        .get(&format!("/_r/{id}/"))
        .header("accept", "text/html")
        .send()
        .unwrap();
    assert_eq!(shell.status(), 200, "{} {id} shell", s.url);
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn release_ids(s: &Server) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// fsck through `s` finds nothing but orphans and leftovers.
fn assert_fsck_clean(s: &Server) {
    let fsck = s.cli(&["fsck", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&fsck.stdout)
        .unwrap_or_else(|_| panic!("fsck: {}", String::from_utf8_lossy(&fsck.stderr)));
    let problems: Vec<&serde_json::Value> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !matches!(p["kind"].as_str(), Some("orphan-blob" | "leftover-upload")))
        .collect();
    assert!(problems.is_empty(), "fsck: {problems:?}");
    assert_eq!(report["ok"], true);
}

#[test]
fn three_nodes_share_one_bucket_and_a_late_node_serves_every_file() {
    let db = Database::create();
    let bucket = Bucket::start();
    let url = db.url();
    let n1 = node(&url, &bucket, "n1", &[]);
    let n2 = node(&url, &bucket, "n2", &[]);
    let n3 = node(&url, &bucket, "n3", &[]);
    let lb = Haproxy::start(&[&n1, &n2, &n3]);
    let app = tempfile::tempdir().unwrap();
    generate_app(app.path(), 120, 20 * 1024, 77);
    // One blob large enough to go up in parts and be streamed back.
    crate::support::write_file(&app.path().join("assets/big.bin"), 12 << 20, 5);

    n1.deploy(&example("v1"), "v1", true);
    n1.deploy(app.path(), "gen", false);
    assert!(bucket.objects() > 120, "the blobs are in the bucket");
    for n in [&n2, &n3] {
        wait_for(
            "the node to see both releases",
            Duration::from_secs(10),
            || {
                let ids = release_ids(n);
                ids.contains(&"v1".to_owned()) && ids.contains(&"gen".to_owned())
            },
        );
        assert_serves(n, &example("v1"), "v1");
        assert_serves(n, app.path(), "gen");
    }
    // Through the load balancer, compressed where the client takes it.
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/", lb.url))
        .header("accept", "text/html")
        .header("accept-encoding", "br")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "br");
    // A node started afterwards, with nothing of its own.
    let n4 = node(&url, &bucket, "n4", &[]);
    assert_serves(&n4, app.path(), "gen");
    assert_serves(&n4, &example("v1"), "v1");
    // A second deploy of the same files uploads nothing.
    let out = n2.ok(&["deploy", app.path().to_str().unwrap(), "--release", "gen2"]);
    assert!(out.contains("gen2"), "{out}");
    assert_fsck_clean(&n3);
}

#[test]
fn a_frozen_object_store_fails_the_deploy_cleanly_and_it_succeeds_after() {
    let db = Database::create();
    let bucket = Bucket::start();
    let url = db.url();
    let n1 = node(&url, &bucket, "n1", QUICK);
    let n2 = node(&url, &bucket, "n2", QUICK);
    n1.deploy(&example("v1"), "v1", true);
    // Read once on each node: in its cache from now on.
    assert_serves(&n1, &example("v1"), "v1");
    assert_serves(&n2, &example("v1"), "v1");

    let app = tempfile::tempdir().unwrap();
    generate_app(app.path(), 400, 16 * 1024, 91);
    let before = bucket.objects();
    let deploy = Command::new(crate::support::bin())
        .args(["deploy", app.path().to_str().unwrap(), "--release", "v2"])
        .args(["--server", &n1.url, "--token", TOKEN])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the deploy to upload some blobs",
        Duration::from_secs(60),
        || bucket.objects() >= before + 20,
    );
    bucket.moto.freeze();
    let out = deploy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the deploy went through a frozen store"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("unavailable"),
        "{stderr}"
    );
    // Not visible anywhere, while the state database still answers.
    for n in [&n1, &n2] {
        assert!(!release_ids(n).contains(&"v2".to_owned()));
        assert_eq!(n.current().as_deref(), Some("v1"));
    }
    // Cached files are still served by every node.
    assert_serves(&n1, &example("v1"), "v1");
    assert_serves(&n2, &example("v1"), "v1");
    // A node started during the outage has nothing cached: its files
    // answer 503 (after a bounded wait), not a hang. It starts even though
    // a collection left a deletion it cannot finish now.
    let left = "ab".repeat(32);
    db.sql(&format!(
        "INSERT INTO blobs (hash, state, touched_at) VALUES ('{left}', 'deleting', 0)"
    ));
    let n3 = node(&url, &bucket, "n3", QUICK);
    let r = n3.get("/_r/v1/logo.svg").send().unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    bucket.moto.thaw();
    n1.deploy(app.path(), "v2", true);
    // The next collection finishes the deletion.
    n3.ok(&["gc"]);
    assert_eq!(
        db.sql(&format!("SELECT count(*) FROM blobs WHERE hash = '{left}'"))
            .trim(),
        "0"
    );
    for n in [&n1, &n2, &n3] {
        wait_for("the node to serve v2", Duration::from_secs(10), || {
            n.current().as_deref() == Some("v2")
        });
        assert_serves(n, app.path(), "v2");
        assert_serves(n, &example("v1"), "v1");
    }
    assert_fsck_clean(&n2);
}

#[test]
fn deploys_on_one_node_and_collections_on_another_lose_nothing() {
    let db = Database::create();
    let bucket = Bucket::start();
    let url = db.url();
    let grace = ["--gc-grace-secs", "1"];
    let n1 = node(&url, &bucket, "n1", &grace);
    let n2 = node(&url, &bucket, "n2", &grace);
    let n3 = node(&url, &bucket, "n3", &grace);
    let shared = tempfile::tempdir().unwrap();
    generate_app(shared.path(), 10, 4 * 1024, 500);
    let mut apps: Vec<(String, tempfile::TempDir)> = Vec::new();
    let mut freed = 0u64;
    const ROUNDS: usize = 14;
    for round in 0..ROUNDS {
        // Each release: files shared by all, files of the one before it
        // (which a collection may be deleting) and files of its own.
        let dir = tempfile::tempdir().unwrap();
        generate_app(dir.path(), 6, 4 * 1024, 10_000 + round as u64 * 3);
        for e in walkdir(shared.path()) {
            let rel = e.strip_prefix(shared.path()).unwrap();
            let to = dir.path().join("shared").join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&e, to).unwrap();
        }
        let id = format!("r{round}");
        let deploy = Command::new(crate::support::bin())
            .args([
                "deploy",
                dir.path().to_str().unwrap(),
                "--release",
                &id,
                "--promote",
            ])
            .args(["--server", &n1.url, "--token", TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Meanwhile another node retires the release before last and
        // collects.
        if round >= 2 {
            let old = format!("r{}", round - 2);
            n2.ok(&["retire", &old]);
        }
        let gc = n2.ok(&["gc", "--json"]);
        let gc: serde_json::Value = serde_json::from_str(&gc).unwrap();
        freed += gc["bytes"].as_u64().unwrap();
        let deploy = deploy.wait_with_output().unwrap();
        assert!(
            deploy.status.success(),
            "deploy {id}: {}",
            String::from_utf8_lossy(&deploy.stderr)
        );
        apps.push((id, dir));
        // Every release not retired is whole on a third node.
        let live = release_ids(&n3);
        for (id, dir) in apps.iter().rev().take(2) {
            wait_for(
                "the third node to see the release",
                Duration::from_secs(10),
                || release_ids(&n3).contains(id),
            );
            assert_serves(&n3, dir.path(), id);
        }
        assert!(live.len() <= apps.len() + 1);
    }
    // Once the grace has passed, retired releases' blobs go.
    wait_for(
        "a collection to free bytes",
        Duration::from_secs(30),
        || {
            let gc: serde_json::Value = serde_json::from_str(&n2.ok(&["gc", "--json"])).unwrap();
            freed += gc["bytes"].as_u64().unwrap();
            freed > 0
        },
    );
    for (id, dir) in apps.iter().rev().take(2) {
        assert_serves(&n1, dir.path(), id);
    }
    assert_fsck_clean(&n3);
}

/// One admin operation of the crash loop.
#[derive(Debug, Clone, Copy)]
enum Op {
    Deploy,
    Promote,
    Retire,
    Gc,
}

#[test]
fn thirty_kills_of_random_nodes_lose_nothing_acknowledged() {
    let db = Database::create();
    let bucket = Bucket::start();
    let url = db.url();
    let mut nodes: Vec<Server> = (1..=3)
        .map(|i| node(&url, &bucket, &format!("n{i}"), &["--gc-grace-secs", "1"]))
        .collect();
    let apps: Vec<tempfile::TempDir> = (0..4)
        .map(|i| {
            let d = tempfile::tempdir().unwrap();
            generate_app(d.path(), 30, 8 * 1024, 7000 * (i as u64 + 1));
            d
        })
        .collect();
    // Release id → app index, for acknowledged deploys.
    let mut acked: Vec<(String, usize)> = Vec::new();
    let mut retired: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut rng: u64 = 0x0b1e_c7a5_7041_0003;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut n = 0;
    let mut kills_by_op: std::collections::HashMap<String, usize> = Default::default();
    let kills: usize = 30;
    for kill in 0..kills {
        let ops_before_kill = (next() % 3) as usize;
        let mut done = 0;
        loop {
            let live: Vec<&String> = acked
                .iter()
                .map(|(r, _)| r)
                .filter(|r| !retired.contains(r))
                .collect();
            let op = match next() % 4 {
                0 => Op::Deploy,
                1 => Op::Promote,
                2 => Op::Retire,
                _ => Op::Gc,
            };
            let mut app = 0;
            let args: Vec<String> = match op {
                Op::Deploy => {
                    n += 1;
                    app = (next() % apps.len() as u64) as usize;
                    vec![
                        "deploy".into(),
                        apps[app].path().to_str().unwrap().into(),
                        "--release".into(),
                        format!("k{n}"),
                    ]
                }
                Op::Promote => match live.last() {
                    Some(r) => vec!["promote".into(), (*r).clone()],
                    None => continue,
                },
                Op::Retire => match live.iter().find(|r| Some(**r) != current.as_ref()) {
                    Some(r) => vec!["retire".into(), (*r).clone()],
                    None => continue,
                },
                Op::Gc => vec!["gc".into()],
            };
            let via = (next() % nodes.len() as u64) as usize;
            let child = Command::new(crate::support::bin())
                .args(&args)
                .args(["--server", &nodes[via].url, "--token", TOKEN])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let record = |out: &std::process::Output,
                          acked: &mut Vec<(String, usize)>,
                          retired: &mut Vec<String>,
                          current: &mut Option<String>| {
                if !out.status.success() {
                    return;
                }
                match op {
                    Op::Deploy => acked.push((args[3].clone(), app)),
                    Op::Promote => *current = Some(args[1].clone()),
                    Op::Retire => retired.push(args[1].clone()),
                    Op::Gc => {}
                }
            };
            if done < ops_before_kill {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                record(&out, &mut acked, &mut retired, &mut current);
                done += 1;
                continue;
            }
            if let Op::Deploy = op {
                let before = bucket.objects();
                let want = (next() % 30) as usize;
                let id = child.id();
                wait_for("the deploy to get going", Duration::from_secs(60), || {
                    bucket.objects() >= before + want
                        || std::fs::read_to_string(format!("/proc/{id}/stat"))
                            .map_or(true, |st| st.contains(") Z "))
                });
            }
            *kills_by_op.entry(format!("{op:?}")).or_default() += 1;
            // The node serving the operation dies; now and then another too.
            nodes[via].kill9();
            if next() % 4 == 0 {
                let other = (via + 1) % nodes.len();
                nodes[other].kill_and_restart();
            }
            let mut child = child;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            record(&out, &mut acked, &mut retired, &mut current);
            nodes[via].kill_and_restart();
            break;
        }
        // Every acknowledged release is still known; releases that became
        // visible without an acknowledgement are adopted if whole.
        let check = &nodes[kill % nodes.len()];
        let list: serde_json::Value =
            serde_json::from_str(&check.ok(&["releases", "--json"])).unwrap();
        let list = list.as_array().unwrap();
        for (a, _) in &acked {
            assert!(
                list.iter().any(|r| r["id"] == a.as_str()),
                "kill {kill}: acknowledged release {a} lost"
            );
        }
        for r in list {
            let id = r["id"].as_str().unwrap().to_owned();
            if matches!(r["state"].as_str(), Some("retired" | "collected")) {
                if !retired.contains(&id) {
                    retired.push(id);
                }
                continue;
            }
            if !acked.iter().any(|(a, _)| *a == id) {
                let app = app_of_release(check, &id, &apps, &format!("kill {kill}"));
                acked.push((id.clone(), app));
            }
        }
        current = check.current();
    }
    // Afterwards every node serves every acknowledged, unretired release
    // byte-for-byte, and fsck is clean.
    for node in &nodes {
        for (id, app) in &acked {
            if retired.contains(id) {
                continue;
            }
            wait_for(
                "the node to know the release",
                Duration::from_secs(10),
                || release_ids(node).contains(id),
            );
            assert_serves(node, apps[*app].path(), id);
        }
    }
    assert_fsck_clean(&nodes[0]);
    eprintln!(
        "{kills} kills ({kills_by_op:?}): {} releases acknowledged, {} retired",
        acked.len(),
        retired.len()
    );
}

#[test]
fn fsck_finds_corrupt_and_orphan_objects_and_repairs_from_a_local_copy() {
    let bucket = Bucket::start();
    let env = bucket.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The embedded state database with blobs in the bucket.
    let mut s = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        &["--blobs", &bucket.url()],
        &env,
    );
    s.deploy(&example("v1"), "v1", true);
    assert_fsck_clean(&s);
    let key_of = |hash: &str| format!("{}/{}/{hash}", crate::support::s3::PREFIX, &hash[..2]);

    // An object nobody registered, and a blob changed behind the node's
    // back after the node read (and cached) it.
    let orphan = b"an upload nobody registered";
    let orphan_hash = blake3::hash(orphan).to_hex().to_string();
    bucket
        .moto
        .put_object(&bucket.name, &key_of(&orphan_hash), orphan);
    let css = std::fs::read(example("v1").join("style.css")).unwrap();
    let r = s.get("/_r/v1/style.css").send().unwrap();
    assert!(r.bytes().unwrap() == css);
    let css_hash = blake3::hash(&css).to_hex().to_string();
    bucket
        .moto
        .put_object(&bucket.name, &key_of(&css_hash), b"body{}");

    let fsck = s.cli(&["fsck", "--json"]);
    assert!(!fsck.status.success());
    let report: serde_json::Value = serde_json::from_slice(&fsck.stdout).unwrap();
    let kinds: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let kind = p["kind"].as_str().unwrap().to_owned();
            (kind, p["hash"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    assert!(
        kinds.contains(&("corrupt-blob".into(), css_hash.clone())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("orphan-blob".into(), orphan_hash)),
        "{kinds:?}"
    );

    // The running node repairs from its cache.
    let out = s.cli(&["fsck", "--repair"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("stored again from this node's local copy"),
        "{stdout}"
    );
    assert_fsck_clean(&s);

    // Stopped, with a blob lost from the bucket and no cache to help:
    // fsck opens the store itself and repairs from the given copies (a
    // second server's blob directory).
    let local = Server::start();
    local.deploy(&example("v1"), "v1", true);
    s.terminate();
    std::fs::remove_dir_all(s.data.path().join("cache")).unwrap();
    let logo = std::fs::read(example("v1").join("logo.svg")).unwrap();
    let logo_hash = blake3::hash(&logo).to_hex().to_string();
    bucket
        .moto
        .put_object(&bucket.name, &key_of(&logo_hash), b"not the logo at all");
    let offline = |extra: &[&str]| {
        Command::new(crate::support::bin())
            .args(["fsck", "--data", s.data.path().to_str().unwrap()])
            .args(["--blobs", &bucket.url()])
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = offline(&[]);
    assert!(!out.status.success());
    let copies = local.data.path().join("blobs");
    let out = offline(&["--repair", "--copy-from", copies.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("stored again from the given copy"),
        "{stdout}"
    );
    let out = offline(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    s.kill_and_restart();
    let r = s.get("/_r/v1/logo.svg").send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().unwrap() == logo);
}
