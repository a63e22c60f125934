//! Embeds every Lua module of stdlib/runbook/ and stdlib/internal/ into the binary, so
//! `require "runbook.x"` works with nothing installed.
use std::fmt::Write;
use std::path::Path;

fn modules(dir: &str, prefix: &str, out: &mut String) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .collect();
    files.sort();
    for path in files {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        // Relative to the crate's own directory at compile time, not where the build script ran:
        // two checkouts sharing one target directory (CI's clone and a work tree) reuse the
        // script's output, and an absolute path would embed the other checkout's files.
        let rel = path.display().to_string();
        writeln!(out, "    (\"{prefix}{stem}\", include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/{rel}\"))),")
            .unwrap();
    }
}

fn files(dir: &Path, root: &str, out: &mut String) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        // Editor leftovers (.swp, backups~) are not part of the stubs or the scaffold.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if (name.starts_with('.') && name != ".luarc.json") || name.ends_with('~') || name.ends_with(".swp") {
            continue;
        }
        if path.is_dir() {
            files(&path, root, out);
        } else {
            let rel = path.display().to_string();
            let under = rel.trim_start_matches(root).trim_start_matches('/');
            writeln!(out, "    (\"{under}\", include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/{rel}\"))),")
                .unwrap();
        }
    }
}

fn main() {
    let mut out = String::from(
        "/// (module name, source) of every embedded Lua module.\npub static MODULES: &[(&str, &str)] = &[\n",
    );
    modules("stdlib/runbook", "runbook.", &mut out);
    modules("stdlib/internal", "internal.", &mut out);
    out.push_str("];\n");
    // The editor stubs (`runbook stubs`) and the project scaffold (`runbook init`), by path.
    for (name, dir) in [("TYPES", "stdlib/types"), ("SCAFFOLD", "stdlib/scaffold")] {
        writeln!(out, "/// (path under {dir}, text) of every file of {dir}.\npub static {name}: &[(&str, &str)] = &[")
            .unwrap();
        files(Path::new(dir), dir, &mut out);
        out.push_str("];\n");
        println!("cargo:rerun-if-changed={dir}");
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("stdlib.rs");
    std::fs::write(dest, out).unwrap();
    println!("cargo:rerun-if-changed=stdlib/runbook");
    println!("cargo:rerun-if-changed=stdlib/internal");
    println!("cargo:rerun-if-changed=migrations");
}
