//! Serving one stored file: encoding negotiation over the precompressed
//! variants, ETag and `If-None-Match`, `Range`, `HEAD`, cache headers.
//! Large files are sent from their open file: with `sendfile` on plain-TCP
//! HTTP/1 connections (see [`crate::sendfile`]), elsewhere in bounded
//! chunks as the client reads them (see [`Readable`]).

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use skewless_core::header::{
    etag_matches, negotiate_encoding, parse_range, Encoding, RangeRequest,
};
use skewless_core::Entry;
use skewless_store::{BlobStore, Readable, StoreError, Variant};

use crate::error::json_error;
use crate::sendfile::FileRegions;
use crate::snapshot::etag_for;

/// How long caches may keep a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Versioned or content-hashed: never changes.
    Immutable,
    /// May change with the next release: revalidate every time.
    Revalidate,
}

const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const VARY_ENCODING: HeaderValue = HeaderValue::from_static("Accept-Encoding");
const VARY_PIN: HeaderValue = HeaderValue::from_static("Accept-Encoding, Skewless-Release, Cookie");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const SERVED_BY: HeaderName = HeaderName::from_static("skewless-served-by");
/// Headers a file response carries, with room for those added after it
/// (`Skewless-Current`, `Set-Cookie`), so the map never grows.
const RESPONSE_HEADERS: usize = 16;

/// The `Content-Type` value of a manifest's content type and whether that
/// type is compressible: the common types are static (no allocation or
/// lower-casing per request), the rest are built.
fn content_type_info(ct: &str) -> (HeaderValue, bool) {
    macro_rules! known {
        ($($t:literal => $compressible:literal),* $(,)?) => {
            match ct {
                $($t => (HeaderValue::from_static($t), $compressible),)*
                other => (
                    HeaderValue::from_str(other).unwrap_or(OCTET_STREAM),
                    skewless_core::content::is_compressible(other),
                ),
            }
        };
    }
    known!(
        "text/html; charset=utf-8" => true,
        "text/javascript; charset=utf-8" => true,
        "text/css; charset=utf-8" => true,
        "text/plain; charset=utf-8" => true,
        "application/json" => true,
        "application/manifest+json" => true,
        "application/wasm" => true,
        "application/octet-stream" => false,
        "image/svg+xml" => true,
        "image/x-icon" => true,
        "image/png" => false,
        "image/jpeg" => false,
        "image/gif" => false,
        "image/webp" => false,
        "image/avif" => false,
        "font/woff2" => false,
        "font/woff" => false,
    )
}

/// What to serve and how.
pub struct FileRequest<'a> {
    /// The file.
    pub entry: &'a Entry,
    /// Precomputed ETags for identity, br, gzip (the shell's), if any.
    pub etags: Option<&'a [HeaderValue; 3]>,
    /// Cache policy.
    pub caching: Caching,
    /// Whether the answer depends on the client's pin.
    pub varies_by_pin: bool,
    /// `Skewless-Served-By`.
    pub served_by: &'a HeaderValue,
    /// The request's HTTP version (large files go out with `sendfile`
    /// on plain-TCP HTTP/1).
    pub version: http::Version,
}

/// Builds the response for one file.
pub async fn file_response(
    store: &dyn BlobStore,
    method: &Method,
    headers: &HeaderMap,
    f: FileRequest<'_>,
) -> Response {
    let entry = f.entry;
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let range_header = text(header::RANGE);
    let (content_type, compressible) = content_type_info(&entry.content_type);
    let encoding = if range_header.is_some() || !compressible {
        Encoding::Identity
    } else {
        negotiate_encoding(
            text(header::ACCEPT_ENCODING),
            entry.br.is_some(),
            entry.gzip.is_some(),
        )
    };
    let (variant, len, idx, suffix) = match encoding {
        Encoding::Br => (Variant::Br, entry.br.unwrap_or(0), 1, "-br"),
        Encoding::Gzip => (Variant::Gzip, entry.gzip.unwrap_or(0), 2, "-gz"),
        Encoding::Identity => (Variant::Identity, entry.size, 0, ""),
    };
    let etag = match f.etags {
        Some(tags) => tags[idx].clone(),
        None => etag_for(entry.hash.as_str(), suffix),
    };

    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.reserve(RESPONSE_HEADERS);
    h.insert(header::ETAG, etag.clone());
    h.insert(
        header::CACHE_CONTROL,
        match f.caching {
            Caching::Immutable => IMMUTABLE,
            Caching::Revalidate => NO_CACHE,
        },
    );
    if compressible || f.varies_by_pin {
        h.insert(
            header::VARY,
            if f.varies_by_pin {
                VARY_PIN
            } else {
                VARY_ENCODING
            },
        );
    }
    h.insert(SERVED_BY, f.served_by.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);

    let etag_text = etag.to_str().unwrap_or("");
    if etag_matches(text(header::IF_NONE_MATCH), etag_text) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return resp;
    }

    let range = match (encoding, text(header::IF_RANGE)) {
        (Encoding::Identity, Some(if_range)) if if_range.trim() != etag_text => RangeRequest::Full,
        (Encoding::Identity, _) => parse_range(range_header, len),
        _ => RangeRequest::Full,
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::ACCEPT_RANGES, BYTES);
    if let Some(enc) = encoding.content_encoding() {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
    }
    let (status, read) = match range {
        RangeRequest::Unsatisfiable => {
            let mut resp = json_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "requested range is outside the file",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
        RangeRequest::Partial { start, end } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, Some((start, end - start + 1)))
        }
        RangeRequest::Full => (StatusCode::OK, None),
    };
    let body_len = read.map_or(len, |(_, n)| n);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    *resp.status_mut() = status;
    if method == Method::HEAD {
        return resp;
    }
    match store.open(&entry.hash, variant, read).await {
        Ok(data) if data.len() != body_len => {
            tracing::error!(blob = %entry.hash, expected = body_len, found = data.len(),
                "stored file differs in size from its manifest entry");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a file of this release changed in the blob store",
            )
        }
        Ok(Readable::Bytes(bytes)) => {
            *resp.body_mut() = Body::from(bytes);
            resp
        }
        Ok(Readable::Held { bytes, file }) => {
            // The file where the kernel can send it, the copy elsewhere.
            *resp.body_mut() = match FileRegions::of(f.version) {
                Some(regions) => Body::new(regions.held_body(file)),
                None => Body::from(bytes),
            };
            resp
        }
        Ok(Readable::File(part)) => {
            *resp.body_mut() = match FileRegions::of(f.version) {
                Some(regions) => Body::new(regions.body(part)),
                None => Body::from_stream(part.into_stream()),
            };
            resp
        }
        Ok(Readable::Stream { body, .. }) => {
            *resp.body_mut() = Body::from_stream(body);
            resp
        }
        Err(StoreError::NotFound(h)) => {
            tracing::error!(blob = %h, "blob of a live release is missing from the store");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a file of this release is missing from the blob store",
            )
        }
        Err(StoreError::Unavailable(why)) => {
            tracing::warn!(blob = %entry.hash, reason = %why, "blob store unavailable");
            let mut resp = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the blob store is unavailable and this file is not cached on this node; try again shortly",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, crate::error::RETRY_AFTER);
            resp
        }
        Err(StoreError::Corrupt(why)) => {
            tracing::error!(blob = %entry.hash, reason = %why, "copy from the blob store refused");
            json_error(
                StatusCode::BAD_GATEWAY,
                "a copy of this file from the blob store failed its check and was not served",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "blob read failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "blob store read failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_match_the_manifest_and_the_compression_rule() {
        for path in [
            "a.html",
            "a.js",
            "a.css",
            "a.txt",
            "a.json",
            "a.webmanifest",
            "a.wasm",
            "a.svg",
            "a.ico",
            "a.png",
            "a.jpg",
            "a.gif",
            "a.webp",
            "a.avif",
            "a.woff2",
            "a.woff",
            "a.xyz",
            "a.md",
            "a.ttf",
            "noext",
        ] {
            let ct = skewless_core::content::content_type(path);
            let (value, compressible) = content_type_info(&ct);
            assert_eq!(value, ct.as_str(), "{path}");
            assert_eq!(
                compressible,
                skewless_core::content::is_compressible(&ct),
                "{path}"
            );
        }
        assert_eq!(
            content_type_info("bad\nvalue").0,
            "application/octet-stream"
        );
    }
}
