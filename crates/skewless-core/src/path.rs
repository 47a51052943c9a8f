//! Path normalisation: request paths from the wire and file paths inside a
//! release. Both end in the same canonical form, `/seg/seg/name`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use thiserror::Error;

use crate::CoreError;

/// Longest file path accepted inside a release, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Why a request path was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("request path must start with /")]
    NotAbsolute,
    /// A `%` escape decodes to bytes that are not UTF-8.
    #[error("request path is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    /// A `..` segment, in any encoding.
    #[error("request path contains a .. segment")]
    DotDot,
    /// A backslash, in any encoding.
    #[error("request path contains a backslash")]
    Backslash,
    /// NUL or another control character.
    #[error("request path contains a control character")]
    Control,
    /// Longer than [`MAX_PATH_LEN`].
    #[error("request path is too long")]
    TooLong,
}

/// Normalises the path of a request URI (without its query) to the canonical
/// form: percent-decoded once, `.` and empty segments dropped. Anything that
/// could address outside a release (`..`, backslashes, NUL) is refused rather
/// than resolved, in every encoding.
pub fn normalize_request_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.len() > MAX_PATH_LEN * 3 {
        return Err(PathError::TooLong);
    }
    if is_already_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    decode_and_normalize(raw).map(Cow::Owned)
}

fn decode_and_normalize(raw: &str) -> Result<String, PathError> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?;
    if decoded.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in decoded.split('/') {
        check_segment(seg)?;
        if seg.is_empty() || seg == "." {
            continue;
        }
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether `raw` (absolute, not too long) is its own normal form: printable
/// ASCII without escapes or backslashes, and no empty, `.` or `..` segment.
/// Most requests are, and skip decoding and rebuilding.
fn is_already_normal(raw: &str) -> bool {
    if raw == "/" {
        return true;
    }
    if raw.len() > MAX_PATH_LEN {
        return false;
    }
    // One pass over the bytes (after the leading `/`, which the caller
    // checked), each segment judged at its end.
    fn segment_ok(seg: &[u8]) -> bool {
        !seg.is_empty() && seg != b"." && seg != b".."
    }
    let bytes = raw.as_bytes();
    let mut start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if b == b'/' {
            if !segment_ok(&bytes[start..i]) {
                return false;
            }
            start = i + 1;
        } else if !(0x21..=0x7e).contains(&b) || b == b'%' || b == b'\\' {
            return false;
        }
    }
    segment_ok(&bytes[start..])
}

fn check_segment(seg: &str) -> Result<(), PathError> {
    if seg == ".." {
        return Err(PathError::DotDot);
    }
    for c in seg.chars() {
        if c == '\\' {
            return Err(PathError::Backslash);
        }
        if c.is_control() {
            return Err(PathError::Control);
        }
    }
    Ok(())
}

/// Validates a file path as sent by `deploy` (relative, `/`-separated) and
/// returns its canonical form with a leading `/`.
pub fn normalize_file_path(rel: &str) -> Result<String, CoreError> {
    let invalid = |reason| CoreError::InvalidPath {
        path: rel.chars().take(200).collect(),
        reason,
    };
    let rel = rel.strip_prefix('/').unwrap_or(rel);
    if rel.is_empty() {
        return Err(invalid("empty path"));
    }
    if rel.len() > MAX_PATH_LEN {
        return Err(invalid("longer than 1024 bytes"));
    }
    let mut out = String::with_capacity(rel.len() + 1);
    for seg in rel.split('/') {
        match seg {
            "" => return Err(invalid("empty path segment")),
            "." | ".." => return Err(invalid("relative segment . or ..")),
            _ => {}
        }
        check_segment(seg).map_err(|e| match e {
            PathError::Backslash => invalid("contains a backslash"),
            _ => invalid("contains a control character"),
        })?;
        out.push('/');
        out.push_str(seg);
    }
    Ok(out)
}

/// The last segment of a canonical path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The extension of a canonical path's last segment, if it has one.
pub fn extension(path: &str) -> Option<&str> {
    let name = file_name(path);
    match name.rfind('.') {
        Some(0) | None => None,
        Some(i) => Some(&name[i + 1..]),
    }
}

/// Splits `/_r/<id>/<rest>` into the id text and the rest (with its leading
/// `/`). The id is not validated here.
pub fn split_versioned(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/_r/")?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_normal_paths_are_what_decoding_makes_of_them() {
        for raw in [
            "/",
            "/app.js",
            "/assets/app-3f9a2b1c.js",
            "/a/b/c",
            "/_r/v1/index.html",
            "/a.b/.c/d..e",
            "/~user/x=y&z",
        ] {
            assert!(is_already_normal(raw), "{raw}");
            assert_eq!(decode_and_normalize(raw).unwrap(), raw);
        }
        for raw in [
            "/a//b", "/a/", "/a/./b", "/a/../b", "/./a", "/a%20b", "/a b", "/a\\b", "/é", "/a/.",
            "/a/..",
        ] {
            assert!(!is_already_normal(raw), "{raw}");
        }
    }

    #[test]
    fn canonicalises() {
        assert_eq!(normalize_request_path("/").unwrap(), "/");
        assert_eq!(normalize_request_path("//a///b/./c").unwrap(), "/a/b/c");
        assert_eq!(normalize_request_path("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize_request_path("/a%20b.js").unwrap(), "/a b.js");
        assert_eq!(normalize_request_path("/%2e/x").unwrap(), "/x");
    }

    #[test]
    fn refuses_traversal_in_every_encoding() {
        for p in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/.%2e/x",
            "/a%2f..%2fb",
            "/a/..",
        ] {
            assert_eq!(normalize_request_path(p), Err(PathError::DotDot), "{p}");
        }
        for p in ["/a\\b", "/a%5cb", "/a%5C..%5Cb"] {
            assert_eq!(normalize_request_path(p), Err(PathError::Backslash), "{p}");
        }
        for p in ["/a%00b", "/a\0b", "/a%0ab", "/a%7f"] {
            assert_eq!(normalize_request_path(p), Err(PathError::Control), "{p}");
        }
        assert_eq!(normalize_request_path("/%ff"), Err(PathError::NotUtf8));
        assert_eq!(normalize_request_path("a"), Err(PathError::NotAbsolute));
        assert_eq!(
            normalize_request_path(&format!("/{}", "a".repeat(2000))),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn double_encoding_is_decoded_once() {
        // %252e%252e is the literal name "%2e%2e", never a parent reference.
        assert_eq!(
            normalize_request_path("/%252e%252e/x").unwrap(),
            "/%2e%2e/x"
        );
    }

    #[test]
    fn file_paths() {
        assert_eq!(normalize_file_path("index.html").unwrap(), "/index.html");
        assert_eq!(normalize_file_path("assets/a.js").unwrap(), "/assets/a.js");
        for bad in ["", "a//b", "../x", "a/./b", "a\\b", "a\0", "a/"] {
            assert!(normalize_file_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_extensions() {
        assert_eq!(file_name("/a/b.js"), "b.js");
        assert_eq!(extension("/a/b.min.js"), Some("js"));
        assert_eq!(extension("/a/.env"), None);
        assert_eq!(extension("/about"), None);
        assert_eq!(split_versioned("/_r/v1/a/b.js"), Some(("v1", "/a/b.js")));
        assert_eq!(split_versioned("/_r/v1"), Some(("v1", "/")));
        assert_eq!(split_versioned("/x/v1"), None);
    }
}
