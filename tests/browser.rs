//! What the gateway offers the browser beyond plain serving: the
//! rename-aware release diff, `Referer` pins, and the opt-in service worker
//! with its kill switch; over real HTTP against the real binary.

use std::path::Path;

use crate::support::Server;
use reqwest::header;

/// Writes a release directory from (path, content) pairs.
fn release(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, body) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    dir
}

/// A Vite-shaped build: the entry names the lazy chunk and its stylesheet,
/// the lazy chunk imports the entry; `css`, `js` and `hashes` vary it.
fn vite_build(hashes: [&str; 4], colour: &str, code: &str) -> tempfile::TempDir {
    let [entry, entry_css, lazy, lazy_css] = hashes;
    release(&[
        (
            "index.html",
            &format!("<html><head><script type=module src=\"/assets/index-{entry}.js\"></script><link rel=stylesheet href=\"/assets/index-{entry_css}.css\"></head></html>"),
        ),
        (
            &format!("assets/index-{entry}.js"),
            &format!("{code};const d=[\"assets/About-{lazy}.js\",\"assets/About-{lazy_css}.css\"]"),
        ),
        (
            &format!("assets/About-{lazy}.js"),
            &format!("import{{a}}from\"./index-{entry}.js\";{code}"),
        ),
        (&format!("assets/index-{entry_css}.css"), &format!("body{{color:{colour}}}")),
        (&format!("assets/About-{lazy_css}.css"), &format!(".about{{color:{colour}}}")),
        ("banner.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
    ])
}

fn diff(s: &Server, from: &str, to: &str) -> serde_json::Value {
    let resp = s
        .get(&format!("/_skewless/diff?from={from}&to={to}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().unwrap()
}

#[test]
fn a_renamed_stylesheet_cascade_is_a_stylesheet_only_diff() {
    let s = Server::start();
    let v1 = vite_build(
        ["AAAA1111", "BBBB2222", "CCCC3333", "DDDD4444"],
        "red",
        "run()",
    );
    // Only colours changed: every file is renamed, nothing else differs.
    let v2 = vite_build(
        ["EEEE5555", "FFFF6666", "GGGG7777", "HHHH8888"],
        "blue",
        "run()",
    );
    // Code changed too.
    let v3 = vite_build(
        ["JJJJ1111", "KKKK2222", "LLLL3333", "MMMM4444"],
        "green",
        "walk()",
    );
    s.deploy(v1.path(), "v1", true);
    s.deploy(v2.path(), "v2", true);
    s.deploy(v3.path(), "v3", false);

    let d = diff(&s, "v1", "v2");
    assert_eq!(d["only_stylesheets"], true, "{d}");
    assert_eq!(d["from"], "v1");
    assert_eq!(d["changed"], serde_json::json!(["/index.html"]));
    assert_eq!(d["added"], serde_json::json!([]));
    assert_eq!(
        d["renamed"]["/assets/About-DDDD4444.css"],
        "/assets/About-HHHH8888.css"
    );
    assert_eq!(
        d["renamed"]["/assets/index-AAAA1111.js"],
        "/assets/index-EEEE5555.js"
    );
    assert_eq!(d["stylesheets"].as_array().unwrap().len(), 2);
    // Asked again (served from what was computed once), the same answer.
    assert_eq!(diff(&s, "v1", "v2"), d);

    let d = diff(&s, "v2", "v3");
    assert_eq!(d["only_stylesheets"], false, "{d}");
    assert_eq!(d["renamed"].as_object().unwrap().len(), 4);
}

#[test]
fn a_referer_under_a_release_pins_what_the_page_loads_by_itself() {
    let s = Server::start();
    let v1 = release(&[("index.html", "<p>1"), ("banner.svg", "<svg>1</svg>")]);
    let v2 = release(&[("index.html", "<p>2"), ("banner.svg", "<svg>2</svg>")]);
    s.deploy(v1.path(), "v1", true);
    s.deploy(v2.path(), "v2", true);
    let host = s.url.trim_start_matches("http://").to_owned();
    let get = |referer: Option<&str>| {
        let mut req = s
            .get("/banner.svg")
            .header(header::COOKIE, "skewless_release=v2");
        if let Some(r) = referer {
            req = req.header(header::REFERER, r);
        }
        let resp = req.send().unwrap();
        resp.headers()["skewless-served-by"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // A stylesheet or module of v1 asked for it: v1's file, whatever the cookie.
    assert_eq!(
        get(Some(&format!("http://{host}/_r/v1/assets/x.css"))),
        "v1"
    );
    // A page outside /_r/, another host: the cookie decides.
    assert_eq!(get(Some(&format!("http://{host}/settings"))), "v2");
    assert_eq!(get(Some("http://elsewhere.test/_r/v1/x.css")), "v2");
    assert_eq!(get(None), "v2");
    // The header still wins over both.
    let resp = s
        .get("/banner.svg")
        .header("skewless-release", "v2")
        .header(header::REFERER, format!("http://{host}/_r/v1/x.css"))
        .send()
        .unwrap();
    assert_eq!(resp.headers()["skewless-served-by"], "v2");
    // The stamp judges the release the answer came from: under a minimum
    // of v2, a file v1's stylesheet asked for says v1 must upgrade, though
    // the cookie names v2.
    s.ok(&["require", "v2"]);
    let resp = s
        .get("/banner.svg")
        .header(header::COOKIE, "skewless_release=v2")
        .header(header::REFERER, format!("http://{host}/_r/v1/x.css"))
        .send()
        .unwrap();
    assert_eq!(resp.headers()["skewless-served-by"], "v1");
    assert_eq!(resp.headers()["skewless-required"], "v2");
    let resp = s
        .get("/banner.svg")
        .header(header::COOKIE, "skewless_release=v2")
        .send()
        .unwrap();
    assert!(resp.headers().get("skewless-required").is_none());
}

fn script(s: &Server, path: &str) -> (reqwest::header::HeaderMap, String) {
    let resp = s.get(path).send().unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let headers = resp.headers().clone();
    (headers, resp.text().unwrap())
}

#[test]
fn the_service_worker_may_control_the_origin_and_has_a_kill_switch() {
    let s = Server::start();
    let (h, body) = script(&s, "/_skewless/sw.js");
    assert_eq!(h["service-worker-allowed"], "/");
    assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert!(body.contains("importScripts('/_skewless/sw-pin.js')"));
    let (_, pin) = script(&s, "/_skewless/sw-pin.js");
    assert!(pin.contains("skewlessPin") && !pin.starts_with("self.skewlessOff"));
    let etag = h[header::ETAG].clone();
    let again = s
        .get("/_skewless/sw.js")
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .unwrap();
    assert_eq!(again.status(), 304);

    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("skewless.toml");
    std::fs::write(&config, "service_worker = false\n").unwrap();
    let off = Server::start_with(data, &["--config", path(&config)]);
    let (h, body) = script(&off, "/_skewless/sw.js");
    assert!(body.starts_with("self.skewlessOff = true;\n"), "{body}");
    assert_ne!(
        h[header::ETAG],
        etag,
        "a changed script, so browsers update"
    );
    let (_, pin) = script(&off, "/_skewless/sw-pin.js");
    assert!(pin.starts_with("self.skewlessOff = true;\n"));
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}
