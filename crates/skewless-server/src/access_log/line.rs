//! One access-log line: its fields and their JSON form.

use std::cell::Cell;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

/// What a request was, as the log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// The shell (a page load).
    Shell,
    /// A file of a release.
    Asset,
    /// A proxied API call.
    Api,
    /// Anything else under `/_skewless/`, and refusals before routing.
    System,
    /// `/_skewless/events`.
    EventStream,
}

impl LogKind {
    /// The line's last field and its end.
    fn line_end(self) -> &'static [u8] {
        match self {
            LogKind::Shell => b",\"kind\":\"shell\"}\n",
            LogKind::Asset => b",\"kind\":\"asset\"}\n",
            LogKind::Api => b",\"kind\":\"api\"}\n",
            LogKind::System => b",\"kind\":\"system\"}\n",
            LogKind::EventStream => b",\"kind\":\"event-stream\"}\n",
        }
    }
}

/// One line's fields.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// The client's address.
    pub client: IpAddr,
    /// The request method; `None` when the request could not be parsed.
    pub method: Option<&'a str>,
    /// The request path without its query; `None` when unparsable.
    pub path: Option<&'a str>,
    /// The response status.
    pub status: u16,
    /// Response body bytes written.
    pub bytes: u64,
    /// From the request's arrival to the last body byte handed to the
    /// connection.
    pub duration: Duration,
    /// The release that answered (`Skewless-Served-By`).
    pub release: Option<&'a str>,
    /// The release the client says it runs.
    pub pin: Option<&'a str>,
    /// What the request was.
    pub kind: LogKind,
}

/// Appends one line, newline included, to `out`.
///
/// Formatting is by hand, not through `format_args!`: a line is written
/// for every request. Constant text and the small numbers beside it are
/// put together on the stack and appended in one piece, so the line takes
/// about a dozen appends.
pub fn write_line(out: &mut Vec<u8>, f: &Fields<'_>) {
    timestamp(out, f.time);
    match f.client {
        IpAddr::V4(v4) => crate::proxy::push_ipv4(out, v4),
        // Writing into a Vec cannot fail.
        IpAddr::V6(v6) => drop(write!(out, "{v6}")),
    }
    match f.method.and_then(method_text) {
        Some(text) => out.extend_from_slice(text),
        None => {
            out.extend_from_slice(b"\",\"method\":");
            string(out, f.method);
            out.extend_from_slice(b",\"path\":");
        }
    }
    string(out, f.path);
    numbers(out, f);
    string(out, f.release);
    out.extend_from_slice(b",\"pin\":");
    string(out, f.pin);
    out.extend_from_slice(f.kind.line_end());
}

/// Status, bytes and duration, with their names, and the name of the
/// release after them: put together on the stack, digits by hand, and
/// appended in one piece.
fn numbers(out: &mut Vec<u8>, f: &Fields<'_>) {
    // Room for the names, the largest u16 and two u64s in decimal, and
    // the duration's decimals.
    let mut part = [0u8; 96];
    let mut at = put(&mut part, 0, b",\"status\":");
    at = match f.status {
        100..=999 => {
            put_three_digits(&mut part[at..at + 3], f.status);
            at + 3
        }
        other => put_decimal(&mut part, at, u64::from(other)),
    };
    at = put(&mut part, at, b",\"bytes\":");
    at = put_decimal(&mut part, at, f.bytes);
    at = put(&mut part, at, b",\"duration_ms\":");
    // In u64 (half a million years, saturating past), not the u128
    // `as_micros` gives: 128-bit division is a call of its own.
    let micros = f
        .duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(f.duration.subsec_micros()));
    at = put_decimal(&mut part, at, micros / 1000);
    part[at] = b'.';
    put_three_digits(&mut part[at + 1..at + 4], (micros % 1000) as u16);
    at = put(&mut part, at + 4, b",\"release\":");
    out.extend_from_slice(&part[..at]);
}

/// Copies `text` to `buf` at `at`; says where it ends.
fn put(buf: &mut [u8], at: usize, text: &[u8]) -> usize {
    buf[at..at + text.len()].copy_from_slice(text);
    at + text.len()
}

/// "00" to "99", back to back.
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Writes `n` in decimal to `buf` at `at`, two digits at a time; says
/// where it ends.
fn put_decimal(buf: &mut [u8], at: usize, mut n: u64) -> usize {
    let end = at + n.checked_ilog10().map_or(1, |l| l as usize + 1);
    let mut i = end;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        buf[i - 2..i].copy_from_slice(&PAIRS[pair..pair + 2]);
        i -= 2;
    }
    if n >= 10 {
        let pair = n as usize * 2;
        buf[i - 2..i].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        buf[i - 1] = b'0' + n as u8;
    }
    end
}

/// The text from the end of the client address to the start of the path
/// for the usual methods, which need no escaping.
fn method_text(m: &str) -> Option<&'static [u8]> {
    Some(match m {
        "GET" => b"\",\"method\":\"GET\",\"path\":",
        "HEAD" => b"\",\"method\":\"HEAD\",\"path\":",
        "POST" => b"\",\"method\":\"POST\",\"path\":",
        "PUT" => b"\",\"method\":\"PUT\",\"path\":",
        "PATCH" => b"\",\"method\":\"PATCH\",\"path\":",
        "DELETE" => b"\",\"method\":\"DELETE\",\"path\":",
        "OPTIONS" => b"\",\"method\":\"OPTIONS\",\"path\":",
        _ => return None,
    })
}

/// `n` (below 1000) as three digits, in place.
fn put_three_digits(at: &mut [u8], n: u16) {
    at[0] = b'0' + (n / 100 % 10) as u8;
    at[1] = b'0' + (n / 10 % 10) as u8;
    at[2] = b'0' + (n % 10) as u8;
}

/// The line's start, `{"time":"…"` in RFC 3339 in UTC with milliseconds,
/// and the opening of the client address. The part up to the seconds
/// changes once a second, so each thread keeps its last one.
fn timestamp(out: &mut Vec<u8>, t: SystemTime) {
    const SECONDS: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    /// `{"time":"` and the seconds.
    type Start = [u8; 28];
    thread_local! {
        static LAST: Cell<(u64, Start)> = const { Cell::new((u64::MAX, [0; 28])) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut start) = LAST.get();
    if cached != secs {
        let mut buf = Vec::with_capacity(start.len());
        buf.extend_from_slice(b"{\"time\":\"");
        let formatted = i64::try_from(secs)
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .and_then(|dt| dt.format_into(&mut buf, SECONDS).ok());
        // Years past 9999 do not fit the format; they never occur.
        if formatted.is_none() || buf.len() != start.len() {
            out.extend_from_slice(b"{\"time\":\"0000-00-00T00:00:00.000Z\",\"client\":\"");
            return;
        }
        start.copy_from_slice(&buf);
        LAST.set((secs, start));
    }
    out.extend_from_slice(&start);
    let mut rest = *b".000Z\",\"client\":\"";
    put_three_digits(&mut rest[1..4], since.subsec_millis() as u16);
    out.extend_from_slice(&rest);
}

/// A JSON string, or `null`. Inlined: three of its four uses are short
/// ids or `null`, for which the call would cost more than the work.
#[inline(always)]
fn string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        // The usual path, method or release id needs no escape: copied as
        // is, which is what the escaping writer would write.
        Some(s) if !any_needs_escape(s.as_bytes()) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        // Writing into a Vec cannot fail.
        Some(s) => drop(serde_json::to_writer(&mut *out, s)),
        None => out.extend_from_slice(b"null"),
    }
}

/// Whether JSON needs `b` escaped inside a string.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `s` needs escaping, eight bytes at a time: a word
/// has a byte below `n` (at most 0x80) exactly when
/// `(w - n·0x01…) & !w & 0x80…` is not zero, and a byte equal to `c`
/// exactly when `w ^ c·0x01…` has a byte below 1.
fn any_needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    fn below(w: u64, n: u8) -> u64 {
        w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
    }
    let mut words = s.chunks_exact(8);
    for chunk in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let w = u64::from_le_bytes(b);
        if below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            != 0
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| needs_escape(b))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A line's fields with every one set.
    pub(crate) fn fields(path: Option<&str>) -> Fields<'_> {
        Fields {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_479_223_045),
            client: "2001:db8::1".parse().unwrap(),
            method: Some("GET"),
            path,
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(2_005_007),
            release: Some("v2"),
            pin: Some("v1"),
            kind: LogKind::Asset,
        }
    }

    fn line(f: &Fields<'_>) -> String {
        let mut out = Vec::new();
        write_line(&mut out, f);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let text = line(&fields(Some("/assets/app.js")));
        assert_eq!(
            text,
            "{\"time\":\"2025-11-30T05:07:03.045Z\",\"client\":\"2001:db8::1\",\"method\":\"GET\",\
             \"path\":\"/assets/app.js\",\"status\":200,\"bytes\":1234,\"duration_ms\":2005.007,\
             \"release\":\"v2\",\"pin\":\"v1\",\"kind\":\"asset\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["duration_ms"].as_f64(), Some(2005.007));
    }

    #[test]
    fn quotes_backslashes_and_control_characters_are_escaped() {
        let nasty = "/a\"b\\c\nd\re\u{1}f\u{7f}g\u{e9}\t\"}{";
        let text = line(&fields(Some(nasty)));
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with("}\n"));
        assert!(!text.bytes().any(|b| b < 0x20 && b != b'\n'), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["path"], nasty);
        assert_eq!(v["kind"], "asset");
    }

    #[test]
    fn strings_are_written_as_the_json_writer_writes_them() {
        for s in [
            "",
            "/",
            "/assets/app-3f9a.js",
            "/caf\u{e9}/\u{7f}~%20",
            "/a\"b",
            "/a\\b",
            "/tab\there",
            "\u{1f}",
        ] {
            let mut ours = Vec::new();
            string(&mut ours, Some(s));
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_byte_check() {
        // Every byte value at every place of strings of 1 to 24 bytes,
        // among bytes that need no escape.
        for len in 1..=24 {
            for at in 0..len {
                for v in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = v;
                    assert_eq!(
                        any_needs_escape(&s),
                        needs_escape(v),
                        "byte {v:#x} at {at} of {len}"
                    );
                }
            }
        }
        // High bytes around the limits (UTF-8 continuation bytes).
        assert!(!any_needs_escape(&[
            0x80, 0xff, 0xa0, 0xdc, 0xa2, 0xbc, 0x9f, 0xe0, 0x20
        ]));
        assert!(!any_needs_escape(b""));
    }

    #[test]
    fn every_method_and_kind_is_written_whole() {
        let kinds = [
            (LogKind::Shell, "shell"),
            (LogKind::Asset, "asset"),
            (LogKind::Api, "api"),
            (LogKind::System, "system"),
            (LogKind::EventStream, "event-stream"),
        ];
        let methods = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "TRACE",
        ];
        for (m, (kind, name)) in methods.iter().zip(kinds.iter().cycle()) {
            let mut f = fields(Some("/p"));
            f.method = Some(m);
            f.kind = *kind;
            f.status = 99;
            let v: serde_json::Value = serde_json::from_str(&line(&f)).unwrap();
            assert_eq!(v["method"], *m);
            assert_eq!(v["kind"], *name);
            assert_eq!(v["status"], 99);
            assert_eq!(v["path"], "/p");
        }
    }

    #[test]
    fn numbers_are_exact_at_their_limits() {
        for (status, bytes, micros) in [
            (0u16, 0u64, 0u64),
            (99, 9, 999),
            (100, 10, 1_000),
            (200, 1234, 2_005_007),
            (999, 99_999, 999_999),
            (1000, 100_000, 1_000_000),
            (u16::MAX, u64::MAX, u64::MAX / 1_000_000 * 1_000_000 - 1),
        ]
        .into_iter()
        .chain((0..20).map(|k| (200, 10u64.pow(k) - 1, 10u64.pow(k.min(18)))))
        .chain((0..20).map(|k| (200, 10u64.pow(k), 10u64.pow(k.min(18)) + 1)))
        {
            let mut f = fields(Some("/"));
            f.status = status;
            f.bytes = bytes;
            f.duration = Duration::from_micros(micros);
            let text = line(&f);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["status"].as_u64(), Some(u64::from(status)), "{text}");
            assert_eq!(v["bytes"].as_u64(), Some(bytes), "{text}");
            let ms = format!("\"duration_ms\":{}.{:03},", micros / 1000, micros % 1000);
            assert!(text.contains(&ms), "{text} lacks {ms}");
        }
        // A duration past what u64 microseconds hold is written as that.
        let mut f = fields(Some("/"));
        f.duration = Duration::MAX;
        let text = line(&f);
        assert!(
            text.contains("\"duration_ms\":18446744073709551.615,"),
            "{text}"
        );
    }

    #[test]
    fn decimals_agree_with_the_standard_formatting() {
        let edges = (0..20).flat_map(|k| {
            let p = 10u64.pow(k);
            [p - 1, p, p + 1, p.saturating_mul(7) / 3]
        });
        for n in (0..10_000u64).chain(edges).chain([u64::MAX, u64::MAX - 1]) {
            let mut buf = [0u8; 24];
            let end = put_decimal(&mut buf, 2, n);
            assert_eq!(&buf[2..end], n.to_string().as_bytes(), "{n}");
            assert_eq!(buf[..2], [0, 0]);
        }
    }

    #[test]
    fn unknown_fields_are_null() {
        let mut f = fields(None);
        f.method = None;
        f.release = None;
        f.pin = None;
        f.kind = LogKind::EventStream;
        f.client = "127.0.0.1".parse().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line(&f)).unwrap();
        assert!(v["method"].is_null() && v["path"].is_null());
        assert!(v["release"].is_null() && v["pin"].is_null());
        assert_eq!(v["kind"], "event-stream");
        assert_eq!(v["client"], "127.0.0.1");
    }

    #[test]
    fn a_long_line_is_whole() {
        let long = format!("/{}", "x".repeat(5000));
        let v: serde_json::Value = serde_json::from_str(&line(&fields(Some(&long)))).unwrap();
        assert_eq!(v["path"], long.as_str());
    }

    #[test]
    fn times_and_addresses_are_exact_across_seconds() {
        let at = |ms: u64, ip: &str| {
            let mut f = fields(Some("/"));
            f.time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            f.client = ip.parse().unwrap();
            f.duration = Duration::from_micros(7);
            let v: serde_json::Value = serde_json::from_str(&line(&f)).unwrap();
            (
                v["time"].as_str().unwrap().to_owned(),
                v["client"].as_str().unwrap().to_owned(),
                v["duration_ms"].as_f64().unwrap(),
            )
        };
        // The same second twice, the next one, then back: the cached part
        // follows.
        assert_eq!(
            at(1_764_479_223_999, "10.0.255.1").0,
            "2025-11-30T05:07:03.999Z"
        );
        assert_eq!(
            at(1_764_479_223_000, "0.0.0.0").0,
            "2025-11-30T05:07:03.000Z"
        );
        assert_eq!(
            at(1_764_479_224_001, "1.2.3.4").0,
            "2025-11-30T05:07:04.001Z"
        );
        assert_eq!(at(951_782_400_010, "1.2.3.4").0, "2000-02-29T00:00:00.010Z");
        assert_eq!(at(0, "255.255.255.255").1, "255.255.255.255");
        assert_eq!(at(0, "10.0.255.1").1, "10.0.255.1");
        assert_eq!(at(0, "::ffff:10.0.0.1").1, "::ffff:10.0.0.1");
        assert_eq!(at(0, "1.2.3.4").2, 0.007);
    }
}
