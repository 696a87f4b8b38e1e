//! The engine's one way to replace a file: a hidden temporary sibling, fsync, rename. A reader
//! (or a crash) sees the old file or the new one, never half of one. Folders are replaced by
//! `checkpoint::write_dir_atomic` on top of this.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically. The error is the failing step's, on the path it was at.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let tmp = tmp_sibling(path);
    let on = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    {
        let mut f = std::fs::File::create(&tmp).map_err(on(&tmp))?;
        f.write_all(bytes).map_err(on(&tmp))?;
        f.sync_all().map_err(on(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        (path.to_path_buf(), e)
    })
}

/// `.tmp-<pid>-<name>` beside `path`, the extension kept last.
fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, "old").unwrap();
        super::write_file(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let (at, _) = super::write_file(&dir.path().join("no/such/dir/x"), b"x").unwrap_err();
        assert!(at.to_string_lossy().contains("no/such/dir"));
    }
}
