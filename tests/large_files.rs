//! Large files are sent from their open file (with `sendfile` on plain
//! HTTP/1, in bounded chunks over TLS and HTTP/2): sixteen concurrent
//! downloads of a file far larger than the memory bound raise the
//! gateway's resident memory by less than that bound; whole files, ranges
//! and precompressed forms are exact over HTTP/1.0, HTTP/1.1 keep-alive
//! (pipelined too), HTTP/2 and TLS; a blob removed or replaced while it is
//! being sent does not disturb the download in flight, one cut short cuts
//! the download short without a byte that is not in the file, and later
//! requests get a clear error. `serve` raises its open-file limit, which
//! held files, connections and streams all draw on.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{bin, read_head, Server, TOKEN};

/// The served file: 96 MiB, so one buffered copy alone would exceed the
/// bound, and sixteen would take 1.5 GiB (`SKEWLESS_TEST_LARGE_FILE_MIB`
/// sets another size, e.g. 500).
fn size() -> usize {
    std::env::var("SKEWLESS_TEST_LARGE_FILE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(96)
        << 20
}
const DOWNLOADS: usize = 16;
/// Allowed rise of the gateway's resident memory while serving them.
const BOUND_KIB: u64 = 64 * 1024;

/// Pseudo-random bytes (xorshift), cheap to make and to check.
fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A 64-bit FNV-1a-like digest over 8-byte words, to compare downloads
/// with the file without keeping them.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Digest(u64, u64);

impl Digest {
    fn update(&mut self, data: &[u8], carry: &mut Vec<u8>) {
        carry.extend_from_slice(data);
        let whole = carry.len() / 8 * 8;
        for w in carry[..whole].chunks_exact(8) {
            let v = u64::from_le_bytes(w.try_into().unwrap());
            self.0 = (self.0 ^ v).wrapping_mul(0x100000001b3);
        }
        self.1 += whole as u64;
        carry.drain(..whole);
    }

    /// Folds in the last bytes (fewer than 8), zero-padded.
    fn finish(mut self, carry: &[u8]) -> Digest {
        if !carry.is_empty() {
            let mut w = [0u8; 8];
            w[..carry.len()].copy_from_slice(carry);
            self.0 = (self.0 ^ u64::from_le_bytes(w)).wrapping_mul(0x100000001b3);
            self.1 += carry.len() as u64;
        }
        self
    }

    fn of(data: &[u8]) -> Digest {
        let mut d = Digest::default();
        let mut carry = Vec::new();
        d.update(data, &mut carry);
        d.finish(&carry)
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
}

/// A GET over a raw connection; returns the status, the headers (lower-
/// cased names) and the reader positioned at the body.
fn open_get(
    url: &str,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let (status, headers) = read_head(&mut r);
    (status, headers, r)
}

/// Reads a response's status line and headers (lower-cased names).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads the rest of a body; returns its length and digest (continuing
/// `d`, the digest of what was read before, a multiple of 8 bytes), or the
/// error that cut it short.
fn drain_from(r: &mut impl Read, mut d: Digest) -> std::io::Result<(u64, Digest)> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut carry = Vec::new();
    let mut n = d.1;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok((n, d.finish(&carry)));
        }
        n += k as u64;
        d.update(&buf[..k], &mut carry);
    }
}

fn drain(r: &mut impl Read) -> std::io::Result<(u64, Digest)> {
    drain_from(r, Digest::default())
}

/// The stored blob of `data` in the gateway's data directory.
fn blob_path(data: &Path, content: &[u8]) -> PathBuf {
    let hash = blake3::hash(content).to_hex().to_string();
    let p = data.join("blobs").join(&hash[..2]).join(&hash);
    assert!(p.exists(), "{} is not stored", p.display());
    p
}

#[test]
fn large_files_stream_in_constant_memory_and_survive_changes_underneath() {
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(app.path().join("media")).unwrap();
    std::fs::write(
        app.path().join("index.html"),
        "<!doctype html><title>big</title>",
    )
    .unwrap();
    let size = size();
    let data = content(size, 0x5eed);
    let whole = Digest::of(&data);
    std::fs::write(app.path().join("media/big.bin"), &data).unwrap();
    let s = Server::start();
    s.deploy(app.path(), "v1", true);
    let blob = blob_path(s.data.path(), &data);
    let pid = s.pid();

    // One warm-up request, so the pools and buffers a first request
    // creates are in the baseline; then the peak is reset.
    let (status, _, mut r) = open_get(&s.url, "/media/big.bin", "");
    assert_eq!(status, 200);
    assert_eq!(drain(&mut r).unwrap(), (size as u64, whole));
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = status_kib(pid, "VmRSS:");

    let downloads: Vec<_> = (0..DOWNLOADS)
        .map(|_| {
            let url = s.url.clone();
            std::thread::spawn(move || {
                let (status, headers, mut r) = open_get(&url, "/media/big.bin", "");
                assert_eq!(status, 200);
                assert_eq!(
                    header(&headers, "content-length"),
                    Some(size.to_string().as_str())
                );
                drain(&mut r).unwrap()
            })
        })
        .collect();
    for d in downloads {
        assert_eq!(d.join().unwrap(), (size as u64, whole));
    }
    let peak = status_kib(pid, "VmHWM:");
    println!(
        "{DOWNLOADS} concurrent downloads of {} MiB: RSS {before} KiB before, peak {peak} KiB",
        size >> 20
    );
    assert!(
        peak < before + BOUND_KIB,
        "{DOWNLOADS} downloads of a {} MiB file raised the gateway's RSS from {before} KiB to a \
         peak of {peak} KiB (bound: {BOUND_KIB} KiB)",
        size >> 20
    );

    // A range far larger than a chunk, and one past the end.
    let (from, to) = (3_000_001usize, 41_000_000usize);
    let (status, headers, mut r) = open_get(
        &s.url,
        "/media/big.bin",
        &format!("Range: bytes={from}-{to}\r\n"),
    );
    assert_eq!(status, 206);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes {from}-{to}/{size}").as_str())
    );
    assert_eq!(
        drain(&mut r).unwrap(),
        ((to - from + 1) as u64, Digest::of(&data[from..=to]))
    );
    let (status, _, _) = open_get(
        &s.url,
        "/media/big.bin",
        &format!("Range: bytes={size}-\r\n"),
    );
    assert_eq!(status, 416);

    // Replaced underneath (another file renamed over the blob): the
    // download in flight keeps its open file and completes unchanged; a
    // new request sees a stored file that no longer matches the release.
    let keep = blob.with_extension("keep");
    std::fs::hard_link(&blob, &keep).unwrap();
    let (status, _, mut inflight) = open_get(&s.url, "/media/big.bin", "");
    assert_eq!(status, 200);
    let mut first = vec![0u8; 1 << 20];
    inflight.read_exact(&mut first).unwrap();
    let other = blob.with_extension("other");
    std::fs::write(&other, &data[..size / 2]).unwrap();
    std::fs::rename(&other, &blob).unwrap();
    assert_eq!(
        drain_from(&mut inflight, Digest::of(&first)).unwrap(),
        (size as u64, whole)
    );
    let r = s.get("/media/big.bin").send().unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.text().unwrap().contains("changed in the blob store"));

    // Removed underneath: the download in flight completes from its open
    // file; a new request gets a clear error; the gateway stays healthy.
    std::fs::rename(&keep, &blob).unwrap();
    let (status, _, mut inflight) = open_get(&s.url, "/media/big.bin", "");
    assert_eq!(status, 200);
    inflight.read_exact(&mut first).unwrap();
    std::fs::remove_file(&blob).unwrap();
    assert_eq!(
        drain_from(&mut inflight, Digest::of(&first)).unwrap(),
        (size as u64, whole)
    );
    let r = s.get("/media/big.bin").send().unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.text().unwrap().contains("missing from the blob store"));
    assert_eq!(s.get("/").send().unwrap().status(), 200);
    assert_eq!(s.get("/_skewless/version").send().unwrap().status(), 200);

    // Cut short in place underneath: the download ends early (the
    // connection closes) with exactly the bytes the file still holds, not
    // one byte of anything else; the gateway stays up and healthy.
    std::fs::write(&blob, &data).unwrap();
    let (status, _, mut inflight) = open_get(&s.url, "/media/big.bin", "");
    assert_eq!(status, 200);
    inflight.read_exact(&mut first).unwrap();
    let cut = size / 4;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    let mut rest = Vec::new();
    let _ = inflight.read_to_end(&mut rest);
    let got = first.len() + rest.len();
    assert!(got < size, "{got} bytes of a file cut to {cut}");
    assert!(
        got <= cut && rest[..] == data[first.len()..got],
        "the download cut short at {got} bytes is not a prefix of the file cut to {cut}"
    );
    assert_eq!(s.get("/media/big.bin").send().unwrap().status(), 500);
    std::fs::write(&blob, &data).unwrap();
    let (status, _, mut r) = open_get(&s.url, "/media/big.bin", "");
    assert_eq!(status, 200);
    assert_eq!(drain(&mut r).unwrap(), (size as u64, whole));
    assert_eq!(s.get("/").send().unwrap().status(), 200);
}

/// The app of the protocol tests: a large incompressible file whose size
/// is no multiple of any frame or chunk, a large compressible one (its br
/// and gzip forms above the in-memory limit too), a small file and the
/// shell.
struct LargeApp {
    dir: tempfile::TempDir,
    bin: Vec<u8>,
    text: Vec<u8>,
}

impl LargeApp {
    fn new() -> LargeApp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("media")).unwrap();
        std::fs::write(
            dir.path().join("index.html"),
            "<!doctype html><title>large</title>",
        )
        .unwrap();
        std::fs::write(dir.path().join("small.txt"), "a small file\n").unwrap();
        let bin = content((21 << 20) + 4321, 0xb16);
        std::fs::write(dir.path().join("media/big.bin"), &bin).unwrap();
        // Hex of random bytes: half of it compresses away, so each form
        // stays well above the 1 MiB kept in memory.
        let text: Vec<u8> = content(2 << 20, 0x7e47)
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect();
        std::fs::write(dir.path().join("media/big.txt"), &text).unwrap();
        LargeApp { dir, bin, text }
    }

    /// The stored br or gzip form of the text, checked to decode to it.
    fn stored_form(&self, s: &Server, suffix: &str) -> Vec<u8> {
        let blob = blob_path(s.data.path(), &self.text);
        let form = std::fs::read(blob.with_extension(suffix)).unwrap();
        assert!(form.len() > 1 << 20, "{suffix}: {} bytes", form.len());
        assert!(self.decode(suffix, &form) == self.text);
        form
    }

    fn decode(&self, suffix: &str, form: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match suffix {
            "br" => brotli::BrotliDecompress(&mut &form[..], &mut out).unwrap(),
            _ => {
                flate2::read::GzDecoder::new(form)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }
}

/// Reads one response of a keep-alive connection: status, headers, body
/// (by its `Content-Length`).
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (status, headers) = read_head(r);
    let len: usize = header(&headers, "content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    (status, headers, body)
}

/// Sends one GET on a keep-alive connection and reads its response.
fn ask(
    w: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    addr: &str,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    write!(w, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n").unwrap();
    read_response(r)
}

/// The body of an HTTP/1.0 GET of `path`, which ends with the connection;
/// the answer must be a 200.
fn http10_get(addr: &str, path: &str) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    assert!(
        all.starts_with(b"HTTP/1.0 200") || all.starts_with(b"HTTP/1.1 200"),
        "HTTP/1.0 GET {path} was not a 200"
    );
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    all.split_off(at)
}

/// A client speaking HTTP/2 with prior knowledge over plain TCP.
fn h2_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[test]
fn large_files_are_exact_over_keep_alive_pipelined_http1_0_and_http2() {
    let app = LargeApp::new();
    let s = Server::start();
    s.deploy(app.dir.path(), "v1", true);
    let (br, gz) = (app.stored_form(&s, "br"), app.stored_form(&s, "gz"));
    let (bin, text) = (&app.bin, &app.text);
    let (from, to) = (1_234_567usize, 17_654_320usize);

    // One HTTP/1.1 connection: several large responses, then small ones.
    let addr = s.url.trim_start_matches("http://");
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let (status, _, body) = ask(&mut w, &mut r, addr, "/media/big.bin", "");
    assert_eq!(status, 200);
    assert!(body == *bin, "whole file differs");
    let (status, headers, body) = ask(
        &mut w,
        &mut r,
        addr,
        "/media/big.bin",
        &format!("Range: bytes={from}-{to}\r\n"),
    );
    assert_eq!(status, 206);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes {from}-{to}/{}", bin.len()).as_str())
    );
    assert!(body == bin[from..=to], "range differs");
    let (status, headers, body) = ask(
        &mut w,
        &mut r,
        addr,
        "/media/big.txt",
        "Accept-Encoding: br, gzip\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), Some("br"));
    assert!(body == br, "br form differs");
    let (status, headers, body) = ask(
        &mut w,
        &mut r,
        addr,
        "/media/big.txt",
        "Accept-Encoding: gzip\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert!(body == gz, "gzip form differs");
    let (status, headers, body) = ask(&mut w, &mut r, addr, "/media/big.txt", "");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), None);
    assert!(body == *text, "identity form differs");
    let (status, _, body) = ask(&mut w, &mut r, addr, "/small.txt", "");
    assert_eq!((status, &body[..]), (200, &b"a small file\n"[..]));
    let (status, _, body) = ask(&mut w, &mut r, addr, "/", "Accept: text/html\r\n");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("<title>large</title>"));
    let (status, _, body) = ask(
        &mut w,
        &mut r,
        addr,
        "/media/big.bin",
        "Range: bytes=-100\r\n",
    );
    assert_eq!(status, 206);
    assert!(body == bin[bin.len() - 100..]);

    // Pipelined: three requests in one write, answered in order.
    write!(
        w,
        "GET /media/big.txt HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: br\r\n\r\n\
         GET /small.txt HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /media/big.bin HTTP/1.1\r\nHost: {addr}\r\nRange: bytes={from}-\r\n\r\n"
    )
    .unwrap();
    let (status, _, body) = read_response(&mut r);
    assert_eq!(status, 200);
    assert!(body == br, "pipelined br form differs");
    let (status, _, body) = read_response(&mut r);
    assert_eq!((status, &body[..]), (200, &b"a small file\n"[..]));
    let (status, _, body) = read_response(&mut r);
    assert_eq!(status, 206);
    assert!(body == bin[from..], "pipelined range differs");

    // HTTP/1.0: the body ends with the connection.
    assert!(
        http10_get(addr, "/media/big.bin") == *bin,
        "HTTP/1.0 body differs"
    );

    // HTTP/2 with prior knowledge: the same bytes, by the chunked path.
    let h2 = h2_client();
    let get = |path: &str, name: &str, value: &str| {
        let resp = h2
            .get(format!("{}{path}", s.url))
            .header(name, value)
            .send()
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        (resp.status().as_u16(), resp.bytes().unwrap())
    };
    let (status, body) = get("/media/big.bin", "x-none", "");
    assert_eq!(status, 200);
    assert!(body == *bin, "HTTP/2 whole file differs");
    let (status, body) = get("/media/big.bin", "range", &format!("bytes={from}-{to}"));
    assert_eq!(status, 206);
    assert!(body == bin[from..=to], "HTTP/2 range differs");
    let (status, body) = get("/media/big.txt", "accept-encoding", "br");
    assert_eq!(status, 200);
    assert!(body == br, "HTTP/2 br form differs");
    assert_eq!(get("/small.txt", "x-none", "").1, &b"a small file\n"[..]);

    // The keep-alive connection still answers after all that.
    let (status, _, body) = ask(
        &mut w,
        &mut r,
        addr,
        "/media/big.txt",
        "Accept-Encoding: gzip\r\n",
    );
    assert_eq!(status, 200);
    assert!(body == gz);
}

#[test]
fn large_files_are_exact_over_tls_on_http1_and_http2() {
    let certs = tempfile::tempdir().unwrap();
    let g =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (g.cert.pem(), g.signing_key.serialize_pem());
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let app = LargeApp::new();
    let out = std::process::Command::new(bin())
        .args([
            "deploy",
            app.dir.path().to_str().unwrap(),
            "--release",
            "v1",
            "--promote",
        ])
        .env("SKEWLESS_SERVER", &s.url)
        .env("SKEWLESS_TOKEN", TOKEN)
        .env("SKEWLESS_CA_CERT", &cert)
        .env_remove("SKEWLESS_DATA")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let br = app.stored_form(&s, "br");
    let (from, to) = (999_999usize, 12_345_678usize);
    for http1 in [true, false] {
        let mut b = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(60));
        if http1 {
            b = b.http1_only();
        }
        let c = b.build().unwrap();
        let url = |path: &str| format!("{}{path}", s.url);
        let resp = c.get(url("/media/big.bin")).send().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version() == reqwest::Version::HTTP_11, http1);
        assert!(
            resp.bytes().unwrap() == app.bin,
            "whole file differs (http1: {http1})"
        );
        let resp = c
            .get(url("/media/big.bin"))
            .header("range", format!("bytes={from}-{to}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert!(
            resp.bytes().unwrap() == app.bin[from..=to],
            "range differs (http1: {http1})"
        );
        let resp = c
            .get(url("/media/big.txt"))
            .header("accept-encoding", "br")
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.bytes().unwrap() == br,
            "br form differs (http1: {http1})"
        );
        let resp = c.get(url("/small.txt")).send().unwrap();
        assert_eq!(resp.bytes().unwrap(), &b"a small file\n"[..]);
    }
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn mid_sized_files_kept_in_memory_and_sent_from_their_open_file_are_exact() {
    // Forms between 32 KiB and the 1 MiB kept in memory: held in memory
    // with their open file, sent from the file with `sendfile` on plain
    // HTTP/1, from memory elsewhere.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("media")).unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>mid</title>",
    )
    .unwrap();
    std::fs::write(dir.path().join("small.txt"), "a small file\n").unwrap();
    let bin = content(100_000, 0x31d);
    std::fs::write(dir.path().join("media/mid.bin"), &bin).unwrap();
    let text: Vec<u8> = content(150_000, 0x7e1)
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect();
    std::fs::write(dir.path().join("media/mid.txt"), &text).unwrap();
    let s = Server::start();
    s.deploy(dir.path(), "v1", true);
    let blob = blob_path(s.data.path(), &text);
    let br = std::fs::read(blob.with_extension("br")).unwrap();
    let gz = std::fs::read(blob.with_extension("gz")).unwrap();
    assert!(br.len() > 32 << 10 && gz.len() > 32 << 10);

    let addr = s.url.trim_start_matches("http://");
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    // The first read comes from disk, the rest from what is held.
    for i in 0..3 {
        let (status, headers, body) = ask(&mut w, &mut r, addr, "/media/mid.bin", "");
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-length"), Some("100000"));
        assert!(body == bin, "mid.bin differs (request {i})");
    }
    let fds = open_fds(s.pid());
    let (status, headers, body) = ask(
        &mut w,
        &mut r,
        addr,
        "/media/mid.bin",
        "Range: bytes=1000-60000\r\n",
    );
    assert_eq!(status, 206);
    assert_eq!(
        header(&headers, "content-range"),
        Some("bytes 1000-60000/100000")
    );
    assert!(body == bin[1000..=60000], "range differs");
    for (enc, want) in [("br", &br), ("gzip", &gz), ("br", &br)] {
        let (status, headers, body) = ask(
            &mut w,
            &mut r,
            addr,
            "/media/mid.txt",
            &format!("Accept-Encoding: {enc}\r\n"),
        );
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-encoding"), Some(enc));
        assert!(body == *want, "{enc} form differs");
    }
    let (status, headers, body) = ask(&mut w, &mut r, addr, "/media/mid.txt", "");
    assert_eq!((status, header(&headers, "content-encoding")), (200, None));
    assert!(body == text, "identity form differs");
    let (status, _, body) = ask(
        &mut w,
        &mut r,
        addr,
        "/media/mid.bin",
        "Range: bytes=-10\r\n",
    );
    assert_eq!(status, 206);
    assert!(body == bin[bin.len() - 10..]);

    // Pipelined, mixed with a small answer from memory.
    write!(
        w,
        "GET /media/mid.txt HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: br\r\n\r\n\
         GET /small.txt HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /media/mid.bin HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         HEAD /media/mid.bin HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /media/mid.bin HTTP/1.1\r\nHost: {addr}\r\nRange: bytes=50000-\r\n\r\n"
    )
    .unwrap();
    let (status, _, body) = read_response(&mut r);
    assert!(status == 200 && body == br, "pipelined br form differs");
    let (status, _, body) = read_response(&mut r);
    assert_eq!((status, &body[..]), (200, &b"a small file\n"[..]));
    let (status, _, body) = read_response(&mut r);
    assert!(status == 200 && body == bin, "pipelined file differs");
    let (status, headers) = read_head(&mut r);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-length"), Some("100000"));
    let (status, _, body) = read_response(&mut r);
    assert!(
        status == 206 && body == bin[50_000..],
        "pipelined range differs"
    );

    // Many more answers take no more descriptors: each form's file is
    // opened once and held.
    for _ in 0..40 {
        let (_, _, body) = ask(&mut w, &mut r, addr, "/media/mid.bin", "");
        assert_eq!(body.len(), bin.len());
    }
    assert!(
        open_fds(s.pid()) <= fds + 3,
        "descriptors grew from {fds} to {}",
        open_fds(s.pid())
    );

    // HTTP/1.0: the body ends with the connection.
    assert!(
        http10_get(addr, "/media/mid.bin") == bin,
        "HTTP/1.0 body differs"
    );

    // HTTP/2: the same bytes, from memory.
    let h2 = h2_client();
    let resp = h2.get(format!("{}/media/mid.bin", s.url)).send().unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.bytes().unwrap() == bin, "HTTP/2 body differs");
    let resp = h2
        .get(format!("{}/media/mid.txt", s.url))
        .header("accept-encoding", "br")
        .send()
        .unwrap();
    assert!(resp.bytes().unwrap() == br, "HTTP/2 br form differs");

    // The keep-alive connection still answers.
    let (status, _, body) = ask(&mut w, &mut r, addr, "/media/mid.bin", "");
    assert!(status == 200 && body == bin);
}

/// The soft and hard limits on open files of a process, from
/// /proc/PID/limits.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("no open files line");
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

#[test]
fn serve_raises_its_open_file_limit_to_the_hard_limit() {
    // Started with a soft limit far below its hard one, as a login
    // shell or service manager often leaves it.
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=256:4096", "--", bin(), "serve"])
        .args(["--listen", "127.0.0.1:0", "--admin-token", TOKEN, "--data"])
        .arg(data.path())
        .env("SKEWLESS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn prlimit (util-linux)");
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("skewless listening on "), "{first:?}");
    // prlimit execs the server, so the child is the server.
    let limits = open_file_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(limits, (4096, 4096), "soft limit not raised");
}
