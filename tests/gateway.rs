//! The gateway's request resolution and HTTP behaviour, driven over real HTTP
//! against the real binary with the example app deployed through the CLI.

use std::io::Read;
use std::time::Duration;

use crate::support::{example, raw_get, wait_for, Server};
use reqwest::header;

fn two_releases() -> Server {
    let s = Server::start();
    s.deploy(&example("v1"), "v1", true);
    s.deploy(&example("v2"), "v2", false);
    s
}

fn text(resp: reqwest::blocking::Response) -> String {
    resp.text().expect("body")
}

#[test]
fn shell_is_rewritten_and_served_for_navigations() {
    let s = two_releases();
    let resp = s
        .get("/inbox/42")
        .header(header::ACCEPT, "text/html")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["skewless-current"], "v1");
    assert_eq!(h["skewless-served-by"], "v1");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(h[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .starts_with("skewless_release=v1;"));
    assert!(h.contains_key(header::ETAG));
    let body = text(resp);
    assert!(body.contains(r#"<meta name="skewless-release" content="v1"><script type="module" src="/_skewless/client.js"></script>"#), "{body}");
    assert!(body.contains(r#"src="/_r/v1/assets/index-4f1c9a2e.js""#));
    assert!(body.contains(r#"href="/_r/v1/style.css""#));
    assert!(
        body.contains(r#"<a href="/inbox/42">"#),
        "navigation links stay as they are"
    );

    // Sec-Fetch-Mode: navigate counts as a navigation whatever Accept says.
    let resp = s
        .get("/settings")
        .header("sec-fetch-mode", "navigate")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A fetch() of a path that is no file is a 404, not the shell.
    let resp = s
        .get("/settings")
        .header("sec-fetch-mode", "cors")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["skewless-current"], "v1");
    assert!(text(resp).contains("\"error\""));
    let resp = s.get("/missing.js").send().unwrap();
    assert_eq!(resp.status(), 404);

    // After promotion a navigation, even from a v1-pinned tab, gets the v2 shell.
    s.ok(&["promote", "v2"]);
    let resp = s
        .get("/")
        .header(header::ACCEPT, "text/html")
        .header("skewless-release", "v1")
        .header(header::COOKIE, "skewless_release=v1")
        .send()
        .unwrap();
    assert_eq!(resp.headers()["skewless-served-by"], "v2");
    assert!(text(resp).contains(r#"content="v2""#));
}

#[test]
fn versioned_assets_are_exact_and_immutable() {
    let s = two_releases();
    let resp = s.get("/_r/v1/style.css").send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert_eq!(resp.headers()["skewless-served-by"], "v1");
    assert_eq!(
        text(resp),
        std::fs::read_to_string(example("v1").join("style.css")).unwrap()
    );
    // v2 is uploaded, not current: still reachable by its URL prefix.
    let body = text(s.get("/_r/v2/style.css").send().unwrap());
    assert_eq!(
        body,
        std::fs::read_to_string(example("v2").join("style.css")).unwrap()
    );
    // A release's URL prefix never serves another release's file.
    assert_eq!(
        s.get("/_r/v1/assets/chunk-details-e81f0a4c.js")
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(s.get("/_r/nope/style.css").send().unwrap().status(), 404);
    assert_eq!(
        s.get("/_r/v1/logo.svg").send().unwrap().headers()[header::CONTENT_TYPE],
        "image/svg+xml"
    );
    let js = s.get("/_r/v1/assets/index-4f1c9a2e.js").send().unwrap();
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
}

#[test]
fn pins_choose_the_release_and_unknown_pins_are_ignored() {
    let s = two_releases();
    s.ok(&["promote", "v2"]);
    let v1_css = std::fs::read_to_string(example("v1").join("style.css")).unwrap();
    let v2_css = std::fs::read_to_string(example("v2").join("style.css")).unwrap();
    let by_header = s
        .get("/style.css")
        .header("skewless-release", "v1")
        .send()
        .unwrap();
    assert_eq!(by_header.headers()["skewless-served-by"], "v1");
    assert_eq!(by_header.headers()["skewless-current"], "v2");
    assert_eq!(by_header.headers()[header::CACHE_CONTROL], "no-cache");
    assert!(by_header.headers()[header::VARY]
        .to_str()
        .unwrap()
        .contains("Skewless-Release"));
    assert_eq!(text(by_header), v1_css);
    let by_cookie = s
        .get("/style.css")
        .header(header::COOKIE, "a=b; skewless_release=v1")
        .send()
        .unwrap();
    assert_eq!(text(by_cookie), v1_css);
    // Header beats cookie.
    let both = s
        .get("/style.css")
        .header("skewless-release", "v2")
        .header(header::COOKIE, "skewless_release=v1")
        .send()
        .unwrap();
    assert_eq!(text(both), v2_css);
    assert_eq!(text(s.get("/style.css").send().unwrap()), v2_css);
    // Unknown, malformed pins: served as unpinned, never an error page.
    for pin in ["nope", "../../etc", "v1 v2", ""] {
        let resp = s
            .get("/style.css")
            .header("skewless-release", pin)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "pin {pin:?}");
        assert_eq!(text(resp), v2_css, "pin {pin:?}");
    }
}

#[test]
fn old_lazy_chunks_load_after_any_number_of_deploys() {
    let s = two_releases();
    s.ok(&["promote", "v2"]);
    let chunk = "/assets/chunk-details-7b3e5d10.js";
    let v1_chunk = std::fs::read_to_string(example("v1").join(&chunk[1..])).unwrap();
    // Three more releases that lack v1's chunk.
    for id in ["v3", "v4", "v5"] {
        s.deploy(&example("v2"), id, true);
    }
    let resp = s.get(chunk).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["skewless-served-by"], "v1");
    assert_eq!(
        resp.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(text(resp), v1_chunk);
    assert_eq!(
        text(s.get(&format!("/_r/v1{chunk}")).send().unwrap()),
        v1_chunk
    );
    // A non-hashed file that only an old release had does not fall back.
    // Once v1 is retired its chunk is gone.
    s.ok(&["retire", "v1"]);
    assert_eq!(s.get(chunk).send().unwrap().status(), 404);
    assert_eq!(
        s.get(&format!("/_r/v1{chunk}")).send().unwrap().status(),
        404
    );
}

#[test]
fn conditional_range_head_and_encodings() {
    let s = two_releases();
    let path = "/_r/v1/style.css";
    let original = std::fs::read(example("v1").join("style.css")).unwrap();

    let resp = s.get(path).send().unwrap();
    let etag = resp.headers()[header::ETAG].clone();
    assert_eq!(resp.headers()[header::VARY], "Accept-Encoding");
    assert_eq!(resp.headers()[header::ACCEPT_RANGES], "bytes");
    assert!(resp.headers().get(header::CONTENT_ENCODING).is_none());
    let not_modified = s
        .get(path)
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["skewless-current"], "v1");
    assert!(text(not_modified).is_empty());
    let shell = s
        .get("/")
        .header(header::ACCEPT, "text/html")
        .send()
        .unwrap();
    let shell_etag = shell.headers()[header::ETAG].clone();
    let shell_304 = s
        .get("/")
        .header(header::ACCEPT, "text/html")
        .header(header::IF_NONE_MATCH, shell_etag)
        .send()
        .unwrap();
    assert_eq!(shell_304.status(), 304);

    // br and gzip from the precompressed variants, each with its own ETag.
    let br = s
        .get(path)
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .send()
        .unwrap();
    assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
    assert_ne!(br.headers()[header::ETAG], etag);
    let mut decoded = Vec::new();
    brotli::Decompressor::new(&br.bytes().unwrap()[..], 4096)
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, original);
    let gz = s
        .get(path)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .unwrap();
    assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz.bytes().unwrap()[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, original);
    let refused = s
        .get(path)
        .header(header::ACCEPT_ENCODING, "br;q=0, gzip;q=0")
        .send()
        .unwrap();
    assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());

    // Range: identity bytes, 206 with Content-Range; unsatisfiable: 416.
    let part = s
        .get(path)
        .header(header::RANGE, "bytes=5-14")
        .header(header::ACCEPT_ENCODING, "br")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()[header::CONTENT_RANGE],
        format!("bytes 5-14/{}", original.len())
    );
    assert!(part.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(&part.bytes().unwrap()[..], &original[5..15]);
    let tail = s
        .get(path)
        .header(header::RANGE, "bytes=-4")
        .send()
        .unwrap();
    assert_eq!(&tail.bytes().unwrap()[..], &original[original.len() - 4..]);
    let bad = s
        .get(path)
        .header(header::RANGE, format!("bytes={}-", original.len() + 10))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 416);
    assert_eq!(
        bad.headers()[header::CONTENT_RANGE],
        format!("bytes */{}", original.len())
    );

    // HEAD: headers and length, no body.
    let head = s.http.head(format!("{}{path}", s.url)).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()[header::CONTENT_LENGTH],
        original.len().to_string().as_str()
    );
    assert!(head.bytes().unwrap().is_empty());
}

#[test]
fn hostile_paths_are_refused() {
    let s = two_releases();
    for path in [
        "/_r/v1/../../etc/passwd",
        "/_r/v1/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/state.db",
        "/_r/v1/..%5c..%5cstate.db",
        "/_r/v1/a\\b",
        "/_r/v1/style.css%00.js",
        "/x%ff",
    ] {
        let (code, body) = raw_get(&s.url, path);
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("\"error\""), "{path}: {body}");
    }
    // Still healthy.
    assert_eq!(s.get("/_r/v1/style.css").send().unwrap().status(), 200);
    let resp = s.http.post(format!("{}/style.css", s.url)).send().unwrap();
    assert_eq!(resp.status(), 405);
}

#[test]
fn version_endpoint_and_event_stream_follow_promotions() {
    let s = two_releases();
    let resp = s.get("/_skewless/version?release=v1").send().unwrap();
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
    let etag = resp.headers()[header::ETAG].clone();
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["current"], "v1");
    assert_eq!(v["required"], false);
    let generation = v["generation"].as_u64().unwrap();
    assert_eq!(
        s.get("/_skewless/version")
            .header(header::IF_NONE_MATCH, etag.clone())
            .send()
            .unwrap()
            .status(),
        304
    );

    let mut streams: Vec<_> = (0..3).map(|_| s.events("v1")).collect();
    for st in &mut streams {
        let (name, data) = st.next_event();
        assert_eq!(name, "release");
        assert!(data.contains("\"current\":\"v1\""), "{data}");
    }
    s.ok(&["promote", "v2"]);
    for st in &mut streams {
        let (name, data) = st.next_event();
        assert_eq!(name, "release");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["current"], "v2");
        assert_eq!(v["generation"].as_u64().unwrap(), generation + 1);
    }
    s.ok(&["rollback"]);
    for st in &mut streams {
        let (_, data) = st.next_event();
        assert!(data.contains("\"current\":\"v1\""), "{data}");
    }
    // The old ETag no longer matches.
    assert_eq!(
        s.get("/_skewless/version")
            .header(header::IF_NONE_MATCH, etag)
            .send()
            .unwrap()
            .status(),
        200
    );

    // A required promotion: v1 streams get `event: required`.
    s.ok(&["promote", "v2", "--required"]);
    let (name, data) = streams[0].next_event();
    assert_eq!(name, "required");
    assert!(data.contains("\"required\":true"), "{data}");
    let v: serde_json::Value = s
        .get("/_skewless/version?release=v1")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (v["required"].as_bool(), v["required_min"].as_str()),
        (Some(true), Some("v2"))
    );
    let v: serde_json::Value = s
        .get("/_skewless/version?release=v2")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["required"], false);
}

#[test]
fn diff_names_the_files_that_differ() {
    let s = two_releases();
    let v: serde_json::Value = s
        .get("/_skewless/diff?from=v1&to=v2")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        list("changed"),
        vec!["/index.html", "/logo.svg", "/style.css"]
    );
    // Content-hashed files renamed between the releases are paired, not
    // listed as added and removed.
    assert!(
        list("added").is_empty() && list("removed").is_empty(),
        "{v}"
    );
    assert_eq!(
        v["renamed"],
        serde_json::json!({
            "/assets/chunk-details-7b3e5d10.js": "/assets/chunk-details-e81f0a4c.js",
            "/assets/index-4f1c9a2e.js": "/assets/index-9d2b6c71.js"
        })
    );
    assert_eq!(v["only_stylesheets"], false);
    assert_eq!(
        s.get("/_skewless/diff?from=v1&to=zz")
            .send()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn every_response_names_the_current_release() {
    let s = Server::start();
    // Nothing current yet: a clear 503 for page loads.
    let resp = s
        .get("/")
        .header(header::ACCEPT, "text/html")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(text(resp).contains("no release is current"));
    s.deploy(&example("v1"), "v1", true);
    for path in [
        "/",
        "/_r/v1/style.css",
        "/nope.js",
        "/_skewless/version",
        "/_skewless/nope",
        "/_skewless/client.js",
    ] {
        let resp = s.get(path).send().unwrap();
        assert_eq!(resp.headers()["skewless-current"], "v1", "{path}");
    }
    let unauthorized = s.get("/_skewless/api/v1/status").send().unwrap();
    assert_eq!(unauthorized.headers()["skewless-current"], "v1");
}

#[test]
fn client_library_is_served() {
    let s = Server::start();
    let resp = s.get("/_skewless/client.js").send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
    let etag = resp.headers()[header::ETAG].clone();
    assert!(!text(resp).is_empty());
    let again = s
        .get("/_skewless/client.js")
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .unwrap();
    assert_eq!(again.status(), 304);
}

#[test]
fn event_stream_sees_promotion_from_a_second_client_quickly() {
    let s = two_releases();
    let mut st = s.events("v1");
    st.next_event();
    let started = std::time::Instant::now();
    s.ok(&["promote", "v2"]);
    let (_, data) = st.next_event();
    assert!(data.contains("v2"));
    wait_for(
        "the version endpoint to agree",
        Duration::from_secs(5),
        || s.current().as_deref() == Some("v2"),
    );
    eprintln!(
        "promotion reached the stream {:?} after the CLI started",
        started.elapsed()
    );
}

#[test]
fn event_streams_speak_http_1_0_and_refuse_oversized_heads() {
    use std::io::{BufRead, BufReader, Write};
    let s = two_releases();
    let addr = s.url.trim_start_matches("http://").to_owned();

    // HTTP/1.0 has no chunked bodies: the events come as they are, and the
    // body ends with the connection.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /_skewless/events?release=v1 HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(c);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    assert!(head[0].contains(" 200 "), "{head:?}");
    assert!(
        head.contains(&"content-type: text/event-stream".into()),
        "{head:?}"
    );
    assert!(head.contains(&"connection: close".into()), "{head:?}");
    assert!(
        !head.iter().any(|h| h.starts_with("transfer-encoding")),
        "{head:?}"
    );
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    assert_eq!(first, "event: release\n");
    s.ok(&["promote", "v2"]);
    let mut seen = String::new();
    while !seen.contains("\"current\":\"v2\"") {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "stream closed: {seen}");
        assert!(
            !line.ends_with("\r\n"),
            "chunk framing in HTTP/1.0: {line:?}"
        );
        seen.push_str(&line);
    }

    // A header line over 8 KiB is refused as soon as it is seen, before the
    // head ends; so is a head of short lines that reaches 32 KiB.
    let refused = |head: Vec<u8>| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(&head).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    };
    let mut big = b"GET /_skewless/events HTTP/1.1\r\nx-pad: ".to_vec();
    big.resize(16 * 1024, b'a');
    let answer = refused(big);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(
        answer.contains("header line is longer than 8 KiB"),
        "{answer}"
    );
    let mut many = b"GET /_skewless/events HTTP/1.1\r\n".to_vec();
    while many.len() < 40 * 1024 {
        many.extend_from_slice(
            format!("x-pad-{}: {}\r\n", many.len(), "a".repeat(1000)).as_bytes(),
        );
    }
    let answer = refused(many);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(
        answer.contains("request head is larger than 32 KiB"),
        "{answer}"
    );
}
