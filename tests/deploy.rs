//! `skewless deploy`: content-addressed uploads, bad input, and that nothing
//! acknowledged is ever overwritten.

use std::path::Path;

use crate::support::{example, generate_app, write_file, Server, TOKEN};

fn deploy_json(s: &Server, dir: &Path, id: &str) -> serde_json::Value {
    let out = s.ok(&["deploy", dir.to_str().unwrap(), "--release", id, "--json"]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn second_deploy_uploads_only_what_changed() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // 200 files of 20 KiB; then change 2 of them (1 %).
    generate_app(dir.path(), 200, 20 * 1024, 1);
    let first = deploy_json(&s, dir.path(), "r1");
    assert_eq!(first["files"], 201);
    assert_eq!(first["uploaded_files"], 201);
    let total = first["bytes"].as_u64().unwrap();
    write_file(&dir.path().join("assets/f10.bin"), 20 * 1024, 9_000);
    write_file(&dir.path().join("assets/f20.bin"), 20 * 1024, 9_001);
    let second = deploy_json(&s, dir.path(), "r2");
    assert_eq!(second["uploaded_files"], 2);
    let uploaded = second["uploaded_bytes"].as_u64().unwrap();
    assert_eq!(uploaded, 2 * 20 * 1024);
    eprintln!(
        "second deploy uploaded {uploaded} of {total} bytes ({:.2} %)",
        uploaded as f64 * 100.0 / total as f64
    );
    // Both releases serve their own bytes.
    let r1 = s
        .get("/_r/r1/assets/f10.bin")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let r2 = s
        .get("/_r/r2/assets/f10.bin")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_ne!(r1, r2);
    assert_eq!(
        &r2[..],
        &std::fs::read(dir.path().join("assets/f10.bin")).unwrap()[..]
    );
    // An identical third deploy uploads nothing.
    let third = deploy_json(&s, dir.path(), "r3");
    assert_eq!(third["uploaded_files"], 0);
}

#[test]
fn generated_ids_are_valid_and_printed() {
    let s = Server::start();
    let out = s.ok(&["deploy", example("v1").to_str().unwrap(), "--promote"]);
    let id = out.trim();
    assert!(!id.is_empty() && id.len() <= 64, "{id}");
    assert_eq!(s.current().as_deref(), Some(id));
}

#[test]
fn bad_deploys_fail_clearly_and_change_nothing() {
    let s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    let original = s.get("/_r/v1/style.css").send().unwrap().text().unwrap();

    // No index.html.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("app.js"), "x").unwrap();
    let err = s.fails(&["deploy", empty.path().to_str().unwrap()]);
    assert!(err.contains("no index.html"), "{err}");

    // Not a directory.
    let err = s.fails(&["deploy", "/nonexistent/skewless/dir"]);
    assert!(err.contains("/nonexistent/skewless/dir"), "{err}");

    // A symlink escaping the directory.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("index.html"), "<p>hi</p>").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        app.path().join("leak.txt"),
    )
    .unwrap();
    let err = s.fails(&["deploy", app.path().to_str().unwrap(), "--release", "leaky"]);
    assert!(err.contains("leak.txt") && err.contains("outside"), "{err}");
    // A symlinked directory escaping, too.
    std::fs::remove_file(app.path().join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), app.path().join("linked")).unwrap();
    let err = s.fails(&["deploy", app.path().to_str().unwrap(), "--release", "leaky"]);
    assert!(err.contains("outside"), "{err}");
    // A symlink inside the directory is fine.
    std::fs::remove_file(app.path().join("linked")).unwrap();
    std::fs::write(app.path().join("real.txt"), "real").unwrap();
    std::os::unix::fs::symlink(app.path().join("real.txt"), app.path().join("alias.txt")).unwrap();
    s.deploy(app.path(), "inside-link", false);
    assert_eq!(
        s.get("/_r/inside-link/alias.txt")
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "real"
    );

    // Ids that break the rule.
    for bad in ["has space", "a/b", "..", &"x".repeat(65)] {
        let err = s.fails(&["deploy", example("v2").to_str().unwrap(), "--release", bad]);
        assert!(err.contains("invalid release id"), "{bad}: {err}");
    }

    // An id that exists: 409, nothing overwritten.
    let err = s.fails(&["deploy", example("v2").to_str().unwrap(), "--release", "v1"]);
    assert!(
        err.contains("already exists") && err.contains("409"),
        "{err}"
    );
    assert_eq!(
        s.get("/_r/v1/style.css").send().unwrap().text().unwrap(),
        original
    );

    // A back end that is not http(s).
    let err = s.fails(&[
        "deploy",
        example("v2").to_str().unwrap(),
        "--release",
        "v9",
        "--backend",
        "ftp://x",
    ]);
    assert!(err.contains("http"), "{err}");

    // Nothing of the failed deploys is visible.
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["v1", "inside-link"]);
    assert_eq!(s.current().as_deref(), Some("v1"));

    // An unreachable server.
    let out = std::process::Command::new(crate::support::bin())
        .args(["status", "--server", "http://127.0.0.1:9", "--token", TOKEN])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[test]
fn blob_uploads_are_verified() {
    let s = Server::start();
    let data = b"console.log('hello')".to_vec();
    let right = blake3::hash(&data).to_hex().to_string();
    let wrong = blake3::hash(b"something else").to_hex().to_string();
    let resp = s
        .admin(reqwest::Method::PUT, &format!("/blobs/{wrong}"))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body = resp.text().unwrap();
    assert!(body.contains("hash mismatch"), "{body}");
    // Nothing was stored under the wrong hash.
    let missing: serde_json::Value = s
        .admin(reqwest::Method::POST, "/blobs/missing")
        .json(&serde_json::json!({ "hashes": [wrong, right] }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(missing["missing"].as_array().unwrap().len(), 2);
    let resp = s
        .admin(reqwest::Method::PUT, &format!("/blobs/{right}"))
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = s
        .admin(reqwest::Method::PUT, &format!("/blobs/{right}"))
        .body(data)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A malformed hash.
    let resp = s
        .admin(reqwest::Method::PUT, "/blobs/..%2f..%2fstate.db")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Registering a release whose blobs were never uploaded.
    let resp = s
        .admin(reqwest::Method::POST, "/releases")
        .json(&serde_json::json!({ "id": "ghost", "files": [{ "path": "index.html", "hash": "ab".repeat(32), "size": 3 }] }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().unwrap().contains("not uploaded"));
    // A manifest with a traversing path.
    let resp = s
        .admin(reqwest::Method::POST, "/releases")
        .json(&serde_json::json!({ "id": "evil", "files": [
            { "path": "index.html", "hash": right, "size": 20 },
            { "path": "../../etc/passwd", "hash": right, "size": 20 }
        ] }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("invalid file path"));
}

#[test]
fn uploads_past_the_limit_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, url) = {
        use std::io::BufRead;
        let mut child = std::process::Command::new(crate::support::bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-upload",
                "1000",
                "--admin-token",
                TOKEN,
                "--data",
            ])
            .arg(data.path())
            .env("SKEWLESS_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (
            child,
            line.trim()
                .trim_start_matches("skewless listening on ")
                .to_owned(),
        )
    };
    let big = vec![7u8; 5000];
    let hash = blake3::hash(&big).to_hex().to_string();
    let resp = reqwest::blocking::Client::new()
        .put(format!("{url}/_skewless/api/v1/blobs/{hash}"))
        .bearer_auth(TOKEN)
        .body(big)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp
        .text()
        .unwrap()
        .contains("larger than the upload limit"));
    let _ = child.kill();
    let _ = child.wait();
}
