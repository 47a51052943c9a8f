//! Request-head limits, the same on every way into the server: a header
//! line (or request target) longer than `max_header_line_bytes`, or a whole
//! request head larger than `max_request_head_bytes`, is refused before any
//! handler runs. hyper enforces the head size on HTTP/1 (its read buffer)
//! and HTTP/2 (`SETTINGS_MAX_HEADER_LIST_SIZE`, answered with 431); the
//! line length is checked here for both. The lean HTTP/1 path hands a
//! request over either limit to hyper, which refuses it so; the lean
//! event-stream path checks both itself.

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;

use crate::error::json_error;
use crate::metrics::{self, Kind};
use crate::ServerConfig;

/// The smallest head limit hyper's HTTP/1 reader accepts.
pub const MIN_HEAD_BYTES: usize = 8192;

/// The two limits.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest header line (`name: value`) or request target.
    pub max_line: usize,
    /// Largest request head.
    pub max_head: usize,
}

impl HeadLimits {
    /// The configured limits.
    pub fn of(config: &ServerConfig) -> HeadLimits {
        HeadLimits {
            max_line: config.max_header_line_bytes,
            max_head: config.max_request_head_bytes,
        }
    }

    /// Why a request with this target and these header lines is refused,
    /// if it is.
    pub fn refusal<'a>(
        &self,
        target_len: usize,
        headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Option<(StatusCode, String)> {
        if target_len > self.max_line {
            return Some((
                StatusCode::URI_TOO_LONG,
                format!("request target is longer than {}", kib(self.max_line)),
            ));
        }
        let mut total = target_len;
        for (name, value) in headers {
            // As sent: `name: value\r\n`.
            let line = name.len() + 2 + value.len();
            if line > self.max_line {
                return Some((
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    format!(
                        "header line {} is longer than {}",
                        String::from_utf8_lossy(&name[..name.len().min(64)]),
                        kib(self.max_line)
                    ),
                ));
            }
            total += line + 2;
        }
        (total > self.max_head).then(|| {
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("request head is larger than {}", kib(self.max_head)),
            )
        })
    }

    /// The refusal of a request hyper has parsed, as a response that closes
    /// the connection.
    pub fn check<B>(&self, req: &Request<B>) -> Option<Response> {
        let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        let (status, message) = self.refusal(
            target,
            req.headers()
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        )?;
        metrics::request(Kind::System, status.as_u16());
        let mut resp = json_error(status, &message);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Some(resp)
    }
}

/// `n` bytes in the unit people configure them in.
pub(crate) fn kib(n: usize) -> String {
    if n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_line: 8192,
        max_head: 32768,
    };

    fn line(name: &str, len: usize) -> (Vec<u8>, Vec<u8>) {
        (name.as_bytes().to_vec(), vec![b'a'; len - name.len() - 2])
    }

    fn refuse(target: usize, headers: &[(Vec<u8>, Vec<u8>)]) -> Option<(StatusCode, String)> {
        LIMITS.refusal(
            target,
            headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        )
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_one_more_byte_does_not() {
        assert_eq!(refuse(10, &[line("x-a", 8192)]), None);
        let (status, msg) = refuse(10, &[line("x-a", 8193)]).unwrap();
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(msg, "header line x-a is longer than 8 KiB");
    }

    #[test]
    fn many_short_lines_add_up_to_the_head_limit() {
        let lines: Vec<_> = (0..5).map(|_| line("x-b", 7000)).collect();
        let (status, msg) = refuse(10, &lines).unwrap();
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(msg, "request head is larger than 32 KiB");
        assert_eq!(refuse(10, &lines[..4]), None);
    }

    #[test]
    fn a_long_target_is_414() {
        let (status, msg) = refuse(9000, &[]).unwrap();
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        assert_eq!(msg, "request target is longer than 8 KiB");
    }

    #[test]
    fn odd_limits_are_named_in_bytes() {
        assert_eq!(kib(10_000), "10000 bytes");
        assert_eq!(kib(16384), "16 KiB");
    }
}
