//! An S3-compatible bucket (AWS S3, MinIO, Ceph, R2, GCS's S3 API) as the
//! object store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::{ObjectBlobs, Timeouts};
use crate::StoreError;

/// A parsed `s3://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without slashes at either end; empty for the root.
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`; `None` if `s` is not an `s3://` URL.
    pub fn parse(s: &str) -> Option<Result<S3Url, String>> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Some(Err(format!(
                "blob store {s:?}: the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|seg| seg == "." || seg == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control())
        {
            return Some(Err(format!(
                "blob store {s:?}: the prefix must be plain path segments"
            )));
        }
        Some(Ok(S3Url {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        }))
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Where and how to reach an S3-compatible store.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Bucket and prefix.
    pub url: Option<S3Url>,
    /// Endpoint of a store other than AWS (`http://127.0.0.1:9000`);
    /// requests to it are path-style.
    pub endpoint: Option<String>,
    /// Region [default: us-east-1].
    pub region: Option<String>,
    /// Access key; without one, the store's own credential chain (instance
    /// or container credentials) is used.
    pub access_key_id: Option<String>,
    /// Secret key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
    /// Connect and request timeouts.
    pub timeouts: Timeouts,
}

impl ObjectBlobs {
    /// Blobs in the S3 bucket `settings` name; uploads spooled in `spool`.
    /// Opens no connection: an unreachable store shows on first use.
    pub fn s3(settings: &S3Settings, spool: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let url = settings.url.clone().ok_or_else(|| StoreError::Remote {
            store: "s3".into(),
            detail: "no bucket given".into(),
        })?;
        let t = settings.timeouts;
        let client = ClientOptions::new()
            .with_connect_timeout(t.connect)
            .with_timeout(t.request)
            .with_allow_http(settings.allow_http);
        // One retry, soon: a store that is down is reported within a
        // bounded time instead of after minutes of backing off.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 1,
            retry_timeout: (t.connect + t.request) * 2,
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(settings.region.as_deref().unwrap_or("us-east-1"))
            .with_allow_http(settings.allow_http)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(e) = &settings.endpoint {
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &settings.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &settings.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(k) = &settings.session_token {
            b = b.with_token(k);
        }
        let store = b.build().map_err(|e| StoreError::Remote {
            store: url.to_string(),
            detail: format!("bad settings: {e}"),
        })?;
        ObjectBlobs::new(Arc::new(store), url.to_string(), &url.prefix, spool, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        assert_eq!(S3Url::parse("/var/blobs"), None);
        let u = S3Url::parse("s3://my-bucket/some/prefix/")
            .unwrap()
            .unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "some/prefix");
        assert_eq!(u.to_string(), "s3://my-bucket/some/prefix");
        let u = S3Url::parse("s3://bkt").unwrap().unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("bkt", ""));
        for bad in [
            "s3://",
            "s3://UPPER",
            "s3://a",
            "s3://ok-bucket/../x",
            "s3://ok-bucket/a//b",
        ] {
            assert!(S3Url::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
