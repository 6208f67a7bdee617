//! Where project files come from. The compiler reads nothing else.
//!
//! [`WorkTree`] reads a directory on disk and refuses anything that leads
//! outside it (`..`, absolute paths, symbolic links pointing out);
//! [`MemorySource`] serves files from memory for tests. A git tree at a
//! revision is a third implementation (in the reconciler crate).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Component, Path, PathBuf};

/// Largest spec file cortex reads (4 MiB); larger files are refused with
/// [`SourceError::TooLarge`]. Real spec files are a few KiB.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No such file.
    #[error("no such file: {0}")]
    NotFound(String),
    /// The path (or a symbolic link on it) leads outside the project root.
    #[error("{path} leads outside the project root{}", target.as_ref().map(|t| format!(" (to {t})")).unwrap_or_default())]
    OutsideRoot {
        /// The project-relative path asked for.
        path: String,
        /// Where it leads, when known.
        target: Option<String>,
    },
    /// The file is over [`MAX_FILE_BYTES`].
    #[error("{path} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Any other I/O failure.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

/// A tree of project files addressed by project-relative paths with `/`
/// separators.
pub trait Source {
    /// Reads a whole file.
    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError>;

    /// Every file under directory `dir` (`""` is the root), recursively, as
    /// project-relative paths in sorted order.
    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError>;
}

/// Checks a project-relative path: relative, no `..`, no root or prefix.
pub fn check_relative(path: &str) -> Result<(), SourceError> {
    let outside = || SourceError::OutsideRoot {
        path: path.to_string(),
        target: None,
    };
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(outside());
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(outside());
            }
        }
    }
    Ok(())
}

/// Project files in a directory on disk.
#[derive(Clone, Debug)]
pub struct WorkTree {
    root: PathBuf,
}

impl WorkTree {
    /// Opens `root`, which must be an existing directory.
    pub fn open(root: impl AsRef<Path>) -> Result<WorkTree, SourceError> {
        let given = root.as_ref();
        let root = given.canonicalize().map_err(|source| SourceError::Io {
            path: given.display().to_string(),
            source,
        })?;
        Ok(WorkTree { root })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, path: &str) -> Result<PathBuf, SourceError> {
        check_relative(path)?;
        let joined = self.root.join(path);
        let real = joined
            .canonicalize()
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => SourceError::NotFound(path.to_string()),
                _ => SourceError::Io {
                    path: path.to_string(),
                    source,
                },
            })?;
        if !real.starts_with(&self.root) {
            return Err(SourceError::OutsideRoot {
                path: path.to_string(),
                target: Some(real.display().to_string()),
            });
        }
        Ok(real)
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        seen: &mut HashSet<PathBuf>,
        out: &mut Vec<String>,
    ) -> io::Result<()> {
        let real = match dir.canonicalize() {
            Ok(real) => real,
            Err(_) => return Ok(()),
        };
        // Directory links that lead outside the root or back up the tree are
        // not followed (a file link is listed, and refused when read).
        if !real.starts_with(&self.root) || !seen.insert(real) {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == ".git" {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            if path.is_dir() {
                self.walk(&path, &child_rel, seen, out)?;
            } else {
                out.push(child_rel);
            }
        }
        Ok(())
    }
}

impl Source for WorkTree {
    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        let real = self.resolve(path)?;
        let io_err = |source| SourceError::Io {
            path: path.to_string(),
            source,
        };
        let size = std::fs::metadata(&real).map_err(io_err)?.len();
        if size > MAX_FILE_BYTES {
            return Err(SourceError::TooLarge {
                path: path.to_string(),
                size,
                limit: MAX_FILE_BYTES,
            });
        }
        std::fs::read(&real).map_err(io_err)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        check_relative(dir)?;
        let start = self.root.join(dir);
        if !start.is_dir() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let rel = dir.trim_end_matches('/');
        self.walk(&start, rel, &mut HashSet::new(), &mut out)
            .map_err(|source| SourceError::Io {
                path: dir.to_string(),
                source,
            })?;
        out.sort();
        Ok(out)
    }
}

/// Project files held in memory (tests, generated projects).
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    files: BTreeMap<String, Vec<u8>>,
}

impl MemorySource {
    /// An empty tree.
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(
        &mut self,
        path: impl Into<String>,
        content: impl Into<Vec<u8>>,
    ) -> &mut MemorySource {
        self.files.insert(path.into(), content.into());
        self
    }

    /// Builder form of [`MemorySource::insert`].
    pub fn with(mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) -> MemorySource {
        self.insert(path, content);
        self
    }

    /// Every file and its content.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }
}

impl Source for MemorySource {
    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        check_relative(path)?;
        let key = path.trim_start_matches("./");
        let content = self
            .files
            .get(key)
            .ok_or_else(|| SourceError::NotFound(path.to_string()))?;
        if content.len() as u64 > MAX_FILE_BYTES {
            return Err(SourceError::TooLarge {
                path: path.to_string(),
                size: content.len() as u64,
                limit: MAX_FILE_BYTES,
            });
        }
        Ok(content.clone())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        check_relative(dir)?;
        let dir = dir.trim_end_matches('/');
        Ok(self
            .files
            .keys()
            .filter(|k| {
                dir.is_empty()
                    || k.strip_prefix(dir)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .cloned()
            .collect())
    }
}
