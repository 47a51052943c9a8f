//! Holds `--count` `/_skewless/events` streams open against one gateway and
//! records, for each, the wall-clock time (ns since the epoch, so several
//! processes can be compared) at which it receives an event naming
//! `--expect` as current.
//!
//! Prints `READY <opened> <failed>` once every stream is open (or failed),
//! then `RESULT {json}` once every open stream has heard of the promotion or
//! `--deadline` seconds have passed. Streams are spread over the `--sources`
//! addresses (e.g. 127.0.0.2,127.0.0.3), so that neither the per-address
//! stream limit nor the ephemeral port range of one address runs out.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

struct Args {
    addr: SocketAddr,
    release: String,
    expect: String,
    count: usize,
    sources: Vec<IpAddr>,
    connect_concurrency: usize,
    deadline: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        addr: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
        release: String::new(),
        expect: String::new(),
        count: 1000,
        sources: vec![IpAddr::from([127, 0, 0, 1])],
        connect_concurrency: 128,
        deadline: Duration::from_secs(30),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| format!("--addr: {e}"))?,
            "--release" => args.release = value,
            "--expect" => args.expect = value,
            "--count" => args.count = value.parse().map_err(|e| format!("--count: {e}"))?,
            "--sources" => {
                args.sources = value
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--sources {s}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--connect-concurrency" => {
                args.connect_concurrency = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--deadline" => {
                args.deadline = Duration::from_secs(value.parse().map_err(|e| format!("{flag}: {e}"))?)
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.release.is_empty() || args.expect.is_empty() {
        return Err("--release and --expect are required".into());
    }
    Ok(args)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connects from `source`, sends the request and reads until the response
/// head and the first event (the state on connect) have arrived.
async fn open(addr: SocketAddr, source: IpAddr, request: &[u8]) -> Result<TcpStream, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let mut stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            let head = String::from_utf8_lossy(&buf);
            return Err(format!(
                "closed: {}",
                head.lines().next().unwrap_or("no response")
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 200") {
                let head = String::from_utf8_lossy(&buf[..end]);
                return Err(head.lines().next().unwrap_or("").to_owned());
            }
            if find(&buf[end..], b"\n\n").is_some() {
                return Ok(stream);
            }
        }
        if buf.len() > 64 * 1024 {
            return Err("no event in the first 64 KiB".into());
        }
    }
}

/// Reads until an event naming the expected release arrives; returns when.
async fn wait_for(stream: &mut TcpStream, needle: &[u8]) -> Result<u128, String> {
    let mut tail: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed".into());
        }
        let at = now_ns();
        tail.extend_from_slice(&chunk[..n]);
        if find(&tail, needle).is_some() {
            return Ok(at);
        }
        // Keep only what could start a match split across reads.
        let keep = needle.len().min(tail.len());
        tail.drain(..tail.len() - keep);
    }
}

#[derive(Default)]
struct Shared {
    opened: usize,
    failed: usize,
    errors: Vec<String>,
    received: Vec<u128>,
    lost: usize,
    held: Vec<TcpStream>,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let request = Arc::new(
        format!(
            "GET /_skewless/events?release={} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            args.release, args.addr
        )
        .into_bytes(),
    );
    let needle: Arc<Vec<u8>> = Arc::new(format!("\"current\":\"{}\"", args.expect).into_bytes());
    let shared = Arc::new(Mutex::new(Shared::default()));
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let opened_all = Arc::new(tokio::sync::Notify::new());
    let heard_all = Arc::new(tokio::sync::Notify::new());
    let count = args.count;
    for i in 0..count {
        let source = args.sources[i % args.sources.len()];
        let (request, needle, shared, gate) = (
            request.clone(),
            needle.clone(),
            shared.clone(),
            gate.clone(),
        );
        let (opened_all, heard_all) = (opened_all.clone(), heard_all.clone());
        let addr = args.addr;
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let result = open(addr, source, &request).await;
            drop(permit);
            let mut stream = {
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                let stream = match result {
                    Ok(stream) => {
                        s.opened += 1;
                        Some(stream)
                    }
                    Err(e) => {
                        s.failed += 1;
                        if s.errors.len() < 20 {
                            s.errors.push(e);
                        }
                        None
                    }
                };
                if s.opened + s.failed == count {
                    opened_all.notify_one();
                }
                match stream {
                    Some(st) => st,
                    None => return,
                }
            };
            let heard = wait_for(&mut stream, &needle).await;
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            match heard {
                Ok(at) => s.received.push(at),
                Err(_) => s.lost += 1,
            }
            s.held.push(stream);
            if s.received.len() + s.lost == s.opened {
                heard_all.notify_one();
            }
        });
    }
    opened_all.notified().await;
    {
        let s = shared.lock().unwrap_or_else(|e| e.into_inner());
        println!("READY {} {}", s.opened, s.failed);
        for e in s.errors.iter().take(5) {
            eprintln!("stream failed: {e}");
        }
    }
    let _ = tokio::time::timeout(args.deadline, heard_all.notified()).await;
    let s = shared.lock().unwrap_or_else(|e| e.into_inner());
    let times: Vec<String> = s.received.iter().map(|t| t.to_string()).collect();
    let errors: Vec<String> = s
        .errors
        .iter()
        .map(|e| format!("\"{}\"", e.replace(['"', '\\'], "'")))
        .collect();
    println!(
        "RESULT {{\"opened\":{},\"failed\":{},\"received\":{},\"lost\":{},\"errors\":[{}],\"times_ns\":[{}]}}",
        s.opened,
        s.failed,
        s.received.len(),
        s.lost,
        errors.join(","),
        times.join(",")
    );
}
