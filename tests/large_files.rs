//! Large files are sent from disk in bounded chunks: sixteen concurrent
//! downloads of a file far larger than the memory bound raise the
//! gateway's resident memory by less than that bound; ranges of them are
//! exact; a blob removed or replaced while it is being sent does not
//! disturb the download in flight, and later requests get a clear error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::Server;

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
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    (status, headers, r)
}

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
}
