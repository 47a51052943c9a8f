//! The admin API and the CLI commands over it: auth, promote, rollback,
//! retire, gc, releases, status, history.

use crate::support::{example, Server};
use reqwest::Method;

#[test]
fn admin_calls_need_the_token() {
    let s = Server::start();
    let calls = [
        (Method::GET, "/status"),
        (Method::GET, "/releases"),
        (Method::POST, "/releases"),
        (Method::POST, "/releases/v1/promote"),
        (Method::POST, "/rollback"),
        (Method::POST, "/gc"),
        (Method::GET, "/history"),
        (Method::PUT, &format!("/blobs/{}", "a".repeat(64))),
    ];
    for (method, path) in calls {
        let url = format!("{}/_skewless/api/v1{path}", s.url);
        let none = s.http.request(method.clone(), &url).send().unwrap();
        assert_eq!(none.status(), 401, "{method} {path} without token");
        assert!(none.headers().contains_key("www-authenticate"));
        assert!(none.text().unwrap().contains("\"error\""));
        let wrong = s
            .http
            .request(method.clone(), &url)
            .bearer_auth("wrong")
            .send()
            .unwrap();
        assert_eq!(wrong.status(), 401, "{method} {path} with a wrong token");
        let basic = s
            .http
            .request(method.clone(), &url)
            .basic_auth("admin", Some(crate::support::TOKEN))
            .send()
            .unwrap();
        assert_eq!(basic.status(), 401, "{method} {path} with basic auth");
    }
    let err = {
        let out = std::process::Command::new(crate::support::bin())
            .args(["status", "--server", &s.url, "--token", "wrong"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(err.contains("401") && err.contains("token"), "{err}");
}

#[test]
fn generated_token_is_private_and_used_by_the_cli() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::support::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env_remove("SKEWLESS_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .trim_start_matches("skewless listening on ")
        .to_owned();
    let token_path = data.path().join("admin-token");
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(token.trim().len() >= 32);
    // The CLI finds the token through --data.
    let out = std::process::Command::new(crate::support::bin())
        .args(["status", "--json", "--server", &url, "--data"])
        .arg(data.path())
        .env_remove("SKEWLESS_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
    // The server said where the token is, never what it is.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("admin-token"), "{stderr}");
    assert!(
        !stderr.contains(token.trim()),
        "the token must not be printed"
    );
}

#[test]
fn promote_and_rollback() {
    let s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    s.deploy(&example("v2"), "v2", false);
    // Unknown release: 404, pointer unchanged.
    let err = s.fails(&["promote", "nope"]);
    assert!(
        err.contains("does not exist") && err.contains("404"),
        "{err}"
    );
    assert_eq!(s.current().as_deref(), Some("v1"));
    let err = s.fails(&["promote", "bad/id"]);
    assert!(err.contains("invalid release id"), "{err}");

    let out = s.ok(&["promote", "v2"]);
    assert!(out.contains("v2 is current"), "{out}");
    assert_eq!(s.current().as_deref(), Some("v2"));
    let out = s.ok(&["rollback"]);
    assert!(out.contains("v1"), "{out}");
    assert_eq!(s.current().as_deref(), Some("v1"));
    // v1 was the first release made current: nothing before it.
    let err = s.fails(&["rollback"]);
    assert!(err.contains("nothing to roll back to"), "{err}");
    assert_eq!(s.current().as_deref(), Some("v1"));

    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["current"], "v1");
    assert_eq!(status["generation"], 3);
    assert_eq!(status["releases"]["draining"], 1);
    let human = s.ok(&["status"]);
    assert!(
        human.contains("current:") && human.contains("v1"),
        "{human}"
    );
}

#[test]
fn retire_and_gc_delete_only_what_no_release_needs() {
    let s = Server::start();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [a.path(), b.path()] {
        std::fs::write(
            d.join("index.html"),
            "<head></head><script src=/shared.js></script>",
        )
        .unwrap();
        crate::support::write_file(&d.join("shared.js"), 4096, 1);
    }
    crate::support::write_file(&a.path().join("only-a.bin"), 8192, 2);
    crate::support::write_file(&b.path().join("only-b.bin"), 8192, 3);
    s.deploy(a.path(), "a", true);
    s.deploy(b.path(), "b", true);

    let err = s.fails(&["retire", "b"]);
    assert!(err.contains("current") && err.contains("409"), "{err}");
    s.ok(&["retire", "a"]);
    assert_eq!(s.get("/_r/a/only-a.bin").send().unwrap().status(), 404);

    let blob_count = || {
        walk(&s.data.path().join("blobs"))
            .into_iter()
            .filter(|p| {
                p.parent()
                    .and_then(|d| d.file_name())
                    .is_some_and(|n| n != "tmp")
            })
            .count()
    };
    let before = blob_count();
    let dry: serde_json::Value =
        serde_json::from_str(&s.ok(&["gc", "--dry-run", "--json"])).unwrap();
    assert_eq!(dry["dry_run"], true);
    // a's unique blobs: only-a.bin and a's rewritten shell (its original
    // index.html is the same bytes as b's).
    assert_eq!(dry["blobs"].as_array().unwrap().len(), 2, "{dry}");
    assert!(dry["bytes"].as_u64().unwrap() >= 8192);
    assert_eq!(blob_count(), before, "dry run deletes nothing");
    let human = s.ok(&["gc", "--dry-run"]);
    assert!(human.contains("would delete 2 blobs"), "{human}");

    let done: serde_json::Value = serde_json::from_str(&s.ok(&["gc", "--json"])).unwrap();
    assert_eq!(done["collected_releases"], serde_json::json!(["a"]));
    assert_eq!(done["blobs"].as_array().unwrap().len(), 2);
    assert!(blob_count() < before);
    // b still serves everything, shared blob included.
    for p in ["/_r/b/shared.js", "/_r/b/only-b.bin", "/"] {
        assert_eq!(s.get(p).send().unwrap().status(), 200, "{p}");
    }
    let again: serde_json::Value = serde_json::from_str(&s.ok(&["gc", "--json"])).unwrap();
    assert_eq!(again["blobs"].as_array().unwrap().len(), 0);

    let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
    let states: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![("a", "collected"), ("b", "current")]);
    let table = s.ok(&["releases"]);
    assert!(
        table.starts_with("ID") && table.contains("collected"),
        "{table}"
    );

    let history: serde_json::Value = serde_json::from_str(&s.ok(&["history", "--json"])).unwrap();
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["deploy", "promote", "deploy", "promote", "retire", "collect", "gc", "gc"]
    );
    assert!(s.ok(&["history"]).contains("retire"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
