//! Rewrites a release's `index.html` once, at deploy: same-origin asset URLs
//! that name a file of the release point under `/_r/<id>/`, and the release
//! meta tag and client script are injected at the start of `<head>`.

use lol_html::html_content::ContentType;
use lol_html::{element, rewrite_str, RewriteStrSettings};
use skewless_core::path::normalize_request_path;
use skewless_core::{Manifest, ReleaseId};

/// The tags injected into every shell.
fn injection(id: &ReleaseId) -> String {
    format!(
        "<meta name=\"skewless-release\" content=\"{id}\"><script type=\"module\" src=\"/_skewless/client.js\"></script>"
    )
}

/// Rewrites `html` for release `id` whose files are `manifest`.
pub fn rewrite(html: &str, id: &ReleaseId, manifest: &Manifest) -> Result<String, String> {
    let inject = injection(id);
    let prefix = format!("/_r/{id}");
    let rewrite_url = |url: &str| -> Option<String> { rewrite_one(url, &prefix, manifest) };
    let rewrite_attr = |el: &mut lol_html::html_content::Element, attr: &str| {
        if let Some(v) = el.get_attribute(attr) {
            let new = if attr.ends_with("srcset") {
                rewrite_srcset(&v, &rewrite_url)
            } else {
                rewrite_url(&v)
            };
            if let Some(new) = new {
                let _ = el.set_attribute(attr, &new);
            }
        }
    };
    let mut injected = false;
    let out = rewrite_str(
        html,
        RewriteStrSettings {
            element_content_handlers: vec![
                element!("head", |el| {
                    if !injected {
                        el.prepend(&inject, ContentType::Html);
                        injected = true;
                    }
                    Ok(())
                }),
                element!("meta[name=skewless-release]", |el| {
                    el.remove();
                    Ok(())
                }),
                element!("script[src], img[src], source[src], video[src], audio[src], track[src], embed[src], input[src], iframe[src]", |el| {
                    rewrite_attr(el, "src");
                    Ok(())
                }),
                element!("link[href]", |el| {
                    rewrite_attr(el, "href");
                    Ok(())
                }),
                element!("img[srcset], source[srcset]", |el| {
                    rewrite_attr(el, "srcset");
                    Ok(())
                }),
                element!("video[poster]", |el| {
                    rewrite_attr(el, "poster");
                    Ok(())
                }),
            ],
            ..RewriteStrSettings::new()
        },
    )
    .map_err(|e| format!("index.html could not be rewritten: {e}"))?;
    if injected {
        return Ok(out);
    }
    // No <head>: put the tags where a parser would open it, after the doctype.
    let lower = out.to_ascii_lowercase();
    let at = if lower.trim_start().starts_with("<!doctype") {
        lower.find('>').map_or(0, |i| i + 1)
    } else {
        0
    };
    Ok(format!("{}<head>{inject}</head>{}", &out[..at], &out[at..]))
}

/// The rewritten URL if `url` is a same-origin path to a file of the release.
fn rewrite_one(url: &str, prefix: &str, manifest: &Manifest) -> Option<String> {
    let url = url.trim();
    if url.is_empty() || url.starts_with("//") || url.starts_with('#') || has_scheme(url) {
        return None;
    }
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let (path, rest) = url.split_at(cut);
    let absolute = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if absolute.starts_with("/_r/") || absolute.starts_with("/_skewless/") {
        return None;
    }
    let canonical = normalize_request_path(&absolute).ok()?;
    if canonical == skewless_core::manifest::SHELL || !manifest.files.contains_key(&*canonical) {
        return None;
    }
    // Keep the author's encoding; drop `./` segments only.
    let kept: Vec<&str> = absolute
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    Some(format!("{prefix}/{}{rest}", kept.join("/")))
}

fn has_scheme(url: &str) -> bool {
    match url.find(':') {
        Some(i) => {
            let scheme = &url[..i];
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

fn rewrite_srcset(v: &str, f: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut changed = false;
    let parts: Vec<String> = v
        .split(',')
        .map(|candidate| {
            let c = candidate.trim();
            let (url, descriptor) = c.split_once(char::is_whitespace).unwrap_or((c, ""));
            match f(url) {
                Some(new) => {
                    changed = true;
                    if descriptor.is_empty() {
                        new
                    } else {
                        format!("{new} {}", descriptor.trim())
                    }
                }
                None => c.to_owned(),
            }
        })
        .collect();
    changed.then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skewless_core::manifest::FileSpec;
    use skewless_core::BlobHash;

    fn manifest(paths: &[&str]) -> Manifest {
        let specs: Vec<FileSpec> = paths
            .iter()
            .map(|p| FileSpec {
                path: (*p).into(),
                hash: BlobHash::from_bytes(&[1; 32]),
                size: 1,
            })
            .collect();
        Manifest::from_specs(&specs).unwrap()
    }

    #[test]
    fn rewrites_assets_and_injects() {
        let m = manifest(&[
            "index.html",
            "assets/index-ab12cd34.js",
            "style.css",
            "logo.svg",
            "a b.png",
        ]);
        let id = ReleaseId::parse("v1").unwrap();
        let html = r#"<!doctype html><html><head><meta name="skewless-release" content="old"><title>x</title>
<script type="module" src="/assets/index-ab12cd34.js"></script>
<link rel="stylesheet" href="./style.css?v=1">
<link rel="preconnect" href="https://fonts.example.com">
<link rel="canonical" href="/about">
</head><body><a href="/style.css">s</a><img src="logo.svg" srcset="logo.svg 1x, https://cdn.example.com/x.png 2x">
<img src="/a%20b.png"><img src="//cdn.example.com/logo.svg"><img src="data:image/png;base64,AA"></body></html>"#;
        let out = rewrite(html, &id, &m).unwrap();
        assert!(out.contains(r#"<head><meta name="skewless-release" content="v1"><script type="module" src="/_skewless/client.js"></script><title>"#), "{out}");
        assert!(!out.contains("content=\"old\""));
        assert!(out.contains(r#"src="/_r/v1/assets/index-ab12cd34.js""#));
        assert!(out.contains(r#"href="/_r/v1/style.css?v=1""#));
        assert!(out.contains(r#"href="https://fonts.example.com""#));
        assert!(out.contains(r#"href="/about""#));
        assert!(
            out.contains(r#"<a href="/style.css">"#),
            "links are navigation, not assets"
        );
        assert!(
            out.contains(r#"srcset="/_r/v1/logo.svg 1x, https://cdn.example.com/x.png 2x""#),
            "{out}"
        );
        assert!(out.contains(r#"src="/_r/v1/a%20b.png""#));
        assert!(out.contains(r#"src="//cdn.example.com/logo.svg""#));
        assert!(out.contains(r#"src="data:image/png;base64,AA""#));
    }

    #[test]
    fn injects_without_head() {
        let m = manifest(&["index.html"]);
        let id = ReleaseId::parse("v2").unwrap();
        let out = rewrite("<!DOCTYPE html><p>hi", &id, &m).unwrap();
        assert!(
            out.starts_with("<!DOCTYPE html><head><meta name=\"skewless-release\" content=\"v2\">"),
            "{out}"
        );
        let out = rewrite("<p>hi", &id, &m).unwrap();
        assert!(out.starts_with("<head><meta"), "{out}");
    }

    #[test]
    fn leaves_unknown_and_traversing_urls() {
        let m = manifest(&["index.html", "a.js"]);
        let id = ReleaseId::parse("v1").unwrap();
        let out = rewrite(r#"<head><script src="/missing.js"></script><script src="/../a.js"></script><script src="/_r/v0/a.js"></script></head>"#, &id, &m).unwrap();
        assert!(out.contains(r#"src="/missing.js""#));
        assert!(out.contains(r#"src="/../a.js""#));
        assert!(out.contains(r#"src="/_r/v0/a.js""#));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Whatever the HTML, the rewriter never panics, injects the release
        /// exactly once, and never rewrites to a path outside `/_r/<id>/`.
        #[test]
        fn rewriter_survives_any_html(html in "(<[a-z]{1,6}( [a-z]{1,6}=\"[^\"_]{0,20}\")*>|</?head>|[^<_]{0,20}|<!--|-->|<script src=\"[./a-z%]{0,12}\">){0,30}") {
            let m = manifest(&["index.html", "a.js", "assets/b.css"]);
            let id = ReleaseId::parse("v9").unwrap();
            if let Ok(out) = rewrite(&html, &id, &m) {
                proptest::prop_assert_eq!(out.matches("<meta name=\"skewless-release\" content=\"v9\">").count(), 1, "{}", out);
                for part in out.split("/_r/").skip(1) {
                    proptest::prop_assert!(part.starts_with("v9/"), "{}", out);
                }
            }
        }
    }
}
