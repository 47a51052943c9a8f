#![no_main]
//! Release ids, pins, cookies, ranges and encodings from arbitrary header text.

use libfuzzer_sys::fuzz_target;
use skewless_core::header::{cookie, negotiate_encoding, parse_range, RangeRequest};
use skewless_core::pin::pin_from;
use skewless_core::ReleaseId;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mid = (0..=s.len() / 2).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    let (a, b) = s.split_at(mid);
    if let Some(p) = pin_from(Some(a), Some(b)) {
        assert!(ReleaseId::parse(p.as_str()).is_ok());
    }
    let _ = cookie(s, "skewless_release");
    let _ = negotiate_encoding(Some(s), true, true);
    let len = data.len() as u64 * 7;
    if let RangeRequest::Partial { start, end } = parse_range(Some(s), len) {
        assert!(start <= end && end < len);
    }
});
