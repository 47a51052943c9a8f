//! The lean transport of event streams: plain HTTP/1.1 `GET
//! /_skewless/events`, served straight off the socket.
//!
//! An open event stream does nothing for minutes but wait for the next
//! release, and a gateway holds tens of thousands of them. Through the
//! general HTTP stack each one keeps a full connection state with 8 KiB read
//! and write buffers; here a stream is one small task holding the socket,
//! its broadcast receiver and a keep-alive timer. The accept loop hands a
//! connection over when its first bytes are an event-stream request line;
//! everything else (and HTTP/2, `HEAD`, a request line split across
//! packets) goes through the general stack, whose transport
//! ([`super::general`]) opens streams the same way and sends the same bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{open, EventsQuery, Follow};
use crate::access_log::{events_release, StreamRecord};
use crate::gateway::stamp::{Stamp, CLIENT_HEADER};
use crate::gateway::Gateway;
use crate::limits::{kib, HeadLimits};
use crate::metrics::{self, Kind};

const PREFIX: &[u8] = b"GET /_skewless/events";
const MAX_HEADERS: usize = 64;

/// Whether the first bytes of a connection are an event-stream request.
pub fn is_event_stream(first: &[u8]) -> bool {
    first.len() > PREFIX.len()
        && first.starts_with(PREFIX)
        && matches!(first[PREFIX.len()], b'?' | b' ')
}

/// Serves one event-stream connection to its end.
pub async fn serve(
    gw: Arc<Gateway>,
    mut stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    limits: HeadLimits,
) {
    // Written when this function returns, however the stream ends.
    let mut log = gw.access_log.stream(peer);
    let log = &mut log;
    let head = match tokio::time::timeout(timeout, read_head(&mut stream, limits)).await {
        Ok(Ok(head)) => head,
        Ok(Err(Some((status, msg)))) => {
            let _ = write_error(&mut stream, log, status, &msg).await;
            return;
        }
        Ok(Err(None)) | Err(_) => return,
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
        let _ = write_error(
            &mut stream,
            log,
            StatusCode::BAD_REQUEST,
            "malformed request head",
        )
        .await;
        return;
    }
    if let Some((status, msg)) = limits.refusal(
        req.path.map_or(0, str::len),
        req.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
    ) {
        let _ = write_error(&mut stream, log, status, &msg).await;
        return;
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    // The same rule as every other request (an event stream is never a
    // page load).
    let pin = skewless_core::pin::request_pin(
        false,
        header(skewless_core::pin::HEADER),
        header("referer"),
        header("host"),
        header("cookie"),
    );
    log.set_pin(events_release(req.path.and_then(|p| p.split_once('?')).map(|(_, q)| q)).or(pin));
    let stamp = Stamp::for_request(&gw, pin, header(CLIENT_HEADER));
    let query = req
        .path
        .and_then(|p| p.split_once('?'))
        .map_or("", |(_, q)| q);
    let q: EventsQuery = match serde_urlencoded::from_str(query) {
        Ok(q) => q,
        Err(e) => {
            let msg = format!("Failed to deserialize query string: {e}");
            let _ = write_error(&mut stream, log, StatusCode::BAD_REQUEST, &msg).await;
            return;
        }
    };
    // HTTP/1.0 has no chunked bodies: the stream ends with the connection.
    let chunked = req.version != Some(0);
    drop(head);

    let opened = match open(&gw, peer.ip(), q) {
        Ok(o) => o,
        Err(e) => {
            let _ = write_error(&mut stream, log, e.status(), &e.to_string()).await;
            return;
        }
    };
    metrics::request(Kind::System, 200);
    let mut follow = Follow::new(gw, opened);

    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
          x-accel-buffering: no\r\n",
    );
    out.extend_from_slice(if chunked {
        b"transfer-encoding: chunked\r\n".as_slice()
    } else {
        b"connection: close\r\n".as_slice()
    });
    stamp.write_head(&mut out);
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    let chunk = |out: &mut Vec<u8>, data: &[u8]| {
        if chunked {
            chunk(out, data)
        } else {
            out.extend_from_slice(data)
        }
    };
    let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
    let first = follow.next().await.unwrap_or_default();
    chunk(&mut out, &first);
    log.status = 200;
    if stream.write_all(&out).await.is_err() {
        return;
    }
    log.bytes = first.len() as u64;
    drop(out);

    let mut scratch = [0u8; 64];
    loop {
        let mut frame = Vec::new();
        // Body bytes in `frame`, without the chunk framing.
        let payload: usize;
        tokio::select! {
            next = follow.next() => match next {
                Some(bytes) => {
                    chunk(&mut frame, &bytes);
                    payload = bytes.len();
                }
                None => {
                    let _ = stream.write_all(end).await;
                    return;
                }
            },
            // The client sends nothing more; a read ends when it goes away.
            n = stream.read(&mut scratch) => match n {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        }
        if stream.write_all(&frame).await.is_err() {
            return;
        }
        log.bytes += payload as u64;
    }
}

/// Reads up to the end of the request head, refusing one over the head
/// limit and a line over the line limit as soon as it is seen.
/// `Err(Some(..))` answers the client; `Err(None)` means it went away.
async fn read_head(
    stream: &mut TcpStream,
    limits: HeadLimits,
) -> Result<Vec<u8>, Option<(StatusCode, String)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut line_start = 0;
    loop {
        if buf.len() >= limits.max_head {
            return Err(Some((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("request head is larger than {}", kib(limits.max_head)),
            )));
        }
        let want = (buf.len() + 1024).min(limits.max_head);
        let start = buf.len();
        buf.resize(want, 0);
        let n = stream.read(&mut buf[start..]).await.map_err(|_| None)?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(None);
        }
        let from = start.saturating_sub(3);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        // A line still open past the line limit: refuse without waiting
        // for the rest (the parsed head is checked again, exactly).
        if let Some(i) = buf[line_start..].windows(2).rposition(|w| w == b"\r\n") {
            line_start += i + 2;
        }
        if buf.len() - line_start > limits.max_line + 2 {
            let (status, what) = if line_start == 0 {
                (StatusCode::URI_TOO_LONG, "request line")
            } else {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "header line")
            };
            return Err(Some((
                status,
                format!("{what} is longer than {}", kib(limits.max_line)),
            )));
        }
    }
}

/// Appends `data` as one chunk of a chunked body.
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Answers an error as the general stack would (`{"error": …}`), counts it,
/// and closes the connection.
async fn write_error(
    stream: &mut TcpStream,
    log: &mut StreamRecord,
    status: StatusCode,
    message: &str,
) -> std::io::Result<()> {
    metrics::request(Kind::System, status.as_u16());
    let body = crate::error::error_body(message);
    log.status = status.as_u16();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\n\
         content-length: {}\r\nconnection: close\r\ndate: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    log.bytes = body.len() as u64;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_event_stream_request_lines() {
        assert!(is_event_stream(
            b"GET /_skewless/events?release=v1 HTTP/1.1\r\n"
        ));
        assert!(is_event_stream(b"GET /_skewless/events HTTP/1.1\r\n"));
        assert!(!is_event_stream(b"GET /_skewless/events2 HTTP/1.1\r\n"));
        assert!(!is_event_stream(b"GET /_skewless/eve"));
        assert!(!is_event_stream(b"HEAD /_skewless/events HTTP/1.1\r\n"));
        assert!(!is_event_stream(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    }

    #[test]
    fn frames_chunks() {
        let mut out = Vec::new();
        chunk(&mut out, b":ping\n\n");
        chunk(&mut out, &[b'x'; 26]);
        let mut want = b"7\r\n:ping\n\n\r\n1a\r\n".to_vec();
        want.extend_from_slice(&[b'x'; 26]);
        want.extend_from_slice(b"\r\n");
        assert_eq!(out, want);
    }
}
