//! One plain HTTP/1.1 connection carries every kind of request in turn:
//! ordinary ones (answered by the gateway's lean HTTP/1.1 path), pipelined
//! ones, bodies split across writes, and those the general stack takes
//! over for the rest of the connection (request bodies past the lean
//! limit, chunked uploads, `Expect: 100-continue`, HTTP/1.0), each answered
//! exactly, in order, with nothing lost at the hand-over.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{example, read_head, Backend, Server};

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response (to a request that was not `HEAD` unless `head`).
fn read_answer(r: &mut BufReader<TcpStream>, head: bool) -> Answer {
    let (status, headers) = read_head(r);
    let mut line = String::new();
    let mut a = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status == 304 || status == 204 || (100..200).contains(&status) {
        return a;
    }
    if let Some(n) = a.header("content-length") {
        a.body.resize(n.parse().unwrap(), 0);
        r.read_exact(&mut a.body).unwrap();
    } else if a.header("transfer-encoding") == Some("chunked") {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim_end().split(';').next().unwrap(), 16).unwrap();
            if n == 0 {
                // Trailer section.
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                }
                break;
            }
            let start = a.body.len();
            a.body.resize(start + n, 0);
            r.read_exact(&mut a.body[start..]).unwrap();
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).unwrap();
            assert_eq!(&crlf, b"\r\n");
        }
    } else {
        r.read_to_end(&mut a.body).unwrap();
    }
    a
}

fn connect(s: &Server) -> (TcpStream, BufReader<TcpStream>) {
    let c = TcpStream::connect(s.url.trim_start_matches("http://")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r = BufReader::new(c.try_clone().unwrap());
    (c, r)
}

fn served() -> (Backend, Server) {
    let b = Backend::start(1, "b1");
    let s = Server::start();
    s.deploy_with(&example("v1"), "v1", &["--backend", &b.url, "--promote"]);
    (b, s)
}

fn echo(n: usize) -> String {
    format!("POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n")
}

/// The back end's own fields came through once each, beside the
/// gateway's.
fn assert_back_end_fields(a: &Answer) {
    let count = |name: &str| a.headers.iter().filter(|(k, _)| k == name).count();
    assert!(
        a.header("content-type").unwrap().contains("json"),
        "{:?}",
        a.headers
    );
    assert_eq!(a.header("x-backend"), Some("b1"), "{:?}", a.headers);
    assert_eq!(
        a.header("skewless-served-by"),
        Some("v1"),
        "{:?}",
        a.headers
    );
    for name in ["date", "content-type", "x-backend", "content-length"] {
        assert_eq!(count(name), 1, "{name} in {:?}", a.headers);
    }
}

fn bytes_echoed(a: &Answer) -> u64 {
    assert_eq!(a.status, 200, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    v["bytes"].as_u64().unwrap()
}

#[test]
fn one_connection_carries_every_kind_of_request_in_turn() {
    let (_b, s) = served();
    let shell = s.http.get(format!("{}/", s.url)).send().unwrap();
    assert_eq!(shell.status(), 200);
    let shell = shell.bytes().unwrap();
    let (mut c, mut r) = connect(&s);

    // Two requests in one write: both answered, in order.
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n\
          GET /api/items HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!((a.status, a.body.as_slice()), (200, &shell[..]));
    assert!(a.header("date").is_some());
    let a = read_answer(&mut r, false);
    assert_eq!(a.status, 200);
    assert!(
        a.header("content-type").unwrap().contains("json"),
        "{:?}",
        a.headers
    );

    // A small body in the same write as its head.
    let mut post = echo(10_000).into_bytes();
    post.extend_from_slice(&[b'a'; 10_000]);
    c.write_all(&post).unwrap();
    assert_eq!(bytes_echoed(&read_answer(&mut r, false)), 10_000);

    // A streamed (chunked) answer of the back end, passed on whole.
    c.write_all(b"GET /api/download?bytes=200000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len(), 200_000);
    assert!(a.body.iter().all(|&b| b == b'x'));

    // HEAD: the head alone, with the length of the GET.
    c.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, true);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-length"),
        Some(shell.len().to_string().as_str())
    );

    // A small body split across writes: whatever part of it came with the
    // head, answered once it is whole.
    let body = vec![b'a'; 10_000];
    c.write_all(echo(body.len()).as_bytes()).unwrap();
    c.write_all(&body[..3_000]).unwrap();
    c.flush().unwrap();
    c.write_all(&body[3_000..]).unwrap();
    assert_eq!(bytes_echoed(&read_answer(&mut r, false)), 10_000);

    // A body past what the lean path takes with its head: the general
    // stack takes the connection from here, starting with the bytes read.
    let big = vec![b'b'; 300_000];
    c.write_all(echo(big.len()).as_bytes()).unwrap();
    c.write_all(&big).unwrap();
    assert_eq!(bytes_echoed(&read_answer(&mut r, false)), 300_000);

    // Chunked upload, then ordinary requests again on the same connection.
    c.write_all(
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(bytes_echoed(&read_answer(&mut r, false)), 11);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!((a.status, a.body.as_slice()), (200, &shell[..]));

    // Asked to close: answered, then closed.
    c.write_all(b"GET /api/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut r, false).status, 200);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn ordinary_requests_answer_and_close_as_asked() {
    let (_b, s) = served();

    // Connection: close on the lean path: the answer says so and the
    // connection ends after it.
    let (mut c, mut r) = connect(&s);
    c.write_all(b"GET /api/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("connection"), Some("close"));
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // Expect: 100-continue: the body is asked for, then answered.
    let (mut c, mut r) = connect(&s);
    c.write_all(
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!(a.status, 100);
    c.write_all(b"hello").unwrap();
    assert_eq!(bytes_echoed(&read_answer(&mut r, false)), 5);

    // HTTP/1.0 without keep-alive: answered, then closed.
    let (mut c, mut r) = connect(&s);
    c.write_all(b"GET /api/items HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!(a.status, 200);
    assert!(!a.body.is_empty());
    assert_back_end_fields(&a);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // A request target the URI grammar refuses: a one-line JSON 400.
    let (mut c, mut r) = connect(&s);
    c.write_all(b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!(a.status, 400, "{}", a.text());

    // The server is healthy after all of it.
    let a = s.http.get(format!("{}/api/items", s.url)).send().unwrap();
    assert_eq!(a.status(), 200);
}
