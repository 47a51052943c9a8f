//! `skewless fsck`: through a running server, and on a stopped server's
//! data directory.

use reqwest::header;

use crate::support::{example, free_port, Server, TOKEN};

#[test]
fn fsck_reports_and_repairs_without_changing_anything_otherwise() {
    let s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    let clean: serde_json::Value = serde_json::from_str(&s.ok(&["fsck", "--json"])).unwrap();
    assert_eq!(clean["ok"], true, "{clean}");
    assert!(clean["blobs"].as_u64().unwrap() >= 6);
    // Damage the store: corrupt one blob, delete a variant.
    let css = std::fs::read(example("v1").join("style.css")).unwrap();
    let h = blake3::hash(&css).to_hex().to_string();
    let blob = s.data.path().join("blobs").join(&h[..2]).join(&h);
    std::fs::write(&blob, b"tampered").unwrap();
    let js = std::fs::read(example("v1").join("assets/index-4f1c9a2e.js")).unwrap();
    let hj = blake3::hash(&js).to_hex().to_string();
    std::fs::remove_file(
        s.data
            .path()
            .join("blobs")
            .join(&hj[..2])
            .join(format!("{hj}.br")),
    )
    .unwrap();
    let before = std::fs::read_dir(s.data.path().join("blobs").join(&hj[..2]))
        .unwrap()
        .count();

    let out = s.cli(&["fsck", "--json"]);
    assert!(
        !out.status.success(),
        "fsck must fail when it finds problems"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"corrupt-blob") && kinds.contains(&"missing-variant"),
        "{report}"
    );
    // Without --repair nothing changed.
    assert_eq!(std::fs::read(&blob).unwrap(), b"tampered");
    assert_eq!(
        std::fs::read_dir(s.data.path().join("blobs").join(&hj[..2]))
            .unwrap()
            .count(),
        before
    );
    let human = String::from_utf8_lossy(&s.cli(&["fsck"]).stdout).into_owned();
    assert!(
        human.contains("corrupt-blob") && human.contains("problems found"),
        "{human}"
    );

    let repaired: serde_json::Value =
        serde_json::from_str(&s.ok(&["fsck", "--repair", "--json"])).unwrap();
    assert_eq!(repaired["ok"], true, "{repaired}");
    assert!(!blob.exists(), "the corrupt blob is deleted");
    // A redeploy of the same files uploads the deleted blob again: whole again.
    s.deploy(&example("v1"), "v1b", false);
    let again: serde_json::Value = serde_json::from_str(&s.ok(&["fsck", "--json"])).unwrap();
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(
        s.get("/_r/v1/style.css").send().unwrap().bytes().unwrap(),
        css
    );
    let br = s
        .get("/_r/v1/assets/index-4f1c9a2e.js")
        .header(header::ACCEPT_ENCODING, "br")
        .send()
        .unwrap();
    assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
}

#[test]
fn fsck_with_data_checks_and_repairs_a_stopped_servers_store() {
    let mut s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    let dir = s.data.path().to_str().unwrap().to_owned();
    // While the server runs, fsck with `--data` goes through it (and a second
    // server cannot take the directory).
    let online = std::process::Command::new(crate::support::bin())
        .args(["fsck", "--json", "--data", &dir])
        .env("SKEWLESS_SERVER", &s.url)
        .env("SKEWLESS_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(online.status.success(), "{online:?}");
    assert!(
        String::from_utf8_lossy(&online.stderr).is_empty(),
        "{online:?}"
    );
    let second = std::process::Command::new(crate::support::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data", &dir])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.trim_end().lines().count() == 1
            && err.contains("is in use by another skewless process"),
        "{err}"
    );
    s.kill9();

    // Damage the stopped server's store.
    let css = std::fs::read(example("v1").join("style.css")).unwrap();
    let h = blake3::hash(&css).to_hex().to_string();
    let blob = s.data.path().join("blobs").join(&h[..2]).join(&h);
    std::fs::write(&blob, b"tampered").unwrap();
    // No server answers: the check runs on the files themselves.
    let offline = |extra: &[&str]| {
        std::process::Command::new(crate::support::bin())
            .args(["fsck", "--json", "--data", &dir])
            .args(extra)
            .env(
                "SKEWLESS_SERVER",
                format!("http://127.0.0.1:{}", free_port()),
            )
            .env_remove("SKEWLESS_TOKEN")
            .output()
            .unwrap()
    };
    let out = offline(&[]);
    assert!(!out.status.success(), "problems found: {out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let corrupt: Vec<&serde_json::Value> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "corrupt-blob")
        .collect();
    assert_eq!(corrupt.len(), 1, "{report}");
    assert_eq!(corrupt[0]["hash"], h.as_str());
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        b"tampered",
        "unchanged without --repair"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("directly"));

    let fixed = offline(&["--repair"]);
    assert!(fixed.status.success(), "{fixed:?}");
    let report: serde_json::Value = serde_json::from_slice(&fixed.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(!blob.exists(), "the corrupt blob is deleted");

    // The server starts again on the repaired directory, and a redeploy makes
    // the release whole.
    s.crash_and_restart();
    s.deploy(&example("v1"), "v1b", false);
    assert_eq!(
        s.get("/_r/v1/style.css").send().unwrap().bytes().unwrap(),
        css
    );
    let clean: serde_json::Value = serde_json::from_str(&s.ok(&["fsck", "--json"])).unwrap();
    assert_eq!(clean["ok"], true, "{clean}");
}
