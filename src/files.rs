//! What `runbook` may change on the local file system, and how.
//!
//! The rule: change the mode of, rename over, or delete only what is ours, a regular file (or
//! folder) that `runbook` created or recognises. A path the user points at a device, a folder,
//! a symlink to elsewhere or a file of another kind is refused with a clear error and left
//! exactly as it was (`--state /dev/null` run as root must not change `/dev/null`).
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

/// What a path is, in words for an error message.
pub fn describe_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a regular file"
    }
}

/// A path that a temporary file may be renamed over: it does not exist yet, or it is a regular
/// file (not a symlink, a device, a folder...). Returns the reason it may not.
pub fn check_replaceable(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(meta) if meta.file_type().is_file() => Ok(()),
        Ok(meta) => Err(format!(
            "{} is {}, not a regular file; refusing to replace it (give the path of a regular file)",
            path.display(),
            describe_kind(&meta)
        )),
    }
}

/// Restricts a regular file to its owner (0600), leaving anything else alone. Returns whether
/// the mode was changed.
pub fn restrict_regular_file(path: &Path) -> std::io::Result<bool> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() || meta.permissions().mode() & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(true)
}

/// The first 16 bytes of every SQLite database.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Whether `path` holds a SQLite database (or nothing yet: an empty regular file).
pub fn is_sqlite_or_empty(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path)?;
    let mut read = 0;
    while read < head.len() {
        match f.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read == 0 || (read == 16 && &head == SQLITE_MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_not_replaceable_and_keeps_its_mode() {
        let before = std::fs::metadata("/dev/null").unwrap().permissions().mode();
        assert!(check_replaceable(Path::new("/dev/null")).unwrap_err().contains("a device"));
        assert!(!restrict_regular_file(Path::new("/dev/null")).unwrap());
        assert_eq!(std::fs::metadata("/dev/null").unwrap().permissions().mode(), before);
    }

    #[test]
    fn a_symlink_or_folder_is_not_replaceable_but_a_missing_or_regular_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(check_replaceable(&file).is_ok());
        assert!(check_replaceable(&dir.path().join("missing")).is_ok());
        assert!(check_replaceable(&link).unwrap_err().contains("symbolic link"));
        assert!(check_replaceable(dir.path()).unwrap_err().contains("directory"));
    }

    #[test]
    fn only_sqlite_files_or_empty_ones_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("e");
        std::fs::write(&empty, "").unwrap();
        let text = dir.path().join("t");
        std::fs::write(&text, "not a database at all").unwrap();
        assert!(is_sqlite_or_empty(&empty).unwrap());
        assert!(!is_sqlite_or_empty(&text).unwrap());
    }
}
