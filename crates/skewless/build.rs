//! Lays out the release binary's hot code together: the functions a
//! request runs through (listed in `hot-symbols.txt`, written by
//! `bench/hot_symbols.py` from callgrind profiles of the benchmark cases)
//! are placed next to each other by the linker, so a request touches a
//! hundred pages of code instead of three hundred scattered across the
//! text. Only where the linker is known to understand the list: release
//! builds for x86_64 Linux with rustc's own `lld` (the default linker there
//! since Rust 1.90) and no linker configured. Names the build no longer has
//! are skipped, so a stale list costs only the layout.
//! `SKEWLESS_NO_SYMBOL_ORDER=1` turns it off.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=SKEWLESS_NO_SYMBOL_ORDER");
    if let Some(list) = ordering_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={list}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The list's path, when this build's linker is rustc's `lld`.
fn ordering_file() -> Option<String> {
    let var = |name: &str| env::var(name).unwrap_or_default();
    if env::var_os("SKEWLESS_NO_SYMBOL_ORDER").is_some()
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || env::var_os("RUSTC_LINKER").is_some()
        || var("CARGO_ENCODED_RUSTFLAGS").contains("link")
    {
        return None;
    }
    // rust-lld is the default linker of this target from Rust 1.90.
    let out = Command::new(var("RUSTC")).arg("-vV").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let release = text.lines().find_map(|l| l.strip_prefix("release: "))?;
    let mut parts = release.split(['.', '-']);
    let (major, minor): (u32, u32) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if (major, minor) < (1, 90) {
        return None;
    }
    let list = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    list.exists().then(|| list.display().to_string())
}
