//! Output files appear whole or not at all: everything is written to a
//! temporary file beside the destination and renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::InputError;

/// A hidden temporary path in the directory of `path` (same file system, so
/// a rename onto `path` is atomic), tagged with this process's id.
pub fn sibling_temp(path: &Path, tag: &str) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = path
        .file_name()
        .ok_or_else(|| InputError::new(path, "output path has no file name"))?;
    Ok(dir.join(format!(
        ".{}.{tag}{}",
        file.to_string_lossy(),
        std::process::id()
    )))
}

/// Move a finished temporary file onto `path`.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        InputError::new(path, format!("cannot write output: {e}")).into()
    })
}

/// Write `bytes` to `path` atomically, executable when `executable`.
pub fn write_atomically(path: &Path, bytes: &[u8], executable: bool) -> Result<()> {
    let tmp = sibling_temp(path, "tmp")?;
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(InputError::new(path, format!("cannot write output: {e}")).into());
    }
    commit(&tmp, path)
}
