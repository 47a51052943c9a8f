//! Manifests: what a release holds, path → blob.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::content::{content_type, is_compressible};
use crate::path::normalize_file_path;
use crate::{BlobHash, CoreError};

/// The path of the shell inside every release.
pub const SHELL: &str = "/index.html";

/// Most files one release may hold.
pub const MAX_FILES: usize = 100_000;

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The blob holding the file's bytes.
    pub hash: BlobHash,
    /// Size in bytes.
    pub size: u64,
    /// The `Content-Type` it is served with.
    pub content_type: String,
    /// Size of the stored brotli variant, if one is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub br: Option<u64>,
    /// Size of the stored gzip variant, if one is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<u64>,
}

impl Entry {
    /// Whether br/gzip variants should exist for this file.
    pub fn compressible(&self) -> bool {
        is_compressible(&self.content_type)
    }
}

/// A file as `deploy` describes it: relative path, hash, size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// `/`-separated path relative to the release root.
    pub path: String,
    /// BLAKE3 of the file's bytes.
    pub hash: BlobHash,
    /// Size in bytes.
    pub size: u64,
}

/// Path (canonical, leading `/`) → entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The release's files.
    pub files: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Builds a manifest from a deploy's file list: every path validated and
    /// canonicalised, no duplicates, an `index.html` at the root.
    pub fn from_specs(specs: &[FileSpec]) -> Result<Manifest, CoreError> {
        if specs.len() > MAX_FILES {
            return Err(CoreError::InvalidPath {
                path: format!("({} files)", specs.len()),
                reason: "a release may hold at most 100000 files",
            });
        }
        let mut files = BTreeMap::new();
        for spec in specs {
            let path = normalize_file_path(&spec.path)?;
            if path.starts_with("/_r/") || path.starts_with("/_skewless/") {
                return Err(CoreError::InvalidPath {
                    path,
                    reason: "paths under /_r/ and /_skewless/ are reserved",
                });
            }
            let entry = Entry {
                hash: spec.hash.clone(),
                size: spec.size,
                content_type: content_type(&path),
                br: None,
                gzip: None,
            };
            if files.insert(path.clone(), entry).is_some() {
                return Err(CoreError::DuplicatePath(path));
            }
        }
        if !files.contains_key(SHELL) {
            return Err(CoreError::MissingShell);
        }
        Ok(Manifest { files })
    }

    /// The entry for a canonical path.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.files.get(path)
    }

    /// Total bytes of the release's files.
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }

    /// The paths that differ between `self` (older) and `newer`.
    pub fn diff(&self, newer: &Manifest) -> ManifestDiff {
        let mut d = ManifestDiff::default();
        for (path, e) in &newer.files {
            match self.files.get(path) {
                None => d.added.push(path.clone()),
                Some(old) if old.hash != e.hash => d.changed.push(path.clone()),
                Some(_) => {}
            }
        }
        d.removed = self
            .files
            .keys()
            .filter(|p| !newer.files.contains_key(*p))
            .cloned()
            .collect();
        d
    }
}

/// Paths that differ between two releases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDiff {
    /// In both, with different bytes.
    pub changed: Vec<String>,
    /// Only in the newer.
    pub added: Vec<String>,
    /// Only in the older.
    pub removed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> BlobHash {
        BlobHash::parse(&c.to_string().repeat(64)).unwrap()
    }

    fn spec(path: &str, c: char) -> FileSpec {
        FileSpec {
            path: path.into(),
            hash: h(c),
            size: 3,
        }
    }

    #[test]
    fn builds_and_canonicalises() {
        let m = Manifest::from_specs(&[spec("index.html", 'a'), spec("assets/x.js", 'b')]).unwrap();
        assert_eq!(m.get("/assets/x.js").unwrap().hash, h('b'));
        assert_eq!(
            m.get("/assets/x.js").unwrap().content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(m.total_size(), 6);
    }

    #[test]
    fn refuses_bad_manifests() {
        assert_eq!(
            Manifest::from_specs(&[spec("a.js", 'a')]),
            Err(CoreError::MissingShell)
        );
        assert!(matches!(
            Manifest::from_specs(&[spec("index.html", 'a'), spec("/index.html", 'b')]),
            Err(CoreError::DuplicatePath(_))
        ));
        assert!(Manifest::from_specs(&[spec("index.html", 'a'), spec("../x", 'b')]).is_err());
        assert!(Manifest::from_specs(&[spec("index.html", 'a'), spec("_r/v1/x", 'b')]).is_err());
    }

    #[test]
    fn diffs() {
        let a = Manifest::from_specs(&[
            spec("index.html", 'a'),
            spec("s.css", 'b'),
            spec("old.js", 'c'),
        ])
        .unwrap();
        let b = Manifest::from_specs(&[
            spec("index.html", 'a'),
            spec("s.css", 'd'),
            spec("new.js", 'e'),
        ])
        .unwrap();
        let d = a.diff(&b);
        assert_eq!(d.changed, vec!["/s.css"]);
        assert_eq!(d.added, vec!["/new.js"]);
        assert_eq!(d.removed, vec!["/old.js"]);
        assert_eq!(a.diff(&a), ManifestDiff::default());
    }

    #[test]
    fn serde_round_trip() {
        let m = Manifest::from_specs(&[spec("index.html", 'a')]).unwrap();
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&j).unwrap(), m);
    }
}
