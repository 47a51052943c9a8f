//! One access-log line: its fields and their JSON form.

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

/// Bytes of a line kept inline in its channel slot; longer lines (long
/// paths) take a heap buffer.
const INLINE: usize = 440;

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
    fn as_str(self) -> &'static str {
        match self {
            LogKind::Shell => "shell",
            LogKind::Asset => "asset",
            LogKind::Api => "api",
            LogKind::System => "system",
            LogKind::EventStream => "event-stream",
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

/// Writes one line, newline included.
pub fn write_line(w: &mut impl Write, f: &Fields<'_>) -> io::Result<()> {
    const TIME: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    w.write_all(b"{\"time\":\"")?;
    OffsetDateTime::from(f.time)
        .format_into(w, TIME)
        .map_err(io::Error::other)?;
    write!(w, "\",\"client\":\"{}\",\"method\":", f.client)?;
    string(w, f.method)?;
    w.write_all(b",\"path\":")?;
    string(w, f.path)?;
    let micros = f.duration.as_micros();
    write!(
        w,
        ",\"status\":{},\"bytes\":{},\"duration_ms\":{}.{:03},\"release\":",
        f.status,
        f.bytes,
        micros / 1000,
        micros % 1000
    )?;
    string(w, f.release)?;
    w.write_all(b",\"pin\":")?;
    string(w, f.pin)?;
    writeln!(w, ",\"kind\":\"{}\"}}", f.kind.as_str())
}

/// A JSON string, or `null`.
fn string(w: &mut impl Write, s: Option<&str>) -> io::Result<()> {
    match s {
        Some(s) => serde_json::to_writer(w, s).map_err(io::Error::other),
        None => w.write_all(b"null"),
    }
}

/// One formatted line on its way to the writer.
// Large on purpose: a usual line crosses the channel in its slot, with no
// heap allocation per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Line {
    Inline { len: u16, bytes: [u8; INLINE] },
    Heap(Vec<u8>),
}

impl Line {
    pub(super) fn format(f: &Fields<'_>) -> Line {
        let mut bytes = [0u8; INLINE];
        let mut cursor = io::Cursor::new(&mut bytes[..]);
        if write_line(&mut cursor, f).is_ok() {
            // The cursor is over INLINE bytes, which fits u16.
            let len = cursor.position() as u16;
            return Line::Inline { len, bytes };
        }
        let mut v = Vec::with_capacity(INLINE * 2 + f.path.map_or(0, str::len));
        // Writing into a Vec cannot fail.
        let _ = write_line(&mut v, f);
        Line::Heap(v)
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            Line::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Line::Heap(v) => v,
        }
    }
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
        let l = Line::format(f);
        String::from_utf8(l.as_bytes().to_vec()).unwrap()
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
    fn long_lines_leave_the_inline_slot_whole() {
        let long = format!("/{}", "x".repeat(5000));
        let l = Line::format(&fields(Some(&long)));
        assert!(matches!(l, Line::Heap(_)));
        let v: serde_json::Value = serde_json::from_slice(l.as_bytes()).unwrap();
        assert_eq!(v["path"], long.as_str());
        let short = Line::format(&fields(Some("/")));
        assert!(matches!(short, Line::Inline { .. }));
    }
}
