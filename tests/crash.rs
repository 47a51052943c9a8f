//! `kill -9` at awkward moments: what was acknowledged survives, nothing
//! partial becomes visible.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{app_of_release, example, generate_app, wait_for, Server, TOKEN};

fn stored_blobs(data: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(data.join("blobs")) else {
        return 0;
    };
    dirs.flatten()
        .filter(|d| d.file_name().len() == 2)
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
        .sum()
}

fn release_ids(s: &Server) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every file of `dir` is served byte-for-byte under `/_r/<id>/`, but for
/// `skip`.
fn assert_serves(s: &Server, dir: &Path, id: &str, skip: Option<&str>) {
    for entry in std::fs::read_dir(dir.join("assets")).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        if Some(name.as_str()) == skip {
            continue;
        }
        let body = s.get(&format!("/_r/{id}/assets/{name}")).send().unwrap();
        assert_eq!(body.status(), 200, "{id}/{name}");
        let got = body.bytes().unwrap();
        let want = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            blake3::hash(&got),
            blake3::hash(&want),
            "{id}/{name} differs"
        );
    }
}

#[test]
fn acknowledged_promotions_survive_kill_9() {
    let mut s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    s.deploy(&example("v2"), "v2", false);
    for round in 0..10 {
        let target = if round % 2 == 0 { "v2" } else { "v1" };
        s.ok(&["promote", target]);
        s.crash_and_restart();
        assert_eq!(s.current().as_deref(), Some(target), "round {round}");
        let shell = s.get("/").header("accept", "text/html").send().unwrap();
        assert_eq!(shell.headers()["skewless-served-by"], target);
    }
    s.ok(&["rollback"]);
    s.crash_and_restart();
    assert_eq!(s.current().as_deref(), Some("v2"));
}

#[test]
fn kill_9_during_deploy_leaves_no_partial_release() {
    let mut s = Server::start();
    let app = tempfile::tempdir().unwrap();
    generate_app(app.path(), 300, 16 * 1024, 7);
    s.deploy(&example("v1"), "v1", true);
    let mut acknowledged: Vec<String> = vec![];
    // Kill after a growing number of blobs has landed; the last rounds hit
    // registration or later.
    for (round, kill_after) in [5usize, 60, 150, 280, 1000].into_iter().enumerate() {
        let id = format!("big{round}");
        // Every round changes one file, so a new blob must be uploaded.
        crate::support::write_file(
            &app.path().join("assets/f0.bin"),
            16 * 1024,
            100 + round as u64,
        );
        let before = stored_blobs(s.data.path());
        let child = Command::new(crate::support::bin())
            .args([
                "deploy",
                app.path().to_str().unwrap(),
                "--release",
                &id,
                "--server",
                &s.url,
                "--token",
                TOKEN,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let child_id = child.id();
        wait_for(
            "blobs to land or the deploy to end",
            Duration::from_secs(60),
            || {
                stored_blobs(s.data.path()) >= before + kill_after
                    || !Path::new(&format!("/proc/{child_id}")).exists()
                    || std::fs::read_to_string(format!("/proc/{child_id}/stat"))
                        .is_ok_and(|st| st.contains(") Z "))
            },
        );
        s.kill9();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
            acknowledged.push(id.clone());
        }
        s.crash_and_restart();
        let ids = release_ids(&s);
        for a in &acknowledged {
            assert!(
                ids.contains(a),
                "acknowledged release {a} lost after kill -9"
            );
        }
        if ids.contains(&id) {
            // Registered (perhaps unacknowledged): it must be whole.
            assert_serves(&s, app.path(), &id, None);
        } else {
            assert_eq!(
                s.get(&format!("/_r/{id}/index.html"))
                    .send()
                    .unwrap()
                    .status(),
                404
            );
            // Deploying again completes it.
            s.deploy(app.path(), &id, false);
            acknowledged.push(id.clone());
            assert_serves(&s, app.path(), &id, None);
        }
        // No temp files survive a restart.
        let tmp = std::fs::read_dir(s.data.path().join("blobs/tmp"))
            .unwrap()
            .count();
        assert_eq!(tmp, 0, "round {round}: leftover temp files");
        assert_eq!(s.current().as_deref(), Some("v1"));
    }
    // Later rounds rewrote f0.bin; every other file is common to all.
    for a in &acknowledged {
        assert_serves(&s, app.path(), a, Some("f0.bin"));
    }
}

/// One admin operation of the loop, as the killer's victim.
#[derive(Debug, Clone, Copy)]
enum Op {
    Deploy,
    Promote,
    Retire,
    Gc,
}

/// What the test knows was acknowledged.
#[derive(Default)]
struct Acked {
    /// Release id → the app directory it was deployed from.
    releases: Vec<(String, std::path::PathBuf)>,
    current: Option<String>,
    retired: Vec<String>,
}

impl Acked {
    fn record(&mut self, op: Op, args: &[String], out: &std::process::Output) {
        if !out.status.success() {
            return;
        }
        match op {
            Op::Deploy => {
                let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let id = report["id"].as_str().unwrap().to_owned();
                self.releases.push((id, args[1].clone().into()));
            }
            Op::Promote => self.current = Some(args[1].clone()),
            Op::Retire => self.retired.push(args[1].clone()),
            Op::Gc => {}
        }
    }

    fn live(&self) -> impl Iterator<Item = &String> {
        self.releases
            .iter()
            .map(|(r, _)| r)
            .filter(|r| !self.retired.contains(r))
    }
}

#[test]
fn fifty_kills_at_random_points_lose_nothing_acknowledged() {
    let mut s = Server::start();
    let apps: Vec<tempfile::TempDir> = (0..4)
        .map(|i| {
            let d = tempfile::tempdir().unwrap();
            generate_app(d.path(), 40, 8 * 1024, 1000 * i as u64);
            d
        })
        .collect();
    let mut acked = Acked::default();
    let mut rng: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut n = 0;
    let mut kills_by_op: std::collections::HashMap<String, usize> = Default::default();
    for kill in 0..50 {
        // Acknowledge a random number of operations, then kill the server
        // while the next one is in flight.
        let ops_before_kill = (next() % 3) as usize;
        let mut done = 0;
        let mut in_flight_promote = None;
        loop {
            let op = match next() % 4 {
                0 => Op::Deploy,
                1 => Op::Promote,
                2 => Op::Retire,
                _ => Op::Gc,
            };
            let args: Vec<String> = match op {
                Op::Deploy => {
                    n += 1;
                    let app = &apps[(next() % apps.len() as u64) as usize];
                    vec![
                        "deploy".into(),
                        app.path().to_str().unwrap().into(),
                        "--release".into(),
                        format!("k{n}"),
                        "--json".into(),
                    ]
                }
                Op::Promote => match acked.live().last() {
                    Some(r) => vec!["promote".into(), r.clone()],
                    None => continue,
                },
                Op::Retire => match acked.live().find(|r| Some(*r) != acked.current.as_ref()) {
                    Some(r) => vec!["retire".into(), r.clone()],
                    None => continue,
                },
                Op::Gc => vec!["gc".into()],
            };
            let child = Command::new(crate::support::bin())
                .args(&args)
                .args(["--server", &s.url, "--token", TOKEN])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            if done < ops_before_kill {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                acked.record(op, &args, &out);
                done += 1;
                continue;
            }
            // A deploy is killed after a random number of its blobs landed;
            // the others as soon as they are sent.
            if let Op::Deploy = op {
                let before = stored_blobs(s.data.path());
                let want = (next() % 40) as usize;
                let id = child.id();
                wait_for("the deploy to get going", Duration::from_secs(30), || {
                    stored_blobs(s.data.path()) >= before + want
                        || std::fs::read_to_string(format!("/proc/{id}/stat"))
                            .map_or(true, |st| st.contains(") Z "))
                });
            }
            if let Op::Promote = op {
                in_flight_promote = Some(args[1].clone());
            }
            *kills_by_op.entry(format!("{op:?}")).or_default() += 1;
            s.kill9();
            // The CLI must give up on a dead server; if it has not within
            // the deadline, its operation counts as unacknowledged.
            let mut child = child;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            acked.record(op, &args, &out);
            break;
        }
        s.crash_and_restart();
        // Every acknowledged promotion is in force (or the one in flight).
        let current = s.current();
        if current != acked.current {
            assert_eq!(
                current, in_flight_promote,
                "kill {kill}: current {current:?}, acknowledged {:?}",
                acked.current
            );
            acked.current = current;
        }
        // Every visible, unretired release is whole; acknowledged ones are all there.
        let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
        let list = list.as_array().unwrap();
        for (a, _) in &acked.releases {
            assert!(
                list.iter().any(|r| r["id"] == a.as_str()),
                "kill {kill}: acknowledged release {a} lost"
            );
        }
        for r in list {
            let id = r["id"].as_str().unwrap().to_owned();
            if matches!(r["state"].as_str(), Some("retired" | "collected")) {
                if !acked.retired.contains(&id) {
                    acked.retired.push(id);
                }
                continue;
            }
            let app = match acked.releases.iter().find(|(a, _)| *a == id) {
                Some((_, app)) => app.clone(),
                None => {
                    // Registered, but the acknowledgement died with the server.
                    let app = &apps[app_of_release(&s, &id, &apps, &format!("kill {kill}"))];
                    acked.releases.push((id.clone(), app.path().to_path_buf()));
                    app.path().to_path_buf()
                }
            };
            assert_serves(&s, &app, &id, None);
        }
        let fsck = s.cli(&["fsck", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&fsck.stdout).unwrap();
        let problems: Vec<&serde_json::Value> = report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| !matches!(p["kind"].as_str(), Some("orphan-blob" | "leftover-upload")))
            .collect();
        assert!(problems.is_empty(), "kill {kill}: {problems:?}");
    }
    eprintln!(
        "50 kills ({kills_by_op:?}): {} releases acknowledged, {} retired, current {:?}",
        acked.releases.len(),
        acked.retired.len(),
        acked.current
    );
}
