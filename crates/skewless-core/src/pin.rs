//! Which release a client runs: the `Skewless-Release` header, else (for
//! requests a page makes by itself) a `Referer` under `/_r/<id>/`, else the
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

/// The release a `Referer` lies under: `http://<host>/_r/<id>/…` names `<id>`
/// when `<host>` is the request's own (`host`; any host when the request
/// names none). Module imports, CSS `url()`s and a worker's requests are sent
/// with the URL of the script or stylesheet that made them as `Referer`, so
/// this names the release of that file, whatever the shared cookie says.
pub fn referer_release<'a>(referer: &'a str, host: Option<&str>) -> Option<&'a str> {
    let rest = &referer[referer.find("://")? + 3..];
    let slash = rest.find('/')?;
    let (authority, path) = rest.split_at(slash);
    if host.is_some_and(|h| !h.eq_ignore_ascii_case(authority)) {
        return None;
    }
    let id = path.strip_prefix("/_r/")?.split_once('/')?.0;
    crate::id::is_valid(id).then_some(id)
}

/// The pin of a request that is not a navigation: the header, else a
/// `Referer` under `/_r/<id>/` of this host, else the cookie. The cookie is
/// shared by every tab of the browser and names the shell it loaded last, so
/// it only decides when neither better signal is there.
pub fn pin_of<'a>(
    header: Option<&'a str>,
    referer: Option<&'a str>,
    host: Option<&str>,
    cookie_header: Option<&'a str>,
) -> Option<&'a str> {
    header
        .map(str::trim)
        .filter(|h| crate::id::is_valid(h))
        .or_else(|| referer.and_then(|r| referer_release(r, host)))
        .or_else(|| pin_str(None, cookie_header))
}

/// The pin of a request, by the one rule every part of the gateway applies:
/// a page load (`navigation`) is pinned by the header, else the cookie (the
/// cookie keeps a canary sticky); every other request by [`pin_of`].
pub fn request_pin<'a>(
    navigation: bool,
    header: Option<&'a str>,
    referer: Option<&'a str>,
    host: Option<&str>,
    cookie_header: Option<&'a str>,
) -> Option<&'a str> {
    if navigation {
        pin_str(header, cookie_header)
    } else {
        pin_of(header, referer, host, cookie_header)
    }
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

    #[test]
    fn a_page_load_ignores_the_referer() {
        let cookie = Some("skewless_release=v2");
        let host = Some("app.test");
        let r = Some("http://app.test/_r/v1/assets/x.js");
        assert_eq!(request_pin(true, None, r, host, cookie), Some("v2"));
        assert_eq!(request_pin(false, None, r, host, cookie), Some("v1"));
        assert_eq!(request_pin(true, Some("v3"), r, host, cookie), Some("v3"));
    }

    #[test]
    fn referer_under_a_release_beats_the_cookie() {
        let cookie = Some("skewless_release=v2");
        let host = Some("app.test:8080");
        let r = Some("http://app.test:8080/_r/v1/assets/index-Dw3a_x1Z.js");
        assert_eq!(pin_of(None, r, host, cookie), Some("v1"));
        assert_eq!(pin_of(Some("v3"), r, host, cookie), Some("v3"));
        // Another host, a page outside /_r/, a bad id: the cookie decides.
        let other = Some("http://evil.test/_r/v1/x.js");
        assert_eq!(pin_of(None, other, host, cookie), Some("v2"));
        assert_eq!(
            pin_of(None, Some("http://app.test:8080/settings"), host, cookie),
            Some("v2")
        );
        assert_eq!(
            pin_of(None, Some("http://app.test:8080/_r/../x"), host, cookie),
            Some("v2")
        );
        assert_eq!(
            pin_of(None, Some("http://app.test:8080/_r/v1"), host, None),
            None
        );
        assert_eq!(referer_release("https://a/_r/v9/", None), Some("v9"));
        assert_eq!(referer_release("not a url", None), None);
    }
}
