//! Which release a client runs: the `Skewless-Release` header, else the
//! `skewless_release` cookie. An invalid or malformed pin is no pin.

use crate::header::cookie;
use crate::ReleaseId;

/// The request header a client names its release in.
pub const HEADER: &str = "skewless-release";
/// The cookie the shell sets.
pub const COOKIE: &str = "skewless_release";

/// The pin a request carries: header first, then cookie. Values that break the
/// id rule are ignored rather than refused: a pin is a hint, never an error.
pub fn pin_from(header: Option<&str>, cookie_header: Option<&str>) -> Option<ReleaseId> {
    pin_str(header, cookie_header).and_then(|p| ReleaseId::parse(p).ok())
}

/// [`pin_from`] without allocating: the pin as a slice of the header text,
/// already checked against the id rule.
pub fn pin_str<'a>(header: Option<&'a str>, cookie_header: Option<&'a str>) -> Option<&'a str> {
    header
        .map(str::trim)
        .filter(|h| crate::id::is_valid(h))
        .or_else(|| {
            cookie_header
                .and_then(|c| cookie(c, COOKIE))
                .filter(|v| crate::id::is_valid(v))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_beats_cookie() {
        let p = pin_from(Some("v1"), Some("skewless_release=v2"));
        assert_eq!(p.unwrap().as_str(), "v1");
        let p = pin_from(None, Some("x=1; skewless_release=v2"));
        assert_eq!(p.unwrap().as_str(), "v2");
    }

    #[test]
    fn invalid_pins_are_ignored() {
        assert!(pin_from(Some("../x"), None).is_none());
        let p = pin_from(Some("bad id"), Some("skewless_release=v2"));
        assert_eq!(p.unwrap().as_str(), "v2");
        assert!(pin_from(None, Some("skewless_release=%2e%2e")).is_none());
    }
}
