//! Embeds every module of the browser library (`client/src/*.js`) so the
//! binary serves it without Node at build or run time.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let src = manifest_dir.join("../../client/src");
    println!("cargo:rerun-if-changed={}", src.display());
    let mut names: Vec<String> = std::fs::read_dir(&src)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".js").then_some(name)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = String::from("/// Modules of the browser library: (file name, source).\npub static MODULES: &[(&str, &str)] = &[\n");
    for name in &names {
        let path = src.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    std::fs::write(out_dir.join("client_modules.rs"), out).expect("write client_modules.rs");
}
