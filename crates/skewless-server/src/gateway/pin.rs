//! The release a request names, worked out once per request by
//! [`skewless_core::pin::request_pin`] and handed to everything that needs
//! it: resolution, API routing, the `Skewless-*` stamp and presence.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use skewless_core::pin;
use skewless_core::resolve::is_navigation;

/// The request header carrying a pin.
pub(crate) const PIN_HEADER: HeaderName = HeaderName::from_static(pin::HEADER);
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
const CLIENT: HeaderName = HeaderName::from_static(super::stamp::CLIENT_HEADER);

/// A request's pin, kept as a slice of the header value it came from (a
/// reference-counted view of the request buffer, so keeping it copies
/// nothing), whether the request is a page load, and the client id it
/// carries (found in the same pass over the fields).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestPin {
    navigation: bool,
    found: Option<(HeaderValue, usize, usize)>,
    client: Option<HeaderValue>,
}

impl RequestPin {
    /// The pin of a request with this method and these headers.
    pub(crate) fn of(method: &Method, headers: &HeaderMap) -> RequestPin {
        // One pass over the (few) headers a request has is cheaper than a
        // hashed lookup per name.
        let (mut pin_h, mut referer, mut host, mut cookie, mut mode, mut accept) =
            (None, None, None, None, None, None);
        let mut client = None;
        for (name, value) in headers {
            let slot = if name == header::COOKIE {
                &mut cookie
            } else if name == header::HOST {
                &mut host
            } else if name == header::REFERER {
                &mut referer
            } else if name == header::ACCEPT {
                &mut accept
            } else if name == PIN_HEADER {
                &mut pin_h
            } else if name == SEC_FETCH_MODE {
                &mut mode
            } else if name == CLIENT {
                &mut client
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        fn text(v: Option<&HeaderValue>) -> Option<&str> {
            v.and_then(|v| v.to_str().ok())
        }
        let navigation = is_navigation(
            method == Method::GET || method == Method::HEAD,
            text(mode),
            text(accept),
        );
        let found = pin::request_pin(
            navigation,
            text(pin_h),
            text(referer),
            text(host),
            text(cookie),
        )
        .and_then(|id| {
            // Which header the slice lies in, and where.
            [pin_h, referer, cookie]
                .into_iter()
                .flatten()
                .find_map(|v| {
                    let start =
                        (id.as_ptr() as usize).checked_sub(v.as_bytes().as_ptr() as usize)?;
                    (start + id.len() <= v.len()).then(|| (v.clone(), start, start + id.len()))
                })
        });
        RequestPin {
            navigation,
            found,
            client: client.cloned(),
        }
    }

    /// The release id the request names, already checked against the id
    /// rule; `None` when it names none.
    pub(crate) fn as_str(&self) -> Option<&str> {
        let (v, start, end) = self.found.as_ref()?;
        v.to_str().ok().map(|s| &s[*start..*end])
    }

    /// Whether the request is a page load.
    pub(crate) fn navigation(&self) -> bool {
        self.navigation
    }

    /// The client id the request carries (`Skewless-Client`), if any.
    pub(crate) fn client(&self) -> Option<&str> {
        self.client.as_ref().and_then(|v| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn one_rule_for_every_request() {
        let h = headers(&[
            ("host", "app.test"),
            ("referer", "http://app.test/_r/v1/assets/a.js"),
            ("cookie", "a=b; skewless_release=v2"),
        ]);
        let p = RequestPin::of(&Method::GET, &h);
        assert_eq!(p.as_str(), Some("v1"));
        assert!(!p.navigation());

        let mut nav = h.clone();
        nav.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        let p = RequestPin::of(&Method::GET, &nav);
        assert_eq!(p.as_str(), Some("v2"));
        assert!(p.navigation());

        let mut pinned = h.clone();
        pinned.insert(PIN_HEADER, HeaderValue::from_static(" v3 "));
        assert_eq!(RequestPin::of(&Method::POST, &pinned).as_str(), Some("v3"));

        assert_eq!(
            RequestPin::of(&Method::GET, &HeaderMap::new()).as_str(),
            None
        );
        let bad = headers(&[
            ("skewless-release", "../x"),
            ("cookie", "skewless_release=%2e"),
        ]);
        assert_eq!(RequestPin::of(&Method::GET, &bad).as_str(), None);
    }
}
