#![no_main]
//! The shell rewriter over arbitrary HTML.

use libfuzzer_sys::fuzz_target;
use skewless_core::manifest::{FileSpec, Manifest};
use skewless_core::{BlobHash, ReleaseId};

fuzz_target!(|data: &[u8]| {
    let Ok(html) = std::str::from_utf8(data) else { return };
    let specs: Vec<FileSpec> = ["index.html", "a.js", "assets/b.css"]
        .iter()
        .map(|p| FileSpec { path: (*p).into(), hash: BlobHash::from_bytes(&[1; 32]), size: 1 })
        .collect();
    let m = Manifest::from_specs(&specs).expect("fixed manifest");
    let id = ReleaseId::parse("v1").expect("fixed id");
    if let Ok(out) = skewless_server::shell::rewrite(html, &id, &m) {
        assert!(out.contains("<meta name=\"skewless-release\" content=\"v1\">"));
    }
});
