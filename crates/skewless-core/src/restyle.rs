//! The rename-aware release diff: whether a newer release differs from an
//! older one only in stylesheets, once content-hashed renames are accounted
//! for.
//!
//! A bundler renames every file whose content changed (`index-Dw3a_x1Z.css`
//! becomes `index-Bq8cR2mT.css`), and every file naming a renamed file changes
//! too: the shell, the entry chunk, each lazy chunk that imports the entry.
//! A plain path diff therefore calls a colour change a change of every script.
//! Here each removed content-hashed file is paired with the added file of the
//! same logical name (the name with its hash taken out); then two releases
//! differ only in stylesheets when every other file is byte-identical once the
//! old hashes in it are replaced by their counterparts' (a reference is the
//! whole name, `./index-Dw3a_x1Z.js`, or, in webpack's runtime, the hash alone
//! in a map from chunk to hash; replacing the hash covers both).
//!
//! The work is split so that this module stays free of I/O: [`plan`] looks at
//! the manifests and lists the file pairs whose bytes must be compared;
//! [`same_but_renames`] compares one pair; [`DiffPlan::conclude`] gives the
//! answer.

use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, MatchKind};
use serde::{Deserialize, Serialize};

use crate::content::looks_like_hash;
use crate::path::file_name;
use crate::Manifest;

/// Files larger than this are never compared byte for byte: two releases with
/// such a changed file are treated as differing in more than stylesheets.
pub const MAX_COMPARED_BYTES: u64 = 16 * 1024 * 1024;

/// How one stylesheet differs between the two releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StylesheetChange {
    /// Its path in the older release (`None`: added).
    pub from: Option<String>,
    /// Its path in the newer release (`None`: removed).
    pub to: Option<String>,
}

/// The answer for one pair of releases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseDiff {
    /// Paths in both releases with different bytes.
    pub changed: Vec<String>,
    /// Paths only in the newer release (renamed files excluded).
    pub added: Vec<String>,
    /// Paths only in the older release (renamed files excluded).
    pub removed: Vec<String>,
    /// Each content-hashed file of the older release → its counterpart in the
    /// newer one (same logical name, other hash).
    pub renamed: BTreeMap<String, String>,
    /// Every stylesheet that differs: changed in place, renamed, added or
    /// removed.
    pub stylesheets: Vec<StylesheetChange>,
    /// Whether the newer release differs only in stylesheets: every other file
    /// is identical but for the renamed names it mentions.
    pub only_stylesheets: bool,
}

/// What [`plan`] found from the manifests alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffPlan {
    diff: ReleaseDiff,
    /// Non-stylesheet file pairs (older path, newer path) that must be
    /// identical but for renamed names for the diff to be stylesheet-only.
    pub compare: Vec<(String, String)>,
    /// Whether the manifests alone rule a stylesheet-only diff out.
    decided: bool,
    /// Old text → new text, see [`substitutions`].
    substitutions: Vec<(String, String)>,
}

/// Whether a path is a stylesheet or a stylesheet's source map.
pub fn is_stylesheet(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".css") || lower.ends_with(".css.map")
}

/// The name of a content-hashed file with its hash replaced by `*`
/// (`/assets/index-Dw3a_x1Z.js` → `/assets/index-*.js`), or `None` when the
/// name carries no hash. The rightmost hash-like part is taken, so a name
/// with dashes of its own (`my-page-Dw3a_x1Z.js`) keeps them.
pub fn logical_name(path: &str) -> Option<String> {
    split_hash(path).map(|(logical, _)| logical)
}

/// [`logical_name`] and the hash it took out.
fn split_hash(path: &str) -> Option<(String, &str)> {
    let name = file_name(path);
    let dir = &path[..path.len() - name.len()];
    let stem_end = name.rfind('.').filter(|&i| i > 0)?;
    let stem = &name[..stem_end];
    let (start, end) = stem
        .char_indices()
        .filter(|&(_, c)| c == '.' || c == '-')
        .rev()
        .find_map(|(i, _)| {
            let rest = &stem[i + 1..];
            let candidate = rest.split('.').next().unwrap_or(rest);
            looks_like_hash(candidate).then_some((i + 1, i + 1 + candidate.len()))
        })?;
    Some((
        format!("{dir}{}*{}", &name[..start], &name[end..]),
        &name[start..end],
    ))
}

/// Looks at two manifests: the plain path diff, the renamed pairs, and which
/// files still need their bytes compared.
pub fn plan(older: &Manifest, newer: &Manifest) -> DiffPlan {
    let plain = older.diff(newer);
    // Pair only where a logical name has exactly one removed and one added
    // file: anything else is ambiguous, and stays added and removed.
    let mut gone: HashMap<String, Vec<&String>> = HashMap::new();
    let mut came: HashMap<String, Vec<&String>> = HashMap::new();
    for path in &plain.removed {
        if let Some(l) = logical_name(path) {
            gone.entry(l).or_default().push(path);
        }
    }
    for path in &plain.added {
        if let Some(l) = logical_name(path) {
            came.entry(l).or_default().push(path);
        }
    }
    let mut renamed = BTreeMap::new();
    for (logical, olds) in &gone {
        if let (Some(news), [old]) = (came.get(logical), olds.as_slice()) {
            if let [new] = news.as_slice() {
                renamed.insert((*old).clone(), (*new).clone());
            }
        }
    }
    let paired_new: std::collections::HashSet<&String> = renamed.values().collect();
    let added: Vec<String> = plain
        .added
        .into_iter()
        .filter(|p| !paired_new.contains(p))
        .collect();
    let removed: Vec<String> = plain
        .removed
        .into_iter()
        .filter(|p| !renamed.contains_key(p))
        .collect();

    let mut stylesheets = Vec::new();
    let mut compare = Vec::new();
    let mut decided = false;
    for path in &plain.changed {
        if is_stylesheet(path) {
            stylesheets.push(StylesheetChange {
                from: Some(path.clone()),
                to: Some(path.clone()),
            });
        } else {
            compare.push((path.clone(), path.clone()));
        }
    }
    for (old, new) in &renamed {
        if is_stylesheet(old) && is_stylesheet(new) {
            stylesheets.push(StylesheetChange {
                from: Some(old.clone()),
                to: Some(new.clone()),
            });
        } else if is_stylesheet(old) || is_stylesheet(new) {
            decided = true;
        } else {
            compare.push((old.clone(), new.clone()));
        }
    }
    for path in &added {
        if is_stylesheet(path) {
            stylesheets.push(StylesheetChange {
                from: None,
                to: Some(path.clone()),
            });
        } else {
            decided = true;
        }
    }
    for path in &removed {
        if is_stylesheet(path) {
            stylesheets.push(StylesheetChange {
                from: Some(path.clone()),
                to: None,
            });
        } else {
            decided = true;
        }
    }
    let substitutions = substitutions(older, &renamed);
    // One old text with two different replacements cannot be substituted.
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (from, to) in &substitutions {
        if let Some(prev) = seen.insert(from, to) {
            decided |= prev != to;
        }
    }
    if decided {
        compare.clear();
    }
    DiffPlan {
        diff: ReleaseDiff {
            changed: plain.changed,
            added,
            removed,
            renamed,
            stylesheets,
            only_stylesheets: false,
        },
        compare,
        decided,
        substitutions,
    }
}

/// What to replace in the older release's files for each renamed file: its
/// hash, which covers every way of naming it (`./index-….js`, `/assets/…`,
/// `assets/…`, and the bare hash in webpack's maps from chunk to hash);
/// or, when another file of the older release carries the same hash in its
/// name (files with equal content), its whole file name.
fn substitutions(older: &Manifest, renamed: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut carriers: HashMap<&str, usize> = HashMap::new();
    for path in older.files.keys() {
        if let Some((_, hash)) = split_hash(path) {
            *carriers.entry(hash).or_default() += 1;
        }
    }
    renamed
        .iter()
        .filter_map(|(old, new)| {
            let (old_hash, new_hash) = (split_hash(old)?.1, split_hash(new)?.1);
            Some(if carriers.get(old_hash) == Some(&1) {
                (old_hash.to_owned(), new_hash.to_owned())
            } else {
                (file_name(old).to_owned(), file_name(new).to_owned())
            })
        })
        .collect()
}

impl DiffPlan {
    /// What [`same_but_renames`] replaces in the older files.
    pub fn renamer(&self) -> Renamer {
        Renamer::new(&self.substitutions)
    }

    /// The diff, given whether every pair of [`DiffPlan::compare`] turned out
    /// identical but for renamed names.
    pub fn conclude(self, pairs_identical: bool) -> ReleaseDiff {
        let only = !self.decided && pairs_identical;
        ReleaseDiff {
            only_stylesheets: only,
            ..self.diff
        }
    }
}

/// Replaces the names of renamed files by their counterparts', all at once.
#[derive(Debug, Clone)]
pub struct Renamer {
    finder: Option<AhoCorasick>,
    to: Vec<String>,
}

impl Renamer {
    /// A renamer for (old text, new text) pairs.
    pub fn new(substitutions: &[(String, String)]) -> Renamer {
        let (from, to): (Vec<&str>, Vec<String>) = substitutions
            .iter()
            .map(|(old, new)| (old.as_str(), new.clone()))
            .unzip();
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&from)
            .ok()
            .filter(|_| !from.is_empty());
        Renamer { finder, to }
    }

    /// `bytes` with every old name replaced.
    pub fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.finder {
            Some(f) => f.replace_all_bytes(bytes, &self.to),
            None => bytes.to_vec(),
        }
    }
}

/// Whether `newer` is `older` with the old names replaced by the new ones.
pub fn same_but_renames(renamer: &Renamer, older: &[u8], newer: &[u8]) -> bool {
    renamer.apply(older) == newer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileSpec;
    use crate::BlobHash;
    use proptest::prelude::*;

    fn manifest(files: &[(&str, &[u8])]) -> Manifest {
        let specs: Vec<FileSpec> = files
            .iter()
            .map(|(p, bytes)| FileSpec {
                path: (*p).into(),
                hash: BlobHash::parse(&blake(bytes)).unwrap(),
                size: bytes.len() as u64,
            })
            .collect();
        Manifest::from_specs(&specs).unwrap()
    }

    /// A stand-in for the real digest: any stable 64-hex function of the bytes.
    fn blake(bytes: &[u8]) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        format!("{h:016x}").repeat(4)
    }

    /// Resolves a plan against in-memory contents, as the server does
    /// against the blob store.
    fn run(older: &[(&str, &[u8])], newer: &[(&str, &[u8])]) -> ReleaseDiff {
        let (a, b) = (manifest(older), manifest(newer));
        let p = plan(&a, &b);
        let renamer = p.renamer();
        let get = |files: &[(&str, &[u8])], path: &str| -> Vec<u8> {
            let key = path.trim_start_matches('/');
            files.iter().find(|(p, _)| *p == key).unwrap().1.to_vec()
        };
        let same = p
            .compare
            .iter()
            .all(|(o, n)| same_but_renames(&renamer, &get(older, o), &get(newer, n)));
        p.conclude(same)
    }

    #[test]
    fn logical_names() {
        let cases = [
            ("/assets/index-Dw3a_x1Z.js", Some("/assets/index-*.js")),
            ("/assets/index-D-3a_x1Z.css", Some("/assets/index-*.css")),
            ("/assets/my-page-Dw3a_x1Z.js", Some("/assets/my-page-*.js")),
            ("/main.3f2a1b9c.css", Some("/main.*.css")),
            (
                "/static/js/2.8e0f3a1b.chunk.js",
                Some("/static/js/2.*.chunk.js"),
            ),
            ("/style.css", None),
            ("/assets/my-component.js", None),
            ("/index.html", None),
        ];
        for (path, want) in cases {
            assert_eq!(logical_name(path).as_deref(), want, "{path}");
        }
    }

    /// What Vite produces when only a colour changed: the stylesheets are
    /// renamed, and so is every chunk that names them or names the entry.
    #[test]
    fn a_vite_colour_change_is_stylesheet_only() {
        let v1: &[(&str, &[u8])] = &[
            ("index.html", b"<script src=\"/assets/index-AAAA1111.js\"></script><link href=\"/assets/index-BBBB2222.css\">"),
            ("assets/index-AAAA1111.js", b"const d=[\"assets/About-CCCC3333.js\",\"assets/About-DDDD4444.css\"];"),
            ("assets/About-CCCC3333.js", b"import{a}from\"./index-AAAA1111.js\";"),
            ("assets/index-BBBB2222.css", b"body{color:red}"),
            ("assets/About-DDDD4444.css", b".about{color:red}"),
            ("banner.svg", b"<svg/>"),
        ];
        let v2: &[(&str, &[u8])] = &[
            ("index.html", b"<script src=\"/assets/index-EEEE5555.js\"></script><link href=\"/assets/index-FFFF6666.css\">"),
            ("assets/index-EEEE5555.js", b"const d=[\"assets/About-GGGG7777.js\",\"assets/About-HHHH8888.css\"];"),
            ("assets/About-GGGG7777.js", b"import{a}from\"./index-EEEE5555.js\";"),
            ("assets/index-FFFF6666.css", b"body{color:blue}"),
            ("assets/About-HHHH8888.css", b".about{color:blue}"),
            ("banner.svg", b"<svg/>"),
        ];
        let d = run(v1, v2);
        assert!(d.only_stylesheets, "{d:?}");
        assert_eq!(d.changed, vec!["/index.html"]);
        assert!(d.added.is_empty() && d.removed.is_empty());
        assert_eq!(d.renamed.len(), 4);
        assert_eq!(
            d.renamed["/assets/About-DDDD4444.css"],
            "/assets/About-HHHH8888.css"
        );
        assert_eq!(d.stylesheets.len(), 2);
    }

    /// webpack's runtime names chunks by a map from chunk to hash: a
    /// stylesheet's new name shows in the entry only as its new hash.
    #[test]
    fn a_webpack_colour_change_is_stylesheet_only() {
        let v1: &[(&str, &[u8])] = &[
            ("index.html", b"<script src=\"/assets/main.1a2b3c4d.js\"></script><link href=\"/assets/main.5e6f7a8b.css\">"),
            ("assets/main.1a2b3c4d.js", b"u=c=>\"assets/\"+c+\".\"+{about:\"9c8d7e6f\"}[c]+\".js\";f=c=>\"assets/\"+c+\".\"+{about:\"0a1b2c3d\"}[c]+\".css\""),
            ("assets/about.9c8d7e6f.js", b"(self.webpackChunk=self.webpackChunk||[]).push([[1],{}])"),
            ("assets/main.5e6f7a8b.css", b"body{color:red}"),
            ("assets/about.0a1b2c3d.css", b".about{color:red}"),
        ];
        let v2: &[(&str, &[u8])] = &[
            ("index.html", b"<script src=\"/assets/main.4d5e6f70.js\"></script><link href=\"/assets/main.8b9c0d1e.css\">"),
            ("assets/main.4d5e6f70.js", b"u=c=>\"assets/\"+c+\".\"+{about:\"9c8d7e6f\"}[c]+\".js\";f=c=>\"assets/\"+c+\".\"+{about:\"2f3a4b5c\"}[c]+\".css\""),
            ("assets/about.9c8d7e6f.js", b"(self.webpackChunk=self.webpackChunk||[]).push([[1],{}])"),
            ("assets/main.8b9c0d1e.css", b"body{color:blue}"),
            ("assets/about.2f3a4b5c.css", b".about{color:blue}"),
        ];
        let d = run(v1, v2);
        assert!(d.only_stylesheets, "{d:?}");
        assert_eq!(
            d.renamed["/assets/about.0a1b2c3d.css"],
            "/assets/about.2f3a4b5c.css"
        );
        assert_eq!(d.renamed.len(), 3);
    }

    /// Two stylesheets with equal content share a hash; when only one of
    /// them changes, the other's name must stay as it is.
    #[test]
    fn files_sharing_a_hash_are_renamed_by_name() {
        let v1: &[(&str, &[u8])] = &[
            (
                "index.html",
                b"<link href=/a-AAAA1111.css><link href=/b-AAAA1111.css>",
            ),
            ("a-AAAA1111.css", b"}"),
            ("b-AAAA1111.css", b"}"),
        ];
        let v2: &[(&str, &[u8])] = &[
            (
                "index.html",
                b"<link href=/a-AAAA1111.css><link href=/b-BBBB2222.css>",
            ),
            ("a-AAAA1111.css", b"}"),
            ("b-BBBB2222.css", b"}x"),
        ];
        let d = run(v1, v2);
        assert!(d.only_stylesheets, "{d:?}");
    }

    #[test]
    fn a_code_change_is_not() {
        let v1: &[(&str, &[u8])] = &[
            (
                "index.html",
                b"<script src=\"/assets/index-AAAA1111.js\"></script>",
            ),
            ("assets/index-AAAA1111.js", b"console.log(1)"),
        ];
        let v2: &[(&str, &[u8])] = &[
            (
                "index.html",
                b"<script src=\"/assets/index-EEEE5555.js\"></script>",
            ),
            ("assets/index-EEEE5555.js", b"console.log(2)"),
        ];
        let d = run(v1, v2);
        assert!(!d.only_stylesheets);
        assert_eq!(d.renamed.len(), 1);
    }

    #[test]
    fn unpaired_or_public_changes_are_not() {
        let base: &[(&str, &[u8])] = &[("index.html", b"x"), ("s.css", b"a")];
        // A plain stylesheet changed in place: stylesheet-only.
        let d = run(base, &[("index.html", b"x"), ("s.css", b"b")]);
        assert!(d.only_stylesheets);
        // A new script, a changed public file: not.
        assert!(
            !run(
                base,
                &[("index.html", b"x"), ("s.css", b"a"), ("w.js", b"1")]
            )
            .only_stylesheets
        );
        assert!(
            !run(
                &[("index.html", b"x"), ("b.svg", b"1")],
                &[("index.html", b"x"), ("b.svg", b"2")]
            )
            .only_stylesheets
        );
        // Two candidates for one logical name: ambiguous, so not paired.
        let d = run(
            &[("index.html", b"x"), ("a-AAAA1111.js", b"1")],
            &[
                ("index.html", b"x"),
                ("a-BBBB2222.js", b"1"),
                ("a-CCCC3333.js", b"1"),
            ],
        );
        assert!(d.renamed.is_empty() && !d.only_stylesheets);
        // A stylesheet turned into a script under the same logical name: not.
        let d = run(
            &[("index.html", b"x"), ("a-AAAA1111.css", b"1")],
            &[("index.html", b"x"), ("a-BBBB2222.js", b"1")],
        );
        assert!(!d.only_stylesheets);
        // Identical releases: trivially stylesheet-only, nothing to swap.
        let d = run(base, base);
        assert!(d.only_stylesheets && d.stylesheets.is_empty());
    }

    /// A toy bundler: each module names the modules it imports; every output
    /// file is called `<name>-<hash>.<ext>` with the hash taken over its
    /// content including the final names it refers to, as real bundlers do.
    fn bundle(css: &[String], code: &[String], imports: &[Vec<usize>]) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let hash8 = |bytes: &[u8]| blake(bytes)[..8].to_uppercase().replace('0', "Q") + "9";
        let mut css_names = Vec::new();
        for (i, body) in css.iter().enumerate() {
            let name = format!("assets/s{i}-{}.css", hash8(body.as_bytes()));
            out.push((name.clone(), body.clone().into_bytes()));
            css_names.push(name);
        }
        // Module i imports only modules with a lower index (a DAG), and
        // names stylesheet i % css.len().
        let mut code_names: Vec<String> = Vec::new();
        for (i, body) in code.iter().enumerate() {
            let mut text = body.clone();
            for &j in &imports[i] {
                if j < i {
                    text.push_str(&format!(";import \"./{}\"", file_name(&code_names[j])));
                }
            }
            if !css_names.is_empty() {
                text.push_str(&format!(";css(\"{}\")", css_names[i % css_names.len()]));
            }
            let name = format!("assets/m{i}-{}.js", hash8(text.as_bytes()));
            out.push((name.clone(), text.into_bytes()));
            code_names.push(name);
        }
        let mut html = String::from("<html>");
        for n in code_names.iter().chain(&css_names) {
            html.push_str(&format!("<link href=\"/{n}\">"));
        }
        out.push(("index.html".into(), html.into_bytes()));
        out
    }

    fn as_refs(files: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
        files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect()
    }

    proptest! {
        /// Changing stylesheets only, however the renames cascade, gives a
        /// stylesheet-only diff whose renames map every old file to the
        /// new file of the same module.
        #[test]
        fn stylesheet_edits_are_recognised(
            css in prop::collection::vec("[a-z{}:;]{1,12}", 1..4),
            code in prop::collection::vec("[a-z();]{1,12}", 1..6),
            imports in prop::collection::vec(prop::collection::vec(0usize..6, 0..3), 6),
            edit in prop::collection::vec("[a-z{}:;]{0,6}", 1..4),
        ) {
            let v1 = bundle(&css, &code, &imports);
            let css2: Vec<String> = css.iter().zip(edit.iter().cycle()).map(|(c, e)| format!("{c}{e}")).collect();
            let v2 = bundle(&css2, &code, &imports);
            let d = run(&as_refs(&v1), &as_refs(&v2));
            prop_assert!(d.only_stylesheets, "{:?}", d);
            for (old, new) in &d.renamed {
                prop_assert_eq!(logical_name(old), logical_name(new));
            }
            prop_assert!(d.added.is_empty() && d.removed.is_empty());
        }

        /// Any change of a script's own code is never stylesheet-only.
        #[test]
        fn code_edits_are_not(
            css in prop::collection::vec("[a-z{}:;]{1,12}", 0..3),
            code in prop::collection::vec("[a-z();]{1,12}", 1..6),
            imports in prop::collection::vec(prop::collection::vec(0usize..6, 0..3), 6),
            which in 0usize..6,
            extra in "[a-z();]{1,6}",
        ) {
            let v1 = bundle(&css, &code, &imports);
            let mut code2 = code.clone();
            let i = which % code2.len();
            code2[i].push_str(&extra);
            let v2 = bundle(&css, &code2, &imports);
            let d = run(&as_refs(&v1), &as_refs(&v2));
            prop_assert!(!d.only_stylesheets, "{:?}", d);
        }
    }
}
