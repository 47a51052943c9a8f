//! Serving one stored file: encoding negotiation over the precompressed
//! variants, ETag and `If-None-Match`, `Range`, `HEAD`, cache headers.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use skewless_core::header::{
    etag_matches, negotiate_encoding, parse_range, Encoding, RangeRequest,
};
use skewless_core::Entry;
use skewless_store::{BlobStore, StoreError, Variant};

use crate::error::json_error;
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
    let compressible = entry.compressible();
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

    let mut builder = Response::builder();
    {
        let h = builder.headers_mut().expect("fresh builder has headers");
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
        h.insert("skewless-served-by", f.served_by.clone());
        h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    }

    if etag_matches(text(header::IF_NONE_MATCH), etag.to_str().unwrap_or("")) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }

    let range = match (encoding, text(header::IF_RANGE)) {
        (Encoding::Identity, Some(if_range)) if if_range.trim() != etag.to_str().unwrap_or("") => {
            RangeRequest::Full
        }
        (Encoding::Identity, _) => parse_range(range_header, len),
        _ => RangeRequest::Full,
    };
    let content_type = HeaderValue::from_str(&entry.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    {
        let h = builder.headers_mut().expect("fresh builder has headers");
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(header::ACCEPT_RANGES, BYTES);
        if let Some(enc) = encoding.content_encoding() {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
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
                builder = builder.header(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, Some((start, end - start + 1)))
        }
        RangeRequest::Full => (StatusCode::OK, None),
    };
    let body_len = read.map_or(len, |(_, n)| n);
    builder = builder.header(header::CONTENT_LENGTH, body_len);
    if method == Method::HEAD {
        return builder
            .status(status)
            .body(Body::empty())
            .unwrap_or_default();
    }
    match store.read(&entry.hash, variant, read).await {
        Ok(bytes) => builder
            .status(status)
            .body(Body::from(bytes))
            .unwrap_or_default(),
        Err(StoreError::NotFound(h)) => {
            tracing::error!(blob = %h, "blob of a live release is missing from the store");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a file of this release is missing from the blob store",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "blob read failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "blob store read failed")
        }
    }
}
