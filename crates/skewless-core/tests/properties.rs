//! Property tests of everything the domain parses from the wire: request
//! paths, release ids, pins and cookies, ranges, encodings, manifests.

use proptest::prelude::*;
use skewless_core::header::{cookie, negotiate_encoding, parse_range, Encoding, RangeRequest};
use skewless_core::manifest::{FileSpec, Manifest};
use skewless_core::path::{normalize_file_path, normalize_request_path};
use skewless_core::pin::pin_from;
use skewless_core::{BlobHash, ReleaseId};

/// Strings rich in the characters attacks use.
fn hostile() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E".to_owned()),
            Just("%2f".to_owned()),
            Just("%5c".to_owned()),
            Just("\\".to_owned()),
            Just("%00".to_owned()),
            Just("%c0%ae".to_owned()),
            Just("%25".to_owned()),
            Just("%".to_owned()),
            "[a-zA-Z0-9_.-]{1,6}",
            any::<char>().prop_map(|c| c.to_string()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn normalized_paths_never_escape(raw in hostile()) {
        let raw = format!("/{raw}");
        if let Ok(p) = normalize_request_path(&raw) {
            prop_assert!(p.starts_with('/'));
            prop_assert!(!p.contains("//"), "{p}");
            prop_assert!(p.split('/').all(|seg| seg != ".." && seg != "."), "{p}");
            prop_assert!(!p.contains('\\'), "{p}");
            prop_assert!(!p.chars().any(char::is_control), "{p:?}");
            if !p.contains('%') {
                let again = normalize_request_path(&p);
                prop_assert_eq!(again.as_deref(), Ok(&*p));
            }
        }
    }

    #[test]
    fn file_paths_are_canonical_or_refused(raw in hostile()) {
        if let Ok(p) = normalize_file_path(&raw) {
            prop_assert!(p.starts_with('/'));
            prop_assert!(p[1..].split('/').all(|seg| !seg.is_empty() && seg != ".." && seg != "."), "{p}");
            prop_assert!(!p.contains('\\'));
        }
    }

    #[test]
    fn release_ids_follow_the_rule(s in "\\PC{0,70}") {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        prop_assert_eq!(ReleaseId::parse(&s).is_ok(), ok, "{:?}", s);
        if let Ok(id) = ReleaseId::parse(&s) {
            prop_assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn pins_are_valid_ids_or_nothing(h in proptest::option::of(hostile()), c in proptest::option::of(hostile())) {
        if let Some(p) = pin_from(h.as_deref(), c.as_deref()) {
            prop_assert!(ReleaseId::parse(p.as_str()).is_ok());
        }
        if let Some(c) = &c {
            let _ = cookie(c, "skewless_release");
        }
    }

    #[test]
    fn ranges_stay_inside_the_body(h in "\\PC{0,40}", len in 0u64..10_000) {
        let header = format!("bytes={h}");
        for candidate in [h.as_str(), header.as_str()] {
            match parse_range(Some(candidate), len) {
                RangeRequest::Partial { start, end } => {
                    prop_assert!(start <= end && end < len, "{candidate} / {len}: {start}-{end}");
                }
                RangeRequest::Full | RangeRequest::Unsatisfiable => {}
            }
        }
    }

    #[test]
    fn negotiation_never_picks_a_missing_variant(accept in "\\PC{0,60}", br: bool, gz: bool) {
        match negotiate_encoding(Some(&accept), br, gz) {
            Encoding::Br => prop_assert!(br),
            Encoding::Gzip => prop_assert!(gz),
            Encoding::Identity => {}
        }
    }

    #[test]
    fn manifests_are_canonical_or_refused(paths in proptest::collection::vec(hostile(), 0..8)) {
        let mut specs: Vec<FileSpec> = paths
            .iter()
            .map(|p| FileSpec { path: p.clone(), hash: BlobHash::from_bytes(&[7; 32]), size: 1 })
            .collect();
        specs.push(FileSpec { path: "index.html".into(), hash: BlobHash::from_bytes(&[1; 32]), size: 1 });
        if let Ok(m) = Manifest::from_specs(&specs) {
            for p in m.files.keys() {
                let again = normalize_file_path(p);
                prop_assert!(again.as_deref() == Ok(p.as_str()), "{p}");
                prop_assert!(!p.starts_with("/_r/") && !p.starts_with("/_skewless/"));
            }
        }
    }

    #[test]
    fn manifest_json_decoding_never_panics(json in "\\PC{0,200}") {
        let _ = serde_json::from_str::<Vec<FileSpec>>(&json);
        let _ = serde_json::from_str::<Manifest>(&json);
    }
}
