//! HTTPS on the gateway's own listener: HTTP/2 and HTTP/1.1 by ALPN, the
//! admin CLI over TLS, certificates reloaded on SIGHUP and on a file change
//! without dropping open connections, the plain-HTTP redirect listener, and
//! clear start-up errors.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{example, free_port, wait_for, Server, TOKEN};

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM.
fn pair() -> (String, String) {
    let g = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    (g.cert.pem(), g.signing_key.serialize_pem())
}

/// A client that trusts only `cert_pem`.
fn client(cert_pem: &str, http1: bool) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// Runs the CLI against the HTTPS server, trusting the certificate in `ca`.
fn cli(s: &Server, ca: &Path, args: &[&str]) -> Output {
    Command::new(crate::support::bin())
        .args(args)
        .env("SKEWLESS_SERVER", &s.url)
        .env("SKEWLESS_TOKEN", TOKEN)
        .env("SKEWLESS_CA_CERT", ca)
        .env_remove("SKEWLESS_DATA")
        .output()
        .unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn https_serves_h2_and_http1_reloads_certificates_and_redirects_plain_http() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key): (PathBuf, PathBuf) =
        (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (cert_a, key_a) = pair();
    write(&cert, &cert_a);
    write(&key, &key_a);
    let ca = certs.path().join("ca.pem");
    write(&ca, &cert_a);
    let redirect_port = free_port();
    let redirect = format!("127.0.0.1:{redirect_port}");
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--http-redirect-listen",
            &redirect,
        ],
    );
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let port: u16 = s.url.rsplit(':').next().unwrap().parse().unwrap();

    // The admin CLI over TLS, trusting the gateway's certificate.
    let out = cli(
        &s,
        &ca,
        &[
            "deploy",
            example("v1").to_str().unwrap(),
            "--release",
            "v1",
            "--promote",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    // Without trusting it, the CLI refuses the connection.
    let untrusted = Command::new(crate::support::bin())
        .args(["status"])
        .env("SKEWLESS_SERVER", &s.url)
        .env("SKEWLESS_TOKEN", TOKEN)
        .env_remove("SKEWLESS_CA_CERT")
        .output()
        .unwrap();
    assert!(!untrusted.status.success());

    // HTTP/2 by ALPN, HTTP/1.1 for clients that only speak it.
    let h2 = client(&cert_a, false);
    let page = h2
        .get(format!("{}/inbox/42", s.url))
        .header("accept", "text/html")
        .send()
        .unwrap();
    assert_eq!(page.version(), reqwest::Version::HTTP_2);
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["skewless-current"], "v1");
    let h1 = client(&cert_a, true);
    let css = h1.get(format!("{}/style.css", s.url)).send().unwrap();
    assert_eq!(css.version(), reqwest::Version::HTTP_11);
    assert_eq!(css.status(), 200);
    // Header limits hold over TLS too.
    let long = h2
        .get(format!("{}/style.css", s.url))
        .header("x-big", "a".repeat(9000))
        .send()
        .unwrap();
    assert_eq!(long.status(), 431);

    // An event stream opened with the first certificate.
    let stream = h1
        .get(format!("{}/_skewless/events?release=v1", s.url))
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut events = BufReader::new(stream);

    // SIGHUP alone reloads: pair B is written in place with the old files'
    // sizes and times, so only the signal can reveal it.
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.len(), m.modified().unwrap())
    };
    let (old_cert, old_key) = (stamp(&cert), stamp(&key));
    let (cert_b, key_b) = (0..200)
        .map(|_| pair())
        .find(|(c, k)| c.len() as u64 == old_cert.0 && k.len() as u64 == old_key.0)
        .expect("a certificate of the same size");
    for (path, text, (_, mtime)) in [(&cert, &cert_b, old_cert), (&key, &key_b, old_key)] {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        use std::io::Write;
        (&f).write_all(text.as_bytes()).unwrap();
        f.set_modified(mtime).unwrap();
    }
    assert!(
        h1.get(format!("{}/style.css", s.url)).send().is_ok(),
        "the connection made with the first certificate stays usable"
    );
    let only_b = client(&cert_b, false);
    assert!(
        only_b.get(format!("{}/", s.url)).send().is_err(),
        "not reloaded yet"
    );
    let sighup = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(sighup.success());
    wait_for("pair B after SIGHUP", Duration::from_secs(20), || {
        client(&cert_b, false)
            .get(format!("{}/", s.url))
            .send()
            .is_ok()
    });
    assert!(
        crate::support::alive(s.pid()),
        "SIGHUP does not stop the server"
    );

    // A changed file alone reloads too.
    let (cert_c, key_c) = pair();
    write(&key, &key_c);
    write(&cert, &cert_c);
    wait_for(
        "pair C after the files changed",
        Duration::from_secs(20),
        || {
            client(&cert_c, false)
                .get(format!("{}/", s.url))
                .send()
                .is_ok()
        },
    );
    assert!(
        client(&cert_a, false)
            .get(format!("{}/", s.url))
            .send()
            .is_err(),
        "new connections no longer get the first certificate"
    );
    // A broken pair keeps the certificate in service (and is counted).
    let only_c = client(&cert_c, false);
    let failed_reloads = || -> u64 {
        let text = only_c
            .get(format!("{}/_skewless/metrics", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("skewless_tls_reloads_total{result=\"failed\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = failed_reloads();
    write(&key, &key_a);
    wait_for(
        "the broken pair to be refused",
        Duration::from_secs(20),
        || failed_reloads() > before,
    );
    assert_eq!(
        only_c.get(format!("{}/", s.url)).send().unwrap().status(),
        200,
        "pair C stays in service"
    );
    write(&key, &key_c);

    // The stream opened before both reloads still hears the promotion.
    write(&ca, &cert_c);
    let out = cli(
        &s,
        &ca,
        &[
            "deploy",
            example("v2").to_str().unwrap(),
            "--release",
            "v2",
            "--promote",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let mut seen = String::new();
    while !seen.contains("\"current\":\"v2\"") {
        let mut line = String::new();
        assert!(
            events.read_line(&mut line).unwrap() > 0,
            "stream ended: {seen}"
        );
        seen.push_str(&line);
    }

    // Plain HTTP is redirected to HTTPS, host, path and query kept.
    let mut plain = std::net::TcpStream::connect(&redirect).unwrap();
    use std::io::Write;
    plain
        .write_all(
            b"GET /inbox/42?x=1 HTTP/1.1\r\nHost: app.example:80\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 308 "), "{answer}");
    assert!(
        answer.to_lowercase().contains(&format!(
            "location: https://app.example:{port}/inbox/42?x=1\r\n"
        )),
        "{answer}"
    );
    // Nothing but redirects there, the admin API included.
    let admin = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{redirect}/_skewless/api/v1/status"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(admin.status(), 308);
}

#[test]
fn bad_tls_settings_stop_the_server_with_one_line() {
    let certs = tempfile::tempdir().unwrap();
    let (cert_a, _) = pair();
    let (_, key_b) = pair();
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    write(&cert, &cert_a);
    write(&key, &key_b);
    let start = |extra: &[&str]| {
        let data = tempfile::tempdir().unwrap();
        let out = Command::new(crate::support::bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                TOKEN,
                "--data",
            ])
            .arg(data.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let err = start(&["--tls-cert", c, "--tls-key", k]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("does not fit certificate") && err.contains("key.pem"),
        "{err}"
    );
    let missing = certs.path().join("missing.pem");
    let err = start(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", k]);
    assert!(
        err.trim_end().lines().count() == 1 && err.contains("missing.pem"),
        "{err}"
    );
    let err = start(&["--http-redirect-listen", "127.0.0.1:0"]);
    assert!(err.contains("needs tls_cert"), "{err}");
    let err = start(&["--tls-cert", c]);
    assert!(err.contains("--tls-key"), "{err}");
}
