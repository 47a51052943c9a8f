//! The client side of HTTP/1.1 for proxied requests, on `httparse`:
//! response heads taken for the client (hop-by-hop fields read and left
//! out on the way; most fields passed on as they came, in [`RawFields`],
//! the rest in a `HeaderMap`), and the decoder of
//! response bodies (Content-Length, chunked, close-delimited). No I/O
//! here: the connection code in [`crate::conns`] reads into the buffer
//! these functions take from.

use std::mem::MaybeUninit;

use arrayvec::ArrayVec;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf, Bytes, BytesMut};

/// Largest response head (status line and fields), and largest trailer
/// section, taken from a back end.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most fields in a response head.
const MAX_FIELDS: usize = 100;
/// Fields the gateway adds to a back end's answer.
const ADDED_FIELDS: usize = 3;

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: a response to HEAD, 204, 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the back end closes the connection.
    Close,
}

/// A final response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub status: StatusCode,
    /// The fields to pass on: hop-by-hop ones and those `Connection` lists
    /// are left out.
    pub headers: HeaderMap,
    /// More fields to pass on, as they came.
    pub raw: Option<RawFields>,
    pub framing: Framing,
    /// Whether the connection may carry another request after this
    /// response, as far as the head tells.
    pub keep_alive: bool,
}

/// Field lines of a back end's response passed on as they came
/// (`name: value\r\n` each, in the bytes of the head they came in when
/// they can be taken from there whole), kept beside the response's header
/// map (and handed along beside the response, not in its extensions,
/// which would cost allocations on every request): none of them is a
/// field the gateway reads, sets or leaves out (those go to the map), so
/// writing them back into an HTTP/1.1 head needs no parsing of names and
/// no map. A server side that cannot take them whole puts them in the map
/// with [`RawFields::into_map`].
#[derive(Debug, Clone)]
pub(crate) struct RawFields {
    /// The bytes the lines lie in: the response head they came in (shared,
    /// not copied), or a copy of the lines when they could not be taken
    /// from it as they are.
    bytes: Bytes,
    /// The lines, as runs of whole lines in `bytes` (start, end), each
    /// with its `\r\n`.
    runs: ArrayVec<(u32, u32), RAW_RUNS>,
    /// Whether a `Date` field is among them.
    pub date: bool,
}

/// Runs of lines in a response head that [`RawFields`] takes as they are:
/// the fields the gateway reads or leaves out break a head's lines into
/// runs, and an ordinary response has one to three.
const RAW_RUNS: usize = 4;

impl RawFields {
    /// Writes the lines (`name: value\r\n` each) into a response head.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        for &(start, end) in &self.runs {
            out.extend_from_slice(&self.bytes[start as usize..end as usize]);
        }
    }

    /// Appends the lines to `headers`.
    pub(crate) fn into_map(self, headers: &mut HeaderMap) {
        let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut block = Vec::with_capacity(self.bytes.len() + 2);
        self.write(&mut block);
        block.extend_from_slice(b"\r\n");
        let Ok(httparse::Status::Complete((_, fields))) =
            httparse::parse_headers(&block, &mut slots)
        else {
            // They were parsed from a head with the same parser.
            return;
        };
        for f in fields.iter() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(f.name.as_bytes()),
                HeaderValue::from_bytes(f.value),
            ) {
                headers.append(name, value);
            }
        }
    }
}

/// Gathers [`RawFields`] while a head is parsed: runs of the head's own
/// lines while they can be taken as they are (each ends in `\r\n` right
/// after its value, and there are no more than [`RAW_RUNS`] runs), else a
/// copy of the lines, each written `name<sep>value\r\n`.
#[derive(Default)]
struct RawLines {
    runs: ArrayVec<(u32, u32), RAW_RUNS>,
    copied: Option<Vec<u8>>,
}

impl RawLines {
    /// Adds the field whose line in `head` runs from `start` to the end of
    /// its value, `end`.
    fn add(&mut self, head: &[u8], start: usize, end: usize) {
        let whole = head.get(end..end + 2) == Some(b"\r\n".as_slice());
        if self.copied.is_none() && whole {
            // Offsets fit: a head is at most `MAX_HEAD` bytes.
            let (start32, end32) = (start as u32, (end + 2) as u32);
            match self.runs.last_mut() {
                Some(last) if last.1 == start32 => {
                    last.1 = end32;
                    return;
                }
                _ => {
                    if self.runs.try_push((start32, end32)).is_ok() {
                        return;
                    }
                }
            }
        }
        let runs = &self.runs;
        let copied = self.copied.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(256);
            for &(s, e) in runs {
                v.extend_from_slice(&head[s as usize..e as usize]);
            }
            v
        });
        copied.extend_from_slice(&head[start..end]);
        copied.extend_from_slice(b"\r\n");
    }

    /// The fields gathered, in `head` (the head's bytes, split off).
    fn finish(self, head: &Bytes, date: bool) -> Option<RawFields> {
        match self.copied {
            Some(lines) => {
                let mut runs = ArrayVec::new();
                runs.push((0, lines.len() as u32));
                Some(RawFields {
                    bytes: Bytes::from(lines),
                    runs,
                    date,
                })
            }
            None if self.runs.is_empty() => None,
            None => Some(RawFields {
                bytes: head.clone(),
                runs: self.runs,
                date,
            }),
        }
    }
}

/// Why a response cannot be taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub String);

fn malformed(msg: impl Into<String>) -> Malformed {
    Malformed(msg.into())
}

/// Parses the final response head at the start of `buf`, skipping (and
/// consuming) interim 1xx responses before it. `Ok(None)`: more bytes are
/// needed (the caller bounds how many with [`MAX_HEAD`]). The head's bytes
/// are taken out of `buf`; field values share them.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<Head>, Malformed> {
    loop {
        // Not initialised: zeroing the slots would cost more than parsing
        // a typical head.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(malformed(format!(
                    "more than {MAX_FIELDS} header fields in the response"
                )))
            }
            Err(e) => return Err(malformed(format!("malformed response head: {e}"))),
        };
        let code = res.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| malformed(format!("status {code}")))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(malformed(
                "101 Switching Protocols to a request without an upgrade",
            ));
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints and the like: the final
            // response follows.
            buf.advance(len);
            continue;
        }
        let http10 = res.version == Some(0);
        let base = buf.as_ptr() as usize;
        let mut fields: ArrayVec<(HeaderName, usize, usize), MAX_FIELDS> = ArrayVec::new();
        let mut close = false;
        let mut keep_alive_token = false;
        let mut listed: Vec<HeaderName> = Vec::new();
        let mut chunked = None;
        let mut length: Option<u64> = None;
        let mut raw = RawLines::default();
        let mut date = false;
        for h in res.headers.iter() {
            if !SPECIAL_LENGTHS.contains(&h.name.len()) {
                // Most fields: none of those looked at below, passed on
                // as they came (`httparse` checked the name is a token
                // and the value has no control characters).
                date |= h.name.eq_ignore_ascii_case("date");
                let start = h.name.as_ptr() as usize - base;
                raw.add(buf, start, h.value.as_ptr() as usize - base + h.value.len());
                continue;
            }
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| malformed(format!("invalid field name {:?}", h.name)))?;
            if name == header::CONNECTION {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    } else if let Ok(n) = HeaderName::from_bytes(token) {
                        listed.push(n);
                    }
                }
                continue;
            }
            if name == header::TRANSFER_ENCODING {
                // The last coding of the last field decides.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                continue;
            }
            if name == header::CONTENT_LENGTH {
                for n in h.value.split(|&b| b == b',') {
                    let n = parse_length(n.trim_ascii())
                        .ok_or_else(|| malformed("invalid Content-Length"))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(malformed("conflicting Content-Length fields"));
                    }
                    length = Some(n);
                }
            }
            if is_hop_by_hop(&name) {
                continue;
            }
            let start = h.value.as_ptr() as usize - base;
            fields.push((name, start, start + h.value.len()));
        }
        let head = buf.split_to(len).freeze();
        // Room for the fields the gateway adds to the answer
        // (`Skewless-Served-By`, `-Current`, `-Required`) without growing
        // the map, which would move it twice over.
        let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_FIELDS);
        let bodiless =
            head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        // Drained, not moved: the array is large.
        for (name, start, end) in fields.drain(..) {
            // Transfer-Encoding overrides it (RFC 9112 §6.3); a body it
            // delimits tells its length itself (the server side writes it
            // from there). Only an answer without a body keeps it, as what
            // it says of the representation.
            if name == header::CONTENT_LENGTH && (chunked.is_some() || !bodiless) {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| malformed(format!("invalid value of {name}")))?;
            headers.append(name, value);
        }
        let mut raw = raw.finish(&head, date);
        if !listed.is_empty() {
            // Fields `Connection` names are left out wherever they are.
            if let Some(r) = raw.take() {
                r.into_map(&mut headers);
            }
            for name in listed {
                headers.remove(name);
            }
        }
        let framing = if bodiless {
            Framing::Empty
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) => Framing::Close,
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::Close,
            }
        };
        let keep_alive = !close && (!http10 || keep_alive_token) && framing != Framing::Close;
        return Ok(Some(Head {
            status,
            headers,
            raw,
            framing,
            keep_alive,
        }));
    }
}

/// The lengths of the names of the fields the parser looks at: hop-by-hop
/// ones and `Content-Length`.
const SPECIAL_LENGTHS: [usize; 8] = [2, 7, 10, 14, 16, 17, 18, 19];

/// Fields that describe one connection (RFC 9110 §7.6.1), read by the
/// parser and never passed on. `Trailer` is passed on: the server side
/// sends a chunked body's trailer fields only when it lists them.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// A Content-Length value: decimal digits only, no sign, no overflow.
pub(crate) fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body has ended; what follows in the buffer is not part of it.
    End,
    /// More bytes must be read first.
    More,
}

/// Takes a response body out of the bytes read from the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// Bytes still to come.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Inside a chunk: bytes still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields or the final CRLF.
    Trailers,
    Close,
    Done,
}

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::ChunkSize,
            Framing::Close => Decoder::Close,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Body bytes still to come, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body in `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(n) | Decoder::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(buf.len());
                    *n -= take as u64;
                    if *n == 0 {
                        *self = match self {
                            Decoder::Length(_) => Decoder::Done,
                            _ => Decoder::ChunkEnd,
                        };
                    }
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Decoder::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Decoder::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        buf.advance(used);
                        *self = Decoder::Trailers;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = Decoder::ChunkData(size);
                    }
                    Ok(httparse::Status::Partial) if buf.len() < 1024 => return Ok(Decoded::More),
                    _ => return Err(malformed("invalid chunk size line")),
                },
                Decoder::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(malformed("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    *self = Decoder::ChunkSize;
                }
                Decoder::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Decoder::Done;
                        return Ok(Decoded::End);
                    }
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                let (Ok(name), Ok(value)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) else {
                                    return Err(malformed("invalid trailer field"));
                                };
                                trailers.append(name, value);
                            }
                            buf.advance(used);
                            *self = Decoder::Done;
                            return Ok(Decoded::Trailers(trailers));
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                            return Ok(Decoded::More)
                        }
                        Ok(httparse::Status::Partial) => {
                            return Err(malformed("trailer section too large"))
                        }
                        Err(e) => return Err(malformed(format!("invalid trailer section: {e}"))),
                    }
                }
            }
        }
    }

    /// The connection reached its end: the body is complete only if it
    /// was delimited by that end.
    pub(crate) fn at_eof(&mut self) -> Result<(), Malformed> {
        match self {
            Decoder::Close | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(malformed("the back end closed the connection mid-body")),
        }
    }
}

/// Writes a chunk-size line for `len` bytes of data.
pub(crate) fn chunk_size_line(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> (Result<Option<Head>, Malformed>, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let r = parse_head(&mut buf, head_request);
        (r, buf)
    }

    fn raw_lines(text: &str) -> (Vec<u8>, bool, HeaderMap) {
        let (r, _) = head(text, false);
        let raw = r.unwrap().unwrap().raw.unwrap();
        let shared = raw.runs.len() > 1 || raw.bytes.len() > raw.runs[0].1 as usize;
        let mut lines = Vec::new();
        raw.write(&mut lines);
        let mut map = HeaderMap::new();
        raw.into_map(&mut map);
        (lines, shared, map)
    }

    #[test]
    fn lines_are_taken_from_the_head_in_runs_or_copied_when_they_cannot_be() {
        // Runs of the head's own lines, broken by the fields the gateway
        // reads.
        let (lines, shared, map) =
            raw_lines("HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nContent-Length: 0\r\nC: 3\r\n\r\n");
        assert!(shared);
        assert_eq!(lines, b"A: 1\r\nB:2\r\nC: 3\r\n");
        assert_eq!(map["a"], "1");
        assert_eq!(map["b"], "2");
        assert_eq!(map["c"], "3");
        // Whitespace after a value, a bare LF, more runs than kept: copied,
        // each line ending in CRLF right after its value.
        for (text, expected) in [
            (
                "HTTP/1.1 200 OK\r\nA: 1  \r\nB: 2\r\nContent-Length: 0\r\n\r\n",
                &b"A: 1\r\nB: 2\r\n"[..],
            ),
            (
                "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\nC: 3\r\n\r\n",
                b"A: 1\r\nB: 2\r\nC: 3\r\n",
            ),
            (
                // Names of these lengths go to the map.
                "HTTP/1.1 200 OK\r\nA: 1\r\nX-Map-1: x\r\nB: 2\r\nX-Map-2: x\r\n\
                 C: 3\r\nX-Map-3: x\r\nD: 4\r\nX-Map-4: x\r\nE: 5\r\n\r\n",
                b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n",
            ),
        ] {
            let (lines, shared, map) = raw_lines(text);
            assert!(!shared, "{text:?}");
            assert_eq!(lines, expected, "{text:?}");
            assert_eq!(map["a"], "1");
            assert_eq!(map["b"], "2");
        }
    }

    #[test]
    fn parses_a_head_into_the_header_map() {
        let (r, rest) = head(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, x-hop\r\n\
             X-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
             Content-Length: 5\r\n\r\nhello",
            false,
        );
        let h = r.unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["content-type"], "text/plain");
        assert_eq!(h.headers.get_all("set-cookie").iter().count(), 2);
        // The body delimited by it tells its length itself.
        for gone in ["connection", "x-hop", "keep-alive", "content-length"] {
            assert!(!h.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(&rest[..], b"hello");
        // Without a body (HEAD, 204, 304) it says what the GET would send.
        for (head_request, status) in [(true, "200 OK"), (false, "304 Not Modified")] {
            let (r, _) = head(
                &format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n"),
                head_request,
            );
            let h = r.unwrap().unwrap();
            assert_eq!(h.framing, Framing::Empty);
            assert_eq!(h.headers["content-length"], "5", "{status}");
        }
    }

    #[test]
    fn most_fields_pass_as_they_came_and_back_into_a_map() {
        let (r, _) = head(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 30 Nov 2026 10:00:00 GMT\r\n\
             Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nSkewless-Served-By: spoofed\r\n\
             Content-Length: 5\r\nX-Nothing:\r\n\r\nhello",
            false,
        );
        let h = r.unwrap().unwrap();
        let raw = h.raw.clone().unwrap();
        assert!(raw.date);
        let mut lines = Vec::new();
        raw.write(&mut lines);
        assert_eq!(
            lines,
            b"Content-Type: text/plain\r\nDate: Mon, 30 Nov 2026 10:00:00 GMT\r\nX-Nothing:\r\n"
        );
        // What the gateway reads or replaces is in the map; the length
        // is the body's.
        assert!(!h.headers.contains_key("content-length"));
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(h.headers["skewless-served-by"], "spoofed");
        assert!(!h.headers.contains_key("content-type"));
        let mut map = h.headers.clone();
        raw.into_map(&mut map);
        assert_eq!(map["content-type"], "text/plain");
        assert_eq!(map.get_all("set-cookie").iter().count(), 2);
        assert_eq!(map["x-nothing"], "");
        assert_eq!(map.len(), 6);
        // No Date among them: the server side adds its own.
        let (r, _) = head("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", false);
        assert!(!r.unwrap().unwrap().raw.unwrap().date);
    }

    #[test]
    fn fields_the_gateway_sets_go_to_the_map() {
        for name in [
            "skewless-served-by",
            "skewless-current",
            "skewless-required",
        ] {
            let (r, _) = head(&format!("HTTP/1.1 200 OK\r\n{name}: x\r\n\r\n"), true);
            let h = r.unwrap().unwrap();
            assert!(h.raw.is_none(), "{name}");
            assert_eq!(h.headers[name], "x");
        }
    }

    #[test]
    fn every_field_looked_at_has_a_special_length() {
        for name in [
            "te",
            "upgrade",
            "connection",
            "keep-alive",
            "content-length",
            "proxy-connection",
            "transfer-encoding",
            "proxy-authenticate",
            "proxy-authorization",
        ] {
            assert!(SPECIAL_LENGTHS.contains(&name.len()), "{name}");
            let (r, _) = head(&format!("HTTP/1.1 200 OK\r\n{name}: 1\r\n\r\n"), true);
            let h = r.unwrap().unwrap();
            // Content-Length is read and passed on; the others only read.
            assert_eq!(
                h.headers.contains_key(name),
                name == "content-length",
                "{name}"
            );
        }
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let (r, rest) = head("HTTP/1.1 200 OK\r\nContent-Le", false);
        assert!(r.unwrap().is_none());
        assert_eq!(rest.len(), 27);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |text: &str, head_request| {
            let h = head(text, head_request).0.unwrap().unwrap();
            (h.framing, h.keep_alive)
        };
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            (Framing::Chunked, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            (Framing::Close, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::Close, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n", false),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false
            ),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing(
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            (Framing::Length(1), true)
        );
        // Transfer-Encoding wins over Content-Length, which is not passed on.
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .0
        .unwrap()
        .unwrap();
        assert!(!h.headers.contains_key("content-length"));
        assert!(!h.headers.contains_key("transfer-encoding"));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (r, rest) = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
             HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            false,
        );
        let h = r.unwrap().unwrap();
        assert_eq!(h.status, 201);
        assert!(!h.headers.contains_key("link"));
        assert_eq!(&rest[..], b"ok");
        // An interim response alone: the final one is still to come.
        let (r, rest) = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", false);
        assert!(r.unwrap().is_none());
        assert_eq!(&rest[..], b"HTTP/1.1 2");
    }

    #[test]
    fn malformed_heads_are_refused() {
        for text in [
            "garbage\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
        ] {
            assert!(head(text, false).0.is_err(), "{text:?}");
        }
        let many: String = (0..MAX_FIELDS + 1)
            .map(|i| format!("x-{i}: 1\r\n"))
            .collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false)
            .0
            .is_err());
        // Repeated equal lengths are one length.
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false).0;
        assert_eq!(h.unwrap().unwrap().framing, Framing::Length(3));
    }

    fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> (Vec<u8>, Option<HeaderMap>, bool) {
        let mut data = Vec::new();
        let mut trailers = None;
        loop {
            match decoder.decode(buf).unwrap() {
                Decoded::Data(b) => data.extend_from_slice(&b),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return (data, trailers, true),
                Decoded::More => return (data, trailers, false),
            }
        }
    }

    #[test]
    fn decodes_lengths() {
        let mut d = Decoder::new(Framing::Length(5));
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(decode_all(&mut d, &mut buf), (b"hel".to_vec(), None, false));
        assert_eq!(d.remaining(), Some(2));
        buf.extend_from_slice(b"loHTTP/1.1");
        assert_eq!(decode_all(&mut d, &mut buf), (b"lo".to_vec(), None, true));
        assert_eq!(&buf[..], b"HTTP/1.1");
        assert!(Decoder::new(Framing::Length(3)).at_eof().is_err());
        assert!(Decoder::new(Framing::Empty).is_done());
    }

    #[test]
    fn decodes_chunks_byte_by_byte_and_whole() {
        let wire: &[u8] =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 42\r\n\r\nnext";
        // Whole.
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(wire);
        let (data, trailers, ended) = decode_all(&mut d, &mut buf);
        assert!(ended);
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
        assert_eq!(trailers.unwrap()["x-sum"], "42");
        assert_eq!(&buf[..], b"next");
        // One byte at a time.
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        for &b in &wire[..wire.len() - 4] {
            assert!(!d.is_done());
            buf.extend_from_slice(&[b]);
            let (more, t, _) = decode_all(&mut d, &mut buf);
            data.extend(more);
            trailers = trailers.or(t);
        }
        assert!(d.is_done());
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
        assert_eq!(trailers.unwrap()["x-sum"], "42");
        // No trailers.
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\n"[..]);
        assert_eq!(decode_all(&mut d, &mut buf), (b"ok".to_vec(), None, true));
        assert!(d.at_eof().is_ok());
    }

    #[test]
    fn refuses_broken_chunks() {
        for wire in [
            &b"zz\r\n"[..],
            b"2\r\nokay\r\n",
            b"2\r\nok\r\n0\r\nbad field\r\n\r\n",
        ] {
            let mut d = Decoder::new(Framing::Chunked);
            let mut buf = BytesMut::from(wire);
            let broken = loop {
                match d.decode(&mut buf) {
                    Err(_) => break true,
                    Ok(Decoded::More | Decoded::End) => break false,
                    Ok(_) => {}
                }
            };
            assert!(broken, "{:?}", String::from_utf8_lossy(wire));
        }
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"5\r\nhel"[..]);
        let _ = decode_all(&mut d, &mut buf);
        assert!(d.at_eof().is_err());
    }

    #[test]
    fn close_delimited_bodies_end_at_eof() {
        let mut d = Decoder::new(Framing::Close);
        let mut buf = BytesMut::from(&b"all of it"[..]);
        assert_eq!(
            decode_all(&mut d, &mut buf),
            (b"all of it".to_vec(), None, false)
        );
        assert!(d.at_eof().is_ok());
        assert!(d.is_done());
    }

    #[test]
    fn writes_chunk_size_lines() {
        for (n, want) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (0x1f2e, "1f2e\r\n"),
        ] {
            let mut out = Vec::new();
            chunk_size_line(&mut out, n);
            assert_eq!(out, want.as_bytes());
        }
    }
}
