//! Parsing of the request headers the gateway acts on: `Accept-Encoding`,
//! `Range`, `If-None-Match` and `Cookie`. Pure functions over header text.

/// A stored encoding of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Brotli.
    Br,
    /// gzip.
    Gzip,
    /// The file as deployed.
    Identity,
}

impl Encoding {
    /// The token for `Content-Encoding`, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Encoding::Br => Some("br"),
            Encoding::Gzip => Some("gzip"),
            Encoding::Identity => None,
        }
    }
}

/// Picks the best encoding the client accepts among those available,
/// honouring q-values (`q=0` refuses). br wins ties, then gzip.
pub fn negotiate_encoding(accept: Option<&str>, has_br: bool, has_gzip: bool) -> Encoding {
    let Some(accept) = accept else {
        return Encoding::Identity;
    };
    let (mut br, mut gzip, mut star) = (None, None, None);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| v.trim().parse().unwrap_or(0.0))
            })
            .next()
            .unwrap_or(1.0f32);
        // Compared without lower-casing a copy: no allocation per item.
        if coding.eq_ignore_ascii_case("br") {
            br = Some(q);
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(q);
        } else if coding == "*" {
            star = Some(q);
        }
    }
    let br = br.or(star).unwrap_or(0.0);
    let gzip = gzip.or(star).unwrap_or(0.0);
    let br = if has_br { br } else { 0.0 };
    let gzip = if has_gzip { gzip } else { 0.0 };
    if br > 0.0 && br >= gzip {
        Encoding::Br
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// The outcome of a `Range` header against a body of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole body with 200 (absent, malformed, or
    /// several ranges, which RFC 9110 lets a server ignore).
    Full,
    /// One satisfiable range, inclusive bounds.
    Partial { start: u64, end: u64 },
    /// A syntactically valid range that lies outside the body: 416.
    Unsatisfiable,
}

/// Parses a `Range` header for a body of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(h) = header else {
        return RangeRequest::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        let Some(n) = parse(b) else {
            return RangeRequest::Full;
        };
        if n == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        let n = n.min(len);
        return RangeRequest::Partial {
            start: len - n,
            end: len - 1,
        };
    }
    let Some(start) = parse(a) else {
        return RangeRequest::Full;
    };
    let end = if b.is_empty() {
        None
    } else {
        match parse(b) {
            Some(e) if e >= start => Some(e),
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.map_or(len - 1, |e| e.min(len - 1)),
    }
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as
/// RFC 9110 requires for this header).
pub fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(h) = if_none_match else {
        return false;
    };
    // The usual case: the one tag the client has, sent back as is.
    if h == etag {
        return true;
    }
    let want = etag.trim_start_matches("W/");
    h.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == want)
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        use Encoding::*;
        assert_eq!(
            negotiate_encoding(Some("gzip, deflate, br"), true, true),
            Br
        );
        assert_eq!(negotiate_encoding(Some("gzip, br;q=0.5"), true, true), Gzip);
        assert_eq!(negotiate_encoding(Some("br;q=0, gzip"), true, true), Gzip);
        assert_eq!(negotiate_encoding(Some("br"), false, true), Identity);
        assert_eq!(negotiate_encoding(Some("identity"), true, true), Identity);
        assert_eq!(negotiate_encoding(Some("*"), true, true), Br);
        assert_eq!(negotiate_encoding(Some("gzip;q=0, *"), true, true), Br);
        assert_eq!(
            negotiate_encoding(Some("gzip;q=0, *"), false, true),
            Identity
        );
        assert_eq!(negotiate_encoding(None, true, true), Identity);
        assert_eq!(negotiate_encoding(Some("GZIP"), false, true), Gzip);
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Partial { start: 0, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Partial { start: 8, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=a-b"), 10), Full);
        assert_eq!(parse_range(Some("bytes=99999999999999999999-"), 10), Full);
    }

    #[test]
    fn etags() {
        assert!(etag_matches(Some("\"a\""), "\"a\""));
        assert!(etag_matches(Some("W/\"a\", \"b\""), "\"a\""));
        assert!(etag_matches(Some("*"), "\"a\""));
        assert!(!etag_matches(Some("\"b\""), "\"a\""));
        assert!(!etag_matches(None, "\"a\""));
    }

    #[test]
    fn cookies() {
        let h = "a=1; skewless_release=v2; b=\"3\"";
        assert_eq!(cookie(h, "skewless_release"), Some("v2"));
        assert_eq!(cookie(h, "b"), Some("3"));
        assert_eq!(cookie(h, "c"), None);
        assert_eq!(cookie("broken", "a"), None);
    }
}
