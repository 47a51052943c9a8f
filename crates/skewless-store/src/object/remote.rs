//! Bounding every call to a remote store in time, and naming what went
//! wrong in one line a user can act on.

use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use skewless_core::BlobHash;

use super::ObjectBlobs;
use crate::chunks::CHUNK;
use crate::{ByteStream, StoreError};

impl ObjectBlobs {
    /// Longest one call may take: a request and its one retry, with their
    /// connections, and a pause between them.
    pub(super) fn limit(&self) -> Duration {
        (self.timeouts.connect + self.timeouts.request) * 2 + Duration::from_secs(1)
    }

    /// Runs `call` about `hash` within [`Self::limit`], mapping its error.
    pub(super) async fn bounded<T>(
        &self,
        what: &str,
        hash: &BlobHash,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.limit(), call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(what, Some(hash), e)),
            Err(_) => Err(self.timed_out(what, Some(hash))),
        }
    }

    /// The store gave no answer within the limit.
    pub(super) fn timed_out(&self, what: &str, hash: Option<&BlobHash>) -> StoreError {
        StoreError::Unavailable(format!(
            "{}: {what}{} got no answer within {} s",
            self.name,
            hash.map(|h| format!(" of blob {h}")).unwrap_or_default(),
            self.limit().as_secs()
        ))
    }

    /// An object_store error as the store error it is: missing, out of
    /// reach (no connection, no answer, a 5xx), or refused.
    pub(super) fn error(
        &self,
        what: &str,
        hash: Option<&BlobHash>,
        e: object_store::Error,
    ) -> StoreError {
        if let (object_store::Error::NotFound { .. }, Some(h)) = (&e, hash) {
            return StoreError::NotFound(h.to_string());
        }
        let about = hash.map(|h| format!(" of blob {h}")).unwrap_or_default();
        let detail = format!("{what}{about}: {}", one_line(&e));
        if unreachable(&e) {
            StoreError::Unavailable(format!("{}: {detail}", self.name))
        } else {
            StoreError::Remote {
                store: self.name.clone(),
                detail,
            }
        }
    }
}

/// Whether the error says the store could not be reached or answered
/// with a server error, rather than refusing the request.
fn unreachable(e: &object_store::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return true;
        }
        source = s.source();
    }
    let text = e.to_string();
    [
        "status code: 500",
        "status code: 502",
        "status code: 503",
        "status code: 504",
    ]
    .iter()
    .any(|c| text.contains(c))
}

/// The error and its causes on one line, without repeats.
fn one_line(e: &object_store::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A remote body as a stream of chunks of at most [`CHUNK`] bytes, each
/// awaited at most `wait`, ending after `len` bytes at most.
pub(super) fn rechunk(
    body: BoxStream<'static, object_store::Result<Bytes>>,
    wait: Duration,
    len: u64,
) -> ByteStream {
    let state = (body, Bytes::new(), len, false);
    Box::pin(futures::stream::unfold(
        state,
        move |(mut body, mut held, left, done)| async move {
            if done || left == 0 {
                return None;
            }
            while held.is_empty() {
                match tokio::time::timeout(wait, body.next()).await {
                    Err(_) => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the blob store sent nothing for {} s", wait.as_secs()),
                        );
                        return Some((Err(e), (body, held, left, true)));
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => {
                        let e = std::io::Error::other(one_line(&e));
                        return Some((Err(e), (body, held, left, true)));
                    }
                    Ok(Some(Ok(b))) => held = b,
                }
            }
            let take = (held.len() as u64).min(CHUNK as u64).min(left) as usize;
            let chunk = held.split_to(take);
            Some((Ok(chunk), (body, held, left - take as u64, false)))
        },
    ))
}
