//! The gateway's resolution order (DESIGN.md), as a pure function over a
//! [`Catalog`] of releases:
//!
//! 1. `/_skewless/…` system endpoints;
//! 2. `/_r/<id>/<path>`: exactly that release's file;
//! 3. (API prefixes are matched by the proxy before this function runs);
//! 4. any other path: the pinned release's file, else the current release's,
//!    else, for content-hashed names, the newest retained release that has it;
//! 5. a navigation that matches no file: the current release's shell.

use crate::content::is_content_hashed;
use crate::manifest::SHELL;
use crate::path::split_versioned;
use crate::ReleaseId;

/// What the resolver needs to know of the releases; the server implements it
/// over its routing snapshot.
pub trait Catalog {
    /// The current release, if any.
    fn current(&self) -> Option<&ReleaseId>;
    /// The release with this id text, if it exists and is served.
    fn served(&self, id: &str) -> Option<&ReleaseId>;
    /// Whether a served release has a file at a canonical path.
    fn has_file(&self, id: &ReleaseId, path: &str) -> bool;
    /// Releases eligible for the content-hashed fallback, newest first.
    fn fallback(&self) -> impl Iterator<Item = &ReleaseId>;
}

/// Where a served file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `/_r/<id>/` URL.
    Versioned,
    /// The client's pin.
    Pinned,
    /// The current release.
    Current,
    /// An older retained release: the client's own release no longer has
    /// the file, a newer one never had it.
    Fallback,
}

/// The outcome of resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// A system endpoint; the path after `/_skewless`.
    System(&'a str),
    /// A file of a release.
    File {
        release: &'a ReleaseId,
        path: &'a str,
        source: Source,
    },
    /// A release's rewritten shell.
    Shell { release: &'a ReleaseId },
    /// Nothing matches.
    NotFound,
    /// A shell is wanted but no release is current yet.
    NoCurrent,
}

/// The facts of a request that resolution depends on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Canonical path (see [`crate::path::normalize_request_path`]).
    pub path: &'a str,
    /// The release the client says it runs (header or cookie).
    pub pin: Option<&'a str>,
    /// Whether the request is a page navigation (gets the shell on a miss).
    pub navigation: bool,
}

/// Resolves a request against the catalog.
pub fn resolve<'a, C: Catalog>(catalog: &'a C, req: Request<'a>) -> Resolution<'a> {
    let path = req.path;
    if path == "/_skewless" {
        return Resolution::System("/");
    }
    if let Some(rest) = path.strip_prefix("/_skewless/") {
        return Resolution::System(&path[path.len() - rest.len() - 1..]);
    }
    if let Some((id, rest)) = split_versioned(path) {
        let Some(release) = catalog.served(id) else {
            return Resolution::NotFound;
        };
        if rest == "/" || rest == SHELL {
            return Resolution::Shell { release };
        }
        return if catalog.has_file(release, rest) {
            Resolution::File {
                release,
                path: rest,
                source: Source::Versioned,
            }
        } else {
            Resolution::NotFound
        };
    }
    if path == "/" || path == SHELL {
        return shell(catalog);
    }
    if let Some(pinned) = req.pin.and_then(|p| catalog.served(p)) {
        if catalog.has_file(pinned, path) {
            return Resolution::File {
                release: pinned,
                path,
                source: Source::Pinned,
            };
        }
    }
    if let Some(current) = catalog.current() {
        if catalog.has_file(current, path) {
            return Resolution::File {
                release: current,
                path,
                source: Source::Current,
            };
        }
    }
    if is_content_hashed(path) {
        if let Some(release) = catalog.fallback().find(|r| catalog.has_file(r, path)) {
            return Resolution::File {
                release,
                path,
                source: Source::Fallback,
            };
        }
    }
    if req.navigation {
        return shell(catalog);
    }
    Resolution::NotFound
}

fn shell<C: Catalog>(catalog: &C) -> Resolution<'_> {
    match catalog.current() {
        Some(release) => Resolution::Shell { release },
        None => Resolution::NoCurrent,
    }
}

/// Whether a request is a page navigation: `Sec-Fetch-Mode: navigate`, or,
/// from clients that do not send fetch metadata, an `Accept` that asks for
/// HTML.
pub fn is_navigation(
    method_is_get_or_head: bool,
    sec_fetch_mode: Option<&str>,
    accept: Option<&str>,
) -> bool {
    if !method_is_get_or_head {
        return false;
    }
    match sec_fetch_mode {
        Some(mode) => mode.eq_ignore_ascii_case("navigate"),
        None => accept.is_some_and(|a| a.contains("text/html")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    struct Cat {
        current: Option<ReleaseId>,
        releases: HashMap<ReleaseId, (bool, HashSet<&'static str>)>,
        order: Vec<ReleaseId>,
    }

    impl Catalog for Cat {
        fn current(&self) -> Option<&ReleaseId> {
            self.current.as_ref()
        }
        fn served(&self, id: &str) -> Option<&ReleaseId> {
            self.releases
                .get_key_value(&ReleaseId::parse(id).ok()?)
                .filter(|(_, (served, _))| *served)
                .map(|(k, _)| k)
        }
        fn has_file(&self, id: &ReleaseId, path: &str) -> bool {
            self.releases[id].1.contains(path)
        }
        fn fallback(&self) -> impl Iterator<Item = &ReleaseId> {
            self.order.iter().filter(|r| self.releases[*r].0)
        }
    }

    fn id(s: &str) -> ReleaseId {
        ReleaseId::parse(s).unwrap()
    }

    /// v1 (draining): old chunk, style; v2 (current): new chunk, style;
    /// v0 retired: an ancient chunk.
    fn cat() -> Cat {
        let mut releases = HashMap::new();
        releases.insert(
            id("v0"),
            (
                false,
                HashSet::from(["/index.html", "/assets/ancient-00aa11bb.js"]),
            ),
        );
        releases.insert(
            id("v1"),
            (
                true,
                HashSet::from([
                    "/index.html",
                    "/style.css",
                    "/assets/chunk-1a2b3c4d.js",
                    "/only-v1.txt",
                ]),
            ),
        );
        releases.insert(
            id("v2"),
            (
                true,
                HashSet::from(["/index.html", "/style.css", "/assets/chunk-9f8e7d6c.js"]),
            ),
        );
        Cat {
            current: Some(id("v2")),
            releases,
            order: vec![id("v2"), id("v1"), id("v0")],
        }
    }

    fn req(path: &'static str, pin: Option<&'static str>, navigation: bool) -> Request<'static> {
        Request {
            path,
            pin,
            navigation,
        }
    }

    fn served_by(r: Resolution<'_>) -> (String, Option<Source>) {
        match r {
            Resolution::File {
                release, source, ..
            } => (release.to_string(), Some(source)),
            Resolution::Shell { release } => (format!("shell:{release}"), None),
            other => (format!("{other:?}"), None),
        }
    }

    #[test]
    fn system_paths_come_first() {
        let c = cat();
        assert_eq!(
            resolve(&c, req("/_skewless/version", Some("v1"), false)),
            Resolution::System("/version")
        );
        assert_eq!(
            resolve(&c, req("/_skewless", None, false)),
            Resolution::System("/")
        );
    }

    #[test]
    fn versioned_paths_are_exact() {
        let c = cat();
        assert_eq!(
            served_by(resolve(&c, req("/_r/v1/style.css", Some("v2"), false))),
            ("v1".into(), Some(Source::Versioned))
        );
        assert_eq!(
            resolve(&c, req("/_r/v1/assets/chunk-9f8e7d6c.js", None, false)),
            Resolution::NotFound
        );
        assert_eq!(
            resolve(&c, req("/_r/v0/index.html", None, true)),
            Resolution::NotFound
        );
        assert_eq!(
            resolve(&c, req("/_r/nope/style.css", None, false)),
            Resolution::NotFound
        );
        assert_eq!(
            resolve(&c, req("/_r/bad%id/x", None, false)),
            Resolution::NotFound
        );
        assert_eq!(
            served_by(resolve(&c, req("/_r/v1/", None, true))).0,
            "shell:v1"
        );
    }

    #[test]
    fn pin_then_current_then_fallback() {
        let c = cat();
        assert_eq!(
            served_by(resolve(&c, req("/style.css", Some("v1"), false))),
            ("v1".into(), Some(Source::Pinned))
        );
        assert_eq!(
            served_by(resolve(&c, req("/style.css", None, false))),
            ("v2".into(), Some(Source::Current))
        );
        // An unknown or retired pin is served as unpinned.
        assert_eq!(
            served_by(resolve(&c, req("/style.css", Some("zz"), false))),
            ("v2".into(), Some(Source::Current))
        );
        assert_eq!(
            served_by(resolve(&c, req("/style.css", Some("v0"), false))),
            ("v2".into(), Some(Source::Current))
        );
        // A hashed chunk of an older release, requested unpinned.
        assert_eq!(
            served_by(resolve(&c, req("/assets/chunk-1a2b3c4d.js", None, false))),
            ("v1".into(), Some(Source::Fallback))
        );
        // Retired releases are no fallback.
        assert_eq!(
            resolve(&c, req("/assets/ancient-00aa11bb.js", None, false)),
            Resolution::NotFound
        );
        // Non-hashed names do not fall back.
        assert_eq!(
            resolve(&c, req("/only-v1.txt", None, false)),
            Resolution::NotFound
        );
    }

    #[test]
    fn navigations_get_the_current_shell() {
        let c = cat();
        assert_eq!(
            served_by(resolve(&c, req("/", Some("v1"), true))).0,
            "shell:v2"
        );
        assert_eq!(
            served_by(resolve(&c, req("/index.html", None, false))).0,
            "shell:v2"
        );
        assert_eq!(
            served_by(resolve(&c, req("/inbox/42", Some("v1"), true))).0,
            "shell:v2"
        );
        assert_eq!(
            resolve(&c, req("/inbox/42", None, false)),
            Resolution::NotFound
        );
        assert_eq!(
            resolve(&c, req("/missing.js", None, false)),
            Resolution::NotFound
        );
    }

    #[test]
    fn nothing_current() {
        let mut c = cat();
        c.current = None;
        assert_eq!(resolve(&c, req("/", None, true)), Resolution::NoCurrent);
        assert_eq!(
            resolve(&c, req("/style.css", None, false)),
            Resolution::NotFound
        );
    }

    #[test]
    fn navigation_detection() {
        assert!(is_navigation(true, Some("navigate"), None));
        assert!(!is_navigation(true, Some("cors"), Some("text/html")));
        assert!(is_navigation(
            true,
            None,
            Some("text/html,application/xhtml+xml")
        ));
        assert!(!is_navigation(true, None, Some("*/*")));
        assert!(!is_navigation(false, Some("navigate"), None));
    }
}
