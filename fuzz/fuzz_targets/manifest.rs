#![no_main]
//! Manifests as the admin API decodes them.

use libfuzzer_sys::fuzz_target;
use skewless_core::manifest::{FileSpec, Manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(specs) = serde_json::from_slice::<Vec<FileSpec>>(data) {
        if let Ok(m) = Manifest::from_specs(&specs) {
            assert!(m.files.contains_key("/index.html"));
            assert!(m.files.keys().all(|p| p.starts_with('/') && !p.contains("/../")));
        }
    }
    let _ = serde_json::from_slice::<Manifest>(data);
});
