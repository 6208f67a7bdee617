//! Files and directories the embedded target makes in its state directory
//! (the store, locks, agent logs and configs): owner-only from the moment
//! they exist — the state directory 0700, every file 0600 — since the store
//! holds tokens and logs and configs may hold what agents print or read.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` (and missing parents) owner-only (0700). A directory that
/// is already there keeps its mode: it may be the project's own (a store
/// configured at the project's root); the files cortex puts in it are
/// 0600 anyway.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Open options that create a file owner-only (0600); the caller adds
/// read, write, append, create, truncate as it needs.
pub fn options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Makes an existing file owner-only (0600); a file not there is fine.
pub fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Writes `contents` to `path`, creating it owner-only (an existing file is
/// truncated and made owner-only).
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file: File = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    restrict(path);
    file.write_all(contents)
}
