//! Deploys under load (about 40 s): many clients, each pinned to the release
//! it booted, request shells, assets and API calls while a release is
//! deployed and promoted every 2 s, with rollbacks and the reaper retiring
//! and collecting drained releases. Zero 5xx, zero 404 for a retained
//! release's file, every answer consistent with its pin.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Backend, Server, TOKEN};
use reqwest::header;

const RUN: Duration = Duration::from_secs(40);
const CLIENTS: usize = 8;

/// What a client may check of a release.
#[derive(Clone)]
struct Known {
    files: Vec<(String, Vec<u8>)>,
    backend: &'static str,
}

fn make_release(n: usize) -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let chunk = format!("assets/chunk-{n:04}abcd{n:04}.js");
    let files = vec![
        ("index.html".to_owned(), format!("<!doctype html><html><head><link rel=stylesheet href=/style.css><script type=module src=/{chunk}></script></head><body>release {n}</body></html>").into_bytes()),
        ("style.css".to_owned(), format!("body {{ --release: {n}; color: #{:06x}; }}\n", n * 7919 % 0xffffff).repeat(20).into_bytes()),
        (chunk, format!("export const release = {n};\n").repeat(50).into_bytes()),
        ("shared/lib-0a1b2c3d.js".to_owned(), b"export const lib = 1;\n".repeat(500)),
    ];
    for (path, bytes) in &files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    (dir, files)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn deploys_under_load_break_no_client() {
    let b1 = Backend::start(1, "b1");
    let b2 = Backend::start(2, "b2");
    let s = Arc::new(Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--keep-last",
            "2",
            "--min-drain-secs",
            "1",
            "--idle-secs",
            "2",
            "--reaper-interval-ms",
            "200",
            "--gc-interval-secs",
            "3",
            "--presence-window-secs",
            "2",
        ],
    ));
    let known: Arc<Mutex<HashMap<String, Known>>> = Arc::default();
    let mut dirs: Vec<tempfile::TempDir> = Vec::new();
    let deploy = |n: usize, dirs: &mut Vec<tempfile::TempDir>| {
        let (dir, files) = make_release(n);
        let (url, name) = if n.is_multiple_of(2) {
            (&b1.url, "b1")
        } else {
            (&b2.url, "b2")
        };
        let id = format!("r{n:03}");
        known.lock().unwrap().insert(
            id.clone(),
            Known {
                files,
                backend: name,
            },
        );
        s.ok(&[
            "deploy",
            dir.path().to_str().unwrap(),
            "--release",
            &id,
            "--backend",
            url,
        ]);
        dirs.push(dir);
        id
    };
    let first = deploy(0, &mut dirs);
    s.ok(&["promote", &first]);

    let stop = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (s, known, stop, latencies) =
                (s.clone(), known.clone(), stop.clone(), latencies.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                let client_id = format!("soak-client-{c:04}");
                let mut mine = Vec::new();
                let mut rng = c as u64 * 7 + 1;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let timed = |req: reqwest::blocking::RequestBuilder, lat: &mut Vec<Duration>| {
                    let t = Instant::now();
                    let r = req
                        .header("skewless-client", client_id.as_str())
                        .send()
                        .expect("request");
                    lat.push(t.elapsed());
                    r
                };
                let state_of = |id: &str| -> String {
                    let list: serde_json::Value = http
                        .get(format!("{}/_skewless/api/v1/releases", s.url))
                        .bearer_auth(TOKEN)
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    list.as_array()
                        .unwrap()
                        .iter()
                        .find(|r| r["id"] == id)
                        .map_or("unknown".into(), |r| {
                            r["state"].as_str().unwrap().to_owned()
                        })
                };
                'boot: while !stop.load(Ordering::Relaxed) {
                    // Boot: a page load gives the release this client runs.
                    let shell = timed(
                        http.get(format!("{}/inbox/{c}", s.url))
                            .header(header::ACCEPT, "text/html"),
                        &mut mine,
                    );
                    assert_eq!(shell.status(), 200, "shell");
                    let release = shell.headers()["skewless-served-by"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    assert!(shell
                        .text()
                        .unwrap()
                        .contains(&format!("content=\"{release}\"")));
                    let k = known.lock().unwrap()[&release].clone();
                    for _ in 0..(20 + next() % 40) {
                        if stop.load(Ordering::Relaxed) {
                            break 'boot;
                        }
                        let (path, bytes) = &k.files[(next() % k.files.len() as u64) as usize];
                        // `/index.html` at an unversioned path is always the
                        // current shell, so pinned requests take the others.
                        let kind = match next() % 3 {
                            1 if path == "index.html" => 0,
                            k => k,
                        };
                        let resp = match kind {
                            0 => timed(
                                http.get(format!("{}/_r/{release}/{path}", s.url)),
                                &mut mine,
                            ),
                            1 => timed(
                                http.get(format!("{}/{path}", s.url))
                                    .header("skewless-release", &release),
                                &mut mine,
                            ),
                            _ => timed(
                                http.get(format!("{}/api/items", s.url))
                                    .header("skewless-release", &release),
                                &mut mine,
                            ),
                        };
                        let status = resp.status().as_u16();
                        assert!(status < 500, "{status} for {release}/{path}");
                        if resp.headers().contains_key("skewless-required") || status == 404 {
                            // Only a release that is no longer retained may be refused.
                            let state = state_of(&release);
                            assert!(
                                matches!(state.as_str(), "retired" | "collected"),
                                "{status} for {path} of {release}, which is {state}"
                            );
                            continue 'boot;
                        }
                        assert_eq!(status, 200);
                        let served_by = resp.headers()["skewless-served-by"]
                            .to_str()
                            .unwrap()
                            .to_owned();
                        assert_eq!(
                            served_by, release,
                            "answer from another release than the pin"
                        );
                        if let Some(backend) = resp.headers().get("x-backend") {
                            assert_eq!(
                                backend.to_str().unwrap(),
                                k.backend,
                                "API answer from another release's back end"
                            );
                            let body: serde_json::Value = resp.json().unwrap();
                            assert_eq!(
                                body.is_array(),
                                k.backend == "b1",
                                "API shape of the pinned release"
                            );
                        } else if path != "index.html" {
                            assert_eq!(
                                &resp.bytes().unwrap()[..],
                                &bytes[..],
                                "{release}/{path} bytes"
                            );
                        }
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();

    // The deployer: a release every 2 s, every fourth cycle a rollback.
    let started = Instant::now();
    let mut n: usize = 1;
    let mut rollbacks = 0;
    while started.elapsed() < RUN {
        let cycle_start = Instant::now();
        if n.is_multiple_of(4) {
            if s.cli(&["rollback"]).status.success() {
                rollbacks += 1;
            }
        } else {
            let id = deploy(n, &mut dirs);
            s.ok(&["promote", &id]);
        }
        n += 1;
        let rest = Duration::from_secs(2).saturating_sub(cycle_start.elapsed());
        // The deployer's pace is the load shape, not synchronisation.
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a client saw a failure");
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["releases", "--json"])).unwrap();
    let states: HashMap<String, usize> =
        list.as_array()
            .unwrap()
            .iter()
            .fold(HashMap::new(), |mut m, r| {
                *m.entry(r["state"].as_str().unwrap().to_owned())
                    .or_default() += 1;
                m
            });
    eprintln!(
        "soak: {} requests by {CLIENTS} clients over {:?}, {} cycles ({rollbacks} rollbacks); p50 {:?}, p99 {:?}, max {:?}; releases by state {states:?}",
        lat.len(),
        started.elapsed(),
        n - 1,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
    );
    assert!(lat.len() > 1000, "too little load: {}", lat.len());
    assert!(
        states.get("retired").copied().unwrap_or(0) + states.get("collected").copied().unwrap_or(0)
            > 0,
        "the reaper retired nothing: {states:?}"
    );
    let fsck: serde_json::Value = serde_json::from_str(&s.ok(&["fsck", "--json"])).unwrap();
    assert_eq!(fsck["ok"], true, "{fsck}");
    drop(dirs);
}
