#![no_main]
//! Request paths: normalised paths never escape, and are stable.

use libfuzzer_sys::fuzz_target;
use skewless_core::path::{normalize_file_path, normalize_request_path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = normalize_request_path(&format!("/{s}")) {
        assert!(p.starts_with('/'));
        assert!(p.split('/').all(|seg| seg != ".." && seg != "."));
        assert!(!p.contains('\\') && !p.chars().any(char::is_control));
    }
    if let Ok(p) = normalize_file_path(s) {
        assert_eq!(normalize_file_path(&p).as_deref(), Ok(p.as_str()));
    }
});
