//! `runbook init [DIR]`: a project a newcomer can start from (runbook.toml, a runbook and its
//! tests, the editor stubs and `.luarc.json`, a README), and `runbook stubs DIR`: the LuaLS
//! stubs written out of the binary, so an editor works without the source tree.
use std::path::Path;

use crate::error::{exit, Error, Result};

fn write(path: &Path, text: &str, new: bool) -> Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::Io(format!("cannot create {}: {e}", parent.display())))?;
    }
    // A new file only (no following a link left there, no race with the check before).
    let mut open = std::fs::OpenOptions::new();
    if new {
        open.write(true).create_new(true);
    } else {
        open.write(true).create(true).truncate(true);
    }
    open.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
}

/// Writes the stubs under `dir` (they are generated: written over).
pub fn stubs(dir: &Path) -> Result<u8> {
    // Stubs are written over earlier stubs, never over a file of the user's.
    let theirs: Vec<String> = crate::lua::embedded_types()
        .iter()
        .map(|(rel, _)| dir.join(rel))
        .filter(|p| p.exists() && !std::fs::read_to_string(p).is_ok_and(|t| t.starts_with("---@meta")))
        .map(|p| p.display().to_string())
        .collect();
    if !theirs.is_empty() {
        return Err(Error::Usage(format!(
            "runbook stubs: these files are not stubs (no ---@meta), nothing was written: {}",
            theirs.join(", ")
        )));
    }
    for (rel, text) in crate::lua::embedded_types() {
        write(&dir.join(rel), text, false)?;
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
        write(path, text, true)?;
    }
    println!("created a runbook project in {}:", dir.display());
    println!("  runbook.toml   hosts, notifications, schedules (commented examples)");
    println!("  hello.lua      a first runbook; hello_test.lua, its tests");
    println!("  types/         editor stubs, with .luarc.json for the Lua language server");
    println!("next: cd {} && runbook test && runbook run hello.lua", dir.display());
    Ok(exit::OK)
}
