//! What a file is: its content type, whether it compresses, whether its name
//! carries a content hash.

use crate::path::{extension, file_name};

/// The `Content-Type` to serve a path with.
pub fn content_type(path: &str) -> String {
    let ext = extension(path).map(|e| e.to_ascii_lowercase());
    let fixed = match ext.as_deref() {
        Some("html" | "htm") => Some("text/html; charset=utf-8"),
        Some("js" | "mjs" | "cjs") => Some("text/javascript; charset=utf-8"),
        Some("css") => Some("text/css; charset=utf-8"),
        Some("json" | "map") => Some("application/json"),
        Some("webmanifest") => Some("application/manifest+json"),
        Some("wasm") => Some("application/wasm"),
        Some("svg") => Some("image/svg+xml"),
        Some("txt") => Some("text/plain; charset=utf-8"),
        Some("woff2") => Some("font/woff2"),
        Some("woff") => Some("font/woff"),
        Some("ico") => Some("image/x-icon"),
        None => Some("application/octet-stream"),
        _ => None,
    };
    if let Some(ct) = fixed {
        return ct.to_owned();
    }
    let guess = mime_guess::from_path(file_name(path)).first_or_octet_stream();
    if guess.type_() == mime_guess::mime::TEXT {
        format!("{}; charset=utf-8", guess.essence_str())
    } else {
        guess.essence_str().to_owned()
    }
}

/// Whether a file of this type is worth storing br and gzip variants of.
pub fn is_compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
        )
}

/// Whether the file name carries a content hash (`index-Dw3a_x1Z.js`,
/// `main.3f2a1b9c.css`, `chunk-ab12cd34.js`). Such names never change meaning
/// between releases, so a file missing from the current release may be served
/// from an older retained release that has it.
pub fn is_content_hashed(path: &str) -> bool {
    let name = file_name(path);
    let stem = match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => return false,
    };
    // Try every split point at `.` or `-`: the part after it, up to the next
    // `.`, is the hash candidate.
    stem.char_indices()
        .filter(|&(_, c)| c == '.' || c == '-')
        .any(|(i, _)| {
            let rest = &stem[i + 1..];
            looks_like_hash(rest.split('.').next().unwrap_or(rest))
        })
}

/// 8 to 64 characters of the base64url/hex alphabet that are not a plain
/// word: a digit somewhere, or an upper-case letter after the first place.
pub(crate) fn looks_like_hash(s: &str) -> bool {
    (8..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && (s.bytes().any(|b| b.is_ascii_digit())
            || (s.bytes().any(|b| b.is_ascii_lowercase())
                && s.bytes().skip(1).any(|b| b.is_ascii_uppercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(content_type("/a.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/a.PNG"), "image/png");
        assert_eq!(content_type("/a.svg"), "image/svg+xml");
        assert_eq!(content_type("/LICENSE"), "application/octet-stream");
        assert_eq!(content_type("/a.woff2"), "font/woff2");
    }

    #[test]
    fn compressible() {
        assert!(is_compressible("text/css; charset=utf-8"));
        assert!(is_compressible("image/svg+xml"));
        assert!(is_compressible("application/wasm"));
        assert!(!is_compressible("image/png"));
        assert!(!is_compressible("font/woff2"));
    }

    #[test]
    fn hashed_names() {
        for yes in [
            "/assets/index-Dw3a_x1Z.js",
            "/assets/chunk-ab12cd34.js",
            "/main.3f2a1b9c.css",
            "/assets/index-BxYzQwEr.css",
            "/static/js/2.8e0f3a1b.chunk.js",
        ] {
            assert!(is_content_hashed(yes), "{yes}");
        }
        for no in [
            "/style.css",
            "/logo.svg",
            "/assets/my-component.js",
            "/vendor-Component.js",
            "/index.html",
            "/favicon.ico",
            "/about",
        ] {
            assert!(!is_content_hashed(no), "{no}");
        }
    }
}
