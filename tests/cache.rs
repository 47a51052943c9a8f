//! Nodes reading a shared blob directory through a cache of their own
//! (`--cache-dir`): a registered release is prefetched into every node's
//! cache and served from it byte-for-byte; with the store hanging, cached
//! files are still served and uncached ones answer 503 in bounded time,
//! and everything is served again once the store is back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::cluster::{node, node_args, Database};
use crate::support::{example, wait_for, Server};

/// A release's manifest (path → entry).
fn manifest(s: &Server, release: &str) -> serde_json::Map<String, serde_json::Value> {
    let detail: serde_json::Value = s
        .admin(reqwest::Method::GET, &format!("/releases/{release}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    detail["manifest"].as_object().unwrap().clone()
}

/// Every stored form in a blob directory (or a cache directory, which has
/// the same layout), relative to it.
fn stored(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir).unwrap().flatten() {
        if d.file_name().len() != 2 {
            continue;
        }
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            let name = PathBuf::from(d.file_name()).join(f.file_name());
            if !name.to_string_lossy().ends_with(".raw") {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// Where each stored form of a release's files lies in a blob directory
/// (or a cache directory, which has the same layout).
fn forms(manifest: &serde_json::Map<String, serde_json::Value>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in manifest.values() {
        let hash = e["hash"].as_str().unwrap();
        let dir = PathBuf::from(&hash[..2]);
        out.push(dir.join(hash));
        if e.get("br").is_some_and(|v| !v.is_null()) {
            out.push(dir.join(format!("{hash}.br")));
        }
        if e.get("gzip").is_some_and(|v| !v.is_null()) {
            out.push(dir.join(format!("{hash}.gz")));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A counter or gauge of a node's metrics (0 if absent).
fn metric(s: &Server, name: &str) -> f64 {
    let text = s.get("/_skewless/metrics").send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn fetch(s: &Server, path: &str, encoding: &str) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let r = s
        .get(path)
        .header("accept-encoding", encoding)
        .send()
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.bytes().unwrap().to_vec(), headers)
}

fn decode_br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut brotli::Decompressor::new(data, 4096), &mut out).unwrap();
    out
}

/// Makes the store hang: the blob directory is swapped for one of the same
/// layout whose every file is a FIFO with no writer, so reading any of them
/// blocks, as a store that stopped answering does.
fn hang(blobs: &Path) -> PathBuf {
    let real = blobs.with_extension("real");
    std::fs::rename(blobs, &real).unwrap();
    mirror_as_fifos(&real, blobs);
    real
}

fn mirror_as_fifos(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            mirror_as_fifos(&e.path(), &target);
        } else {
            let ok = Command::new("mkfifo").arg(&target).status().unwrap();
            assert!(ok.success(), "mkfifo {}", target.display());
        }
    }
}

fn restore(blobs: &Path, real: &Path) {
    std::fs::remove_dir_all(blobs).unwrap();
    std::fs::rename(real, blobs).unwrap();
}

#[test]
fn releases_are_prefetched_into_every_cache_and_cached_files_outlive_a_store_outage() {
    let db = Database::create();
    let root = tempfile::tempdir().unwrap();
    let blobs = root.path().join("blobs");
    let cache = |n: &str| root.path().join(format!("cache-{n}"));
    let url = db.url();
    let (c1, c2, c3) = (cache("n1"), cache("n2"), cache("n3"));
    let opts = |c: &Path| {
        vec![
            "--cache-dir".to_owned(),
            c.to_str().unwrap().to_owned(),
            "--blob-timeout-ms".to_owned(),
            "500".to_owned(),
        ]
    };
    let (o1, o2, o3) = (opts(&c1), opts(&c2), opts(&c3));
    let n1 = node(&url, &blobs, "n1", &args(&o1));
    let n2 = node(&url, &blobs, "n2", &args(&o2));

    // Registered through node 1, not promoted: node 2 fetches it anyway.
    n1.deploy(&example("v1"), "v1", false);
    let m = manifest(&n1, "v1");
    // The files and the rewritten shell, each with its compressed forms.
    let wanted = stored(&blobs);
    assert!(forms(&m).iter().all(|f| wanted.contains(f)));
    assert!(wanted.len() > forms(&m).len(), "the shell is stored too");
    assert!(wanted.len() > m.len(), "some files have compressed forms");
    wait_for(
        "node 2 to prefetch every form of v1",
        Duration::from_secs(30),
        || wanted.iter().all(|f| c2.join(f).exists()),
    );
    assert!(metric(&n2, "skewless_cache_fills_total") >= wanted.len() as f64);
    assert_eq!(stored(&c2), wanted);

    n1.ok(&["promote", "v1"]);
    wait_for("node 2 to serve v1", Duration::from_secs(10), || {
        n2.current().as_deref() == Some("v1")
    });
    let shell = fetch(&n1, "/", "identity").1;
    let check_all = |s: &Server| {
        let (status, body, _) = fetch(s, "/", "identity");
        assert_eq!((status, body), (200, shell.clone()), "the shell");
        for path in m
            .keys()
            .filter(|p| !p.ends_with("index.html") && *p != "shell")
        {
            let path = path.trim_start_matches('/');
            let url_path = format!("/{path}");
            let (status, body, _) = fetch(s, &url_path, "identity");
            assert_eq!(status, 200, "{path}");
            let source = std::fs::read(example("v1").join(path)).unwrap();
            assert_eq!(body, source, "{path} byte for byte");
            let (status, body, headers) = fetch(s, &url_path, "br");
            assert_eq!(status, 200, "{path}");
            if headers.get("content-encoding").is_some_and(|v| v == "br") {
                assert_eq!(decode_br(&body), source, "{path} (br)");
            } else {
                assert_eq!(body, source, "{path}");
            }
        }
    };
    check_all(&n2);
    // Everything came from the cache: prefetched, never waited for.
    assert_eq!(metric(&n2, "skewless_cache_misses_total"), 0.0);
    assert!(metric(&n2, "skewless_cache_hits_total") >= m.len() as f64);
    assert!(metric(&n2, "skewless_cache_bytes") > 0.0);

    // The store hangs. Node 2 serves every file from its cache; node 3,
    // started now with an empty cache, answers 503 with Retry-After.
    let real = hang(&blobs);
    check_all(&n2);
    // Even after a crash: the cache is found again on disk.
    let mut n2 = n2;
    let restart = node_args(&url, &blobs, "n2", &args(&o2));
    n2.crash_and_restart_with(&args(&restart));
    wait_for("node 2 to serve v1 again", Duration::from_secs(10), || {
        n2.current().as_deref() == Some("v1")
    });
    check_all(&n2);
    assert_eq!(metric(&n2, "skewless_cache_misses_total"), 0.0);
    assert_eq!(metric(&n2, "skewless_cache_files"), wanted.len() as f64);
    let n3 = node(&url, &blobs, "n3", &args(&o3));
    wait_for("node 3 to serve v1", Duration::from_secs(10), || {
        n3.current().as_deref() == Some("v1")
    });
    let asset = m.keys().find(|p| p.ends_with(".js")).unwrap().clone();
    let (status, body, headers) = fetch(
        &n3,
        &format!("/{}", asset.trim_start_matches('/')),
        "identity",
    );
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(headers.contains_key("retry-after"));
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let why = err["error"].as_str().unwrap();
    assert!(why.contains("blob store") && !why.contains('\n'), "{why}");

    // The store is back: node 3 serves every file (its prefetch retries).
    restore(&blobs, &real);
    wait_for("node 3 to fetch v1 again", Duration::from_secs(60), || {
        wanted.iter().all(|f| c3.join(f).exists())
    });
    check_all(&n3);
    assert!(metric(&n3, "skewless_cache_fill_failures_total") > 0.0);
    drop(n1);
}

/// One node owns a cache directory: a second node given the same one does
/// not start, and says which directory in one line.
#[test]
fn a_cache_directory_belongs_to_one_node() {
    let blobs = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let flags = [
        "--blobs",
        blobs.path().to_str().unwrap(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    let first = Server::start_with(tempfile::tempdir().unwrap(), &flags);
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(crate::support::bin())
        .arg("serve")
        .arg("--data")
        .arg(data.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            crate::support::TOKEN,
        ])
        .args(flags)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second node started on the cache");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("cache directory") && err.contains("in use by another skewless process"),
        "{err}"
    );
    drop(first);
    // Once the first is gone, it may.
    let second = Server::start_with(data, &flags);
    second.deploy(&example("v1"), "v1", true);
    assert_eq!(second.get("/").send().unwrap().status(), 200);
}

#[test]
fn cache_settings_come_from_the_file_env_and_flags_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("skewless.toml");
    std::fs::write(
        &file,
        "blobs = \"/srv/blobs\"\ncache_dir = \"/var/cache/skewless\"\ncache_max_bytes = 1000\n",
    )
    .unwrap();
    let print = |extra: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(crate::support::bin())
            .args(["serve", "--print-config", "--config"])
            .arg(&file)
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), text, err)
    };
    let (ok, text, err) = print(
        &["--blob-timeout-ms", "750"],
        &[("SKEWLESS_CACHE_MAX_BYTES", "2000")],
    );
    assert!(ok, "{err}");
    for want in [
        "cache_dir = \"/var/cache/skewless\"",
        "cache_max_bytes = 2000",
        "blob_timeout_ms = 750",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    for (flags, word) in [
        (&["--cache-dir", "/srv/blobs"][..], "cache_dir"),
        (&["--cache-max-bytes", "0"][..], "cache_max_bytes"),
        (&["--blob-timeout-ms", "0"][..], "blob_timeout_ms"),
    ] {
        let (ok, _, err) = print(flags, &[]);
        assert!(!ok, "{flags:?} accepted");
        assert!(
            err.contains(word) && err.trim().lines().count() == 1,
            "{err}"
        );
    }
}
