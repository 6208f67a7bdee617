//! Writes outputs atomically. A build's output directory: everything goes
//! to a new sibling directory first, which then replaces OUT by rename; a
//! failed build leaves OUT as it was; a directory cortex did not write is
//! never replaced. A single file (a saved plan): a sibling temporary file,
//! synced, renamed over it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an output was not written (the previous one, if any, is untouched).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The output path holds something cortex will not replace.
    #[error("{0}")]
    Refused(String),
}

trait Context<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, WriteError>;
}

impl<T, E: Into<std::io::Error>> Context<T> for Result<T, E> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, WriteError> {
        self.map_err(|e| WriteError::Io {
            what: what(),
            source: e.into(),
        })
    }
}

/// Files whose presence marks a directory as a previous `cortex build`.
const MARKERS: [&str; 2] = ["inventory.json", "manifests.yaml"];

/// Replaces `out` with exactly `files`.
pub fn replace_dir(out: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<(), WriteError> {
    replace_dir_with(out, |staging| write_all(staging, files))
}

/// [`replace_dir`], the new content written by `fill` into the staging
/// directory it is given (an error from it leaves `out` as it was).
pub fn replace_dir_with(
    out: &Path,
    fill: impl FnOnce(&Path) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    if out.exists() {
        if !out.is_dir() {
            return Err(WriteError::Refused(format!(
                "{} exists and is not a directory",
                out.display()
            )));
        }
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_none();
        let ours = MARKERS.iter().all(|m| out.join(m).is_file());
        if !empty && !ours {
            return Err(WriteError::Refused(format!(
                "{} exists and was not written by `cortex build`; refusing to replace it (choose another -o or remove it)",
                out.display()
            )));
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let base = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let staging = parent.join(format!(".{base}.cortex-new-{}", std::process::id()));
    let old = parent.join(format!(".{base}.cortex-old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(e) = std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))
        .and_then(|()| fill(&staging))
    {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old)
            .with_context(|| format!("cannot move {} aside", out.display()))?;
    }
    if let Err(e) = std::fs::rename(&staging, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e).with_context(|| format!("cannot move the new build into {}", out.display()));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

fn write_all(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<(), WriteError> {
    for (relative, content) in files {
        write_new(dir, relative, content)?;
    }
    Ok(())
}

/// Writes `content` as `relative` under `dir`, making its directories
/// (a file of a build being staged).
pub fn write_new(dir: &Path, relative: &str, content: &[u8]) -> Result<(), WriteError> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(content)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes a build's output into `out` as [`replace_dir`] does, each file
/// written as the bundle makes it ([`cortex_compiler::bundle::Output::emit`]):
/// the whole output is never in memory at once.
pub fn write_build(out: &Path, bundle: &cortex_compiler::bundle::Output) -> Result<(), WriteError> {
    replace_dir_with(out, |staging| {
        bundle
            .emit(&Staging(staging))
            .map_err(|source| WriteError::Io {
                what: "writing the build".into(),
                source,
            })
    })
}

/// A build's files written into its staging directory as they are made.
struct Staging<'a>(&'a Path);

impl cortex_compiler::bundle::Sink for Staging<'_> {
    fn file(
        &self,
        relative: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let path = self.0.join(relative);
        let named =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(named)?;
        }
        let file = std::fs::File::create(&path).map_err(named)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut out).map_err(named)?;
        out.flush().map_err(named)
    }
}

/// Writes a file whole or not at all (a sibling temporary file renamed).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.as_file()
        .sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
