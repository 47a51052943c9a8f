//! The browser library, embedded at build time and served under
//! `/_skewless/<module>.js` with an ETag.

use axum::http::HeaderValue;
use bytes::Bytes;

include!(concat!(env!("OUT_DIR"), "/client_modules.rs"));

/// One embedded module ready to serve.
#[derive(Debug, Clone)]
pub struct Module {
    /// File name, e.g. `client.js`.
    pub name: &'static str,
    /// Source.
    pub body: Bytes,
    /// Strong ETag of the source.
    pub etag: HeaderValue,
}

/// All embedded modules.
pub fn modules() -> Vec<Module> {
    MODULES
        .iter()
        .map(|(name, src)| {
            let hash = blake3::hash(src.as_bytes()).to_hex();
            Module {
                name,
                body: Bytes::from_static(src.as_bytes()),
                // A quoted hex digest is always a valid header value.
                etag: HeaderValue::from_str(&format!("\"{}\"", &hash[..20]))
                    .unwrap_or(HeaderValue::from_static("\"0\"")),
            }
        })
        .collect()
}
