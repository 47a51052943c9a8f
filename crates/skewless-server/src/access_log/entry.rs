//! A line's fields as they wait in a queue: packed into bytes by the
//! request's thread (a few stores and the strings copied), formatted into
//! JSON by the writer, many at a time, where the formatting code stays in
//! the instruction cache and off the requests' thread.
//!
//! An entry is [`HEAD`] bytes of fixed fields, then the method, path,
//! release and pin back to back. Lengths are `u32`s, [`NONE`] for a field
//! that is absent; every number is little-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use super::line::{Fields, LogKind};

/// Bytes of an entry before its strings.
pub const HEAD: usize = 64;
/// The length of a string that is absent.
const NONE: u32 = u32::MAX;

/// The bytes `f` takes as an entry.
pub fn size(f: &Fields<'_>) -> usize {
    HEAD + [f.method, f.path, f.release, f.pin]
        .iter()
        .map(|s| s.map_or(0, str::len))
        .sum::<usize>()
}

/// Appends `f` to `out` as one entry.
pub fn encode(out: &mut Vec<u8>, f: &Fields<'_>) {
    let since = f
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    // In u64 (half a million years, saturating past), as the line has it.
    let micros = f
        .duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(f.duration.subsec_micros()));
    let mut head = [0u8; HEAD];
    head[0..8].copy_from_slice(&since.as_secs().to_le_bytes());
    head[8..12].copy_from_slice(&since.subsec_nanos().to_le_bytes());
    match f.client {
        IpAddr::V4(a) => {
            head[12] = 4;
            head[13..17].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            head[12] = 6;
            head[13..29].copy_from_slice(&a.octets());
        }
    }
    head[29..31].copy_from_slice(&f.status.to_le_bytes());
    head[31] = kind_code(f.kind);
    head[32..40].copy_from_slice(&f.bytes.to_le_bytes());
    head[40..48].copy_from_slice(&micros.to_le_bytes());
    for (i, s) in [f.method, f.path, f.release, f.pin].iter().enumerate() {
        let len = s.map_or(NONE, |s| u32::try_from(s.len()).unwrap_or(NONE - 1));
        head[48 + 4 * i..52 + 4 * i].copy_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&head);
    for s in [f.method, f.path, f.release, f.pin].into_iter().flatten() {
        // Nothing near 4 GiB reaches here: a request's head is bounded.
        let len = s.len().min(NONE as usize - 1);
        out.extend_from_slice(&s.as_bytes()[..len]);
    }
}

/// The entry at the start of `buf` and the bytes it takes; `None` when
/// `buf` holds no whole entry (never, for what [`encode`] wrote).
pub fn decode(buf: &[u8]) -> Option<(Fields<'_>, usize)> {
    let head: &[u8; HEAD] = buf.get(..HEAD)?.try_into().ok()?;
    let u64_at = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
    let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().unwrap_or_default());
    let time = SystemTime::UNIX_EPOCH + Duration::new(u64_at(0), u32_at(8));
    let client = match head[12] {
        4 => IpAddr::V4(Ipv4Addr::new(head[13], head[14], head[15], head[16])),
        _ => {
            let octets: [u8; 16] = head[13..29].try_into().unwrap_or_default();
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    };
    let mut at = HEAD;
    let mut strings = [None; 4];
    for (i, s) in strings.iter_mut().enumerate() {
        let len = u32_at(48 + 4 * i);
        if len != NONE {
            let bytes = buf.get(at..at + len as usize)?;
            *s = Some(std::str::from_utf8(bytes).ok()?);
            at += len as usize;
        }
    }
    let [method, path, release, pin] = strings;
    Some((
        Fields {
            time,
            client,
            method,
            path,
            status: u16::from_le_bytes([head[29], head[30]]),
            bytes: u64_at(32),
            duration: Duration::from_micros(u64_at(40)),
            release,
            pin,
            kind: kind_of(head[31]),
        },
        at,
    ))
}

fn kind_code(kind: LogKind) -> u8 {
    match kind {
        LogKind::Shell => 0,
        LogKind::Asset => 1,
        LogKind::Api => 2,
        LogKind::System => 3,
        LogKind::EventStream => 4,
    }
}

fn kind_of(code: u8) -> LogKind {
    match code {
        0 => LogKind::Shell,
        1 => LogKind::Asset,
        2 => LogKind::Api,
        4 => LogKind::EventStream,
        _ => LogKind::System,
    }
}

#[cfg(test)]
mod tests {
    use super::super::line::{tests::fields, write_line};
    use super::*;

    fn through_a_queue(f: &Fields<'_>) -> Vec<u8> {
        let mut queued = Vec::new();
        encode(&mut queued, f);
        assert_eq!(queued.len(), size(f));
        let (back, used) = decode(&queued).unwrap();
        assert_eq!(used, queued.len());
        let mut line = Vec::new();
        write_line(&mut line, &back);
        line
    }

    #[test]
    fn a_queued_entry_makes_the_line_its_fields_make() {
        let long = format!("/{}", "\u{e9}\"\n".repeat(300));
        let mut cases = vec![
            fields(Some("/app.js")),
            fields(None),
            fields(Some(&long)),
            fields(Some("")),
        ];
        let mut other = fields(Some("/x"));
        other.client = "203.0.113.9".parse().unwrap();
        other.method = Some("PROPFIND");
        other.release = None;
        other.pin = None;
        other.status = 431;
        other.bytes = u64::MAX;
        other.duration = Duration::MAX;
        other.kind = LogKind::EventStream;
        other.time = SystemTime::UNIX_EPOCH + Duration::new(4_102_444_799, 999_999_999);
        cases.push(other);
        let mut bare = fields(None);
        bare.method = None;
        bare.time = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        bare.kind = LogKind::System;
        cases.push(bare);
        for kind in [LogKind::Shell, LogKind::Asset, LogKind::Api] {
            let mut k = fields(Some("/k"));
            k.kind = kind;
            cases.push(k);
        }
        for f in &cases {
            let mut direct = Vec::new();
            write_line(&mut direct, f);
            assert_eq!(
                String::from_utf8(through_a_queue(f)).unwrap(),
                String::from_utf8(direct).unwrap(),
                "{f:?}"
            );
        }
    }

    #[test]
    fn entries_follow_one_another_and_a_cut_one_is_not_read() {
        let (a, b) = (fields(Some("/a")), fields(Some("/bb")));
        let mut queued = Vec::new();
        encode(&mut queued, &a);
        encode(&mut queued, &b);
        let (first, used) = decode(&queued).unwrap();
        assert_eq!(first.path, Some("/a"));
        let (second, rest) = decode(&queued[used..]).unwrap();
        assert_eq!(second.path, Some("/bb"));
        assert_eq!(used + rest, queued.len());
        for cut in 0..queued.len() - used {
            assert!(decode(&queued[used..used + cut]).is_none(), "{cut}");
        }
    }
}
