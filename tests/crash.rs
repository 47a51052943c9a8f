//! `kill -9` at awkward moments: what was acknowledged survives, nothing
//! partial becomes visible.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{example, generate_app, wait_for, Server, TOKEN};

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
        support::write_file(
            &app.path().join("assets/f0.bin"),
            16 * 1024,
            100 + round as u64,
        );
        let before = stored_blobs(s.data.path());
        let child = Command::new(support::bin())
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
