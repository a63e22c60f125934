//! `runbook init [DIR]`: a project a newcomer can start from (runbook.toml, a runbook and its
//! tests, the editor stubs and `.luarc.json`, a README), and `runbook stubs DIR`: the LuaLS
//! stubs written out of the binary, so an editor works without the source tree.
use std::path::Path;

use crate::error::{exit, Error, Result};

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::Io(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::write(path, text).map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
}

/// Writes the stubs under `dir` (they are generated: written over).
pub fn stubs(dir: &Path) -> Result<u8> {
    for (rel, text) in crate::lua::embedded_types() {
        write(&dir.join(rel), text)?;
    }
    println!("wrote {} stub files under {}", crate::lua::embedded_types().len(), dir.display());
    Ok(exit::OK)
}

/// The scaffold's files, where they go in the project.
fn plan(dir: &Path) -> Vec<(std::path::PathBuf, &'static str)> {
    let mut files: Vec<_> = crate::lua::scaffold()
        .iter()
        .map(|(rel, text)| (dir.join(if *rel == "luarc.json" { ".luarc.json" } else { rel }), *text))
        .collect();
    files.extend(crate::lua::embedded_types().iter().map(|(rel, text)| (dir.join("types").join(rel), *text)));
    files
}

/// Creates the project in `dir` (made when missing); refuses to write over any file there.
pub fn init(dir: &Path) -> Result<u8> {
    let files = plan(dir);
    let existing: Vec<String> =
        files.iter().filter(|(p, _)| p.exists()).map(|(p, _)| p.display().to_string()).collect();
    if !existing.is_empty() {
        return Err(Error::Usage(format!(
            "runbook init: these files exist already, nothing was written: {}",
            existing.join(", ")
        )));
    }
    for (path, text) in &files {
        write(path, text)?;
    }
    println!("created a runbook project in {}:", dir.display());
    println!("  runbook.toml   hosts, notifications, schedules (commented examples)");
    println!("  hello.lua      a first runbook; hello_test.lua, its tests");
    println!("  types/         editor stubs, with .luarc.json for the Lua language server");
    println!("next: cd {} && runbook test && runbook run hello.lua", dir.display());
    Ok(exit::OK)
}
