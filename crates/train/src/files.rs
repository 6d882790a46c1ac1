//! Writing files so that a crash never leaves a half-written one: temporary name, fsync, rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically; the error names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Checks, before a command does its work, that the file `flag` names can be written where it
/// is asked for: its folder exists. Nothing is written.
pub fn check_output_file(flag: &str, path: Option<&Path>) -> Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        anyhow::bail!(
            "{flag} {}: the folder {} does not exist; create it or give another path",
            path.display(),
            folder.display()
        );
    }
    if path.is_dir() {
        anyhow::bail!(
            "{flag} {}: is a folder; give a file path, e.g. {}",
            path.display(),
            path.join("out").display()
        );
    }
    Ok(())
}

/// Checks, before a command does its work, that the folder `flag` names is not a file: the
/// command would create it, or write `what` into it. Nothing is written.
pub fn check_output_folder(flag: &str, path: &Path, what: &str) -> Result<()> {
    if path.exists() && !path.is_dir() {
        anyhow::bail!(
            "{flag} {}: is a file, not a folder; give a folder to write {what} into (created if \
             absent)",
            path.display()
        );
    }
    Ok(())
}

/// Writes `value` as pretty JSON to `path`, atomically, when a path is given.
pub fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> Result<()> {
    match path {
        Some(path) => write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes()),
        None => Ok(()),
    }
}

/// [`write_atomic`] as an I/O result, for Burn's checkpointer: the bytes go to `<path>.tmp` in
/// the same folder, are synced, then renamed over `path`; on failure the temporary file is
/// removed and `path` is left as it was. A symbolic link's target is replaced; a device or pipe
/// is written to as it is.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        // A link is followed: its target is replaced, the link stays.
        Ok(meta) if meta.file_type().is_symlink() => {
            return replace(&std::fs::canonicalize(path)?, bytes);
        }
        // A device or pipe (`/dev/stdout`) is written to, never renamed over.
        Ok(meta) if !meta.is_file() && !meta.is_dir() => {
            return std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .write_all(bytes);
        }
        _ => {}
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_names_the_path_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("summary.json");
        let err = format!("{:#}", write_atomic(&path, b"one").unwrap_err());
        assert!(err.contains("missing-folder/summary.json"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_link_keeps_pointing_and_a_device_stays_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("timings.json");
        let link = dir.path().join("link.json");
        std::fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        write_atomic(Path::new("/dev/null"), b"nothing").unwrap();
        use std::os::unix::fs::FileTypeExt;
        let null = std::fs::metadata("/dev/null").unwrap().file_type();
        assert!(null.is_char_device());
        if Path::new("/dev/full").exists() {
            assert!(write_atomic(Path::new("/dev/full"), b"x").is_err());
            assert!(
                std::fs::metadata("/dev/full")
                    .unwrap()
                    .file_type()
                    .is_char_device()
            );
        }
    }

    #[test]
    fn an_output_file_in_a_missing_folder_is_named_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nodir").join("x.json");
        let err = check_output_file("--json", Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("nodir"), "{err}");
        assert!(check_output_file("--json", Some(&dir.path().join("x.json"))).is_ok());
        assert!(check_output_file("--json", Some(Path::new("x.json"))).is_ok());
        assert!(check_output_file("--json", None).is_ok());
        let err = check_output_file("--html", Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
    }
}
