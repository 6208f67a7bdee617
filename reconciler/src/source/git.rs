//! A project's files as they are in a git commit — a branch, a tag,
//! `HEAD~2`, `origin/main` or a commit id — read from the object database
//! without checking anything out. The project may live in a sub-directory
//! of the repository.

use std::path::{Component, Path, PathBuf};

use cortex_compiler::source::{MAX_FILE_BYTES, Source, SourceError, check_relative};
use git2::{ObjectType, Oid, Repository, Tree};

/// Most symbolic links followed to read one file.
const MAX_LINK_HOPS: usize = 8;

/// Why a revision could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// No repository contains the path.
    #[error("{path} is not inside a git repository")]
    NotARepository {
        /// The path given.
        path: String,
    },
    /// The revision does not name a commit.
    #[error("unknown revision `{rev}`{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownRevision {
        /// The revision as written.
        rev: String,
        /// A hint (closest branch or tag).
        hint: Option<String>,
    },
    /// The project directory is not in that commit.
    #[error("{dir} does not exist at {rev}")]
    ProjectMissing {
        /// Project directory relative to the repository root.
        dir: String,
        /// The revision.
        rev: String,
    },
    /// Any other failure of git.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// The files of a project at one commit.
pub struct GitTree {
    repo: Repository,
    tree: Oid,
    commit: Oid,
    rev: String,
    /// Project directory inside the repository (`""` for the root).
    prefix: String,
}

impl std::fmt::Debug for GitTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitTree")
            .field("rev", &self.rev)
            .field("commit", &self.commit)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl GitTree {
    /// Opens the project in directory `project` (inside a repository) as it
    /// is at revision `rev`.
    pub fn open(project: &Path, rev: &str) -> Result<GitTree, GitError> {
        let repo = Repository::discover(project).map_err(|_| GitError::NotARepository {
            path: project.display().to_string(),
        })?;
        let prefix = project_prefix(&repo, project)?;
        let (tree, commit) = {
            let commit = match repo.revparse_single(rev).and_then(|o| o.peel_to_commit()) {
                Ok(commit) => commit,
                Err(_) => {
                    return Err(GitError::UnknownRevision {
                        rev: rev.to_string(),
                        hint: closest_ref(&repo, rev),
                    });
                }
            };
            let tree = commit.tree()?;
            if !prefix.is_empty() && tree.get_path(Path::new(&prefix)).is_err() {
                return Err(GitError::ProjectMissing {
                    dir: prefix,
                    rev: rev.to_string(),
                });
            }
            (tree.id(), commit.id())
        };
        Ok(GitTree {
            tree,
            commit,
            rev: rev.to_string(),
            prefix,
            repo,
        })
    }

    /// The commit id.
    pub fn commit_id(&self) -> String {
        self.commit.to_string()
    }

    /// `rev (abc1234)`, as messages name the revision.
    pub fn describe(&self) -> String {
        let id = self.commit.to_string();
        format!("{} ({})", self.rev, &id[..id.len().min(7)])
    }

    fn root(&self) -> Result<Tree<'_>, SourceError> {
        self.repo
            .find_tree(self.tree)
            .map_err(|e| io_error(&self.prefix, e))
    }

    fn in_repo(&self, path: &str) -> String {
        let path = path.trim_start_matches("./").trim_end_matches('/');
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{path}", self.prefix),
        }
    }

    fn walk(&self, tree: &Tree<'_>, rel: &str, out: &mut Vec<String>) -> Result<(), SourceError> {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else { continue };
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .map_err(|e| io_error(&child, e))?;
                    self.walk(&sub, &child, out)?;
                }
                Some(ObjectType::Blob) => out.push(child),
                _ => {} // submodules are not part of the project
            }
        }
        Ok(())
    }
}

impl Source for GitTree {
    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        check_relative(path)?;
        let root = self.root()?;
        let mut current = path.trim_start_matches("./").to_string();
        for _ in 0..=MAX_LINK_HOPS {
            let entry = root
                .get_path(Path::new(&self.in_repo(&current)))
                .map_err(|_| SourceError::NotFound(path.to_string()))?;
            if entry.kind() != Some(ObjectType::Blob) {
                return Err(SourceError::NotFound(path.to_string()));
            }
            let blob = self
                .repo
                .find_blob(entry.id())
                .map_err(|e| io_error(path, e))?;
            if entry.filemode() == 0o120000 {
                // A symbolic link: follow it only while it stays in the project.
                let target = String::from_utf8_lossy(blob.content()).to_string();
                current =
                    resolve_link(&current, &target).ok_or_else(|| SourceError::OutsideRoot {
                        path: path.to_string(),
                        target: Some(target.clone()),
                    })?;
                continue;
            }
            let size = blob.size() as u64;
            if size > MAX_FILE_BYTES {
                return Err(SourceError::TooLarge {
                    path: path.to_string(),
                    size,
                    limit: MAX_FILE_BYTES,
                });
            }
            return Ok(blob.content().to_vec());
        }
        Err(SourceError::OutsideRoot {
            path: path.to_string(),
            target: Some(format!("more than {MAX_LINK_HOPS} symbolic links")),
        })
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        check_relative(dir)?;
        let root = self.root()?;
        let base = self.in_repo(dir);
        let tree = if base.is_empty() {
            root
        } else {
            match root.get_path(Path::new(&base)) {
                Ok(entry) if entry.kind() == Some(ObjectType::Tree) => self
                    .repo
                    .find_tree(entry.id())
                    .map_err(|e| io_error(dir, e))?,
                _ => return Ok(Vec::new()),
            }
        };
        let rel = dir.trim_start_matches("./").trim_end_matches('/');
        let mut out = Vec::new();
        self.walk(&tree, rel, &mut out)?;
        out.sort();
        Ok(out)
    }
}

/// The project directory relative to the repository's work tree.
fn project_prefix(repo: &Repository, project: &Path) -> Result<String, GitError> {
    let Some(workdir) = repo.workdir() else {
        return Ok(String::new()); // a bare repository: the project is its root
    };
    let workdir = workdir
        .canonicalize()
        .unwrap_or_else(|_| workdir.to_path_buf());
    let project = project
        .canonicalize()
        .unwrap_or_else(|_| project.to_path_buf());
    let relative = project.strip_prefix(&workdir).unwrap_or(Path::new(""));
    Ok(relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/"))
}

/// Resolves a link at project path `link` to `target`; `None` when it
/// leaves the project (absolute, or `..` past the root).
fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(PathBuf::from(parts.join("/")).to_string_lossy().to_string())
}

fn closest_ref(repo: &Repository, rev: &str) -> Option<String> {
    let names: Vec<String> = repo
        .references()
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|r| r.shorthand().ok().map(str::to_string))
        .collect();
    cortex_compiler::diagnostic::did_you_mean(rev, names.iter().map(String::as_str))
}

fn io_error(path: &str, e: git2::Error) -> SourceError {
    SourceError::Io {
        path: path.to_string(),
        source: std::io::Error::other(e.message().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_link;

    #[test]
    fn links_resolve_inside_the_project_only() {
        assert_eq!(
            resolve_link("agents/a.yaml", "b.yaml").as_deref(),
            Some("agents/b.yaml")
        );
        assert_eq!(
            resolve_link("agents/a.yaml", "../shared/b.yaml").as_deref(),
            Some("shared/b.yaml")
        );
        assert_eq!(resolve_link("a.yaml", "../b.yaml"), None);
        assert_eq!(resolve_link("agents/a.yaml", "/etc/passwd"), None);
    }
}
