//! Where `cortex serve` reads the project: a remote repository fetched with
//! git2 into a cache directory (the branch's head is what counts, so a
//! force-push is followed), or a local directory read as it is on disk.
//!
//! Remotes are paths, `file://`, `git://`, `http(s)://` and `ssh://` (or
//! `user@host:path`) URLs. Over http(s) a token from the environment
//! variable [`Source::Remote::token_env`] is sent as the password of basic
//! authentication (GitHub, GitLab and Gitea take a token so; the user is
//! the URL's, else `x-access-token`); over ssh the keys of the running
//! ssh-agent (`SSH_AUTH_SOCK`) are offered, and libgit2 checks the server's
//! key against `~/.ssh/known_hosts`. A refused credential is not
//! offered twice: the fetch fails saying so.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, build::CheckoutBuilder};

use crate::At;

/// The repository `serve` watches.
#[derive(Clone, Debug)]
pub enum Source {
    /// A repository fetched into `cache`.
    Remote {
        /// Its URL.
        url: String,
        /// The branch followed.
        branch: String,
        /// Where it is fetched and checked out.
        cache: PathBuf,
        /// The environment variable holding the token for http(s) (read at
        /// each fetch, never kept).
        token_env: String,
    },
    /// A directory read as it is on disk (for development).
    Local {
        /// The directory.
        dir: PathBuf,
    },
}

/// What the source holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The commit (a remote's branch head; a local directory's `HEAD`, if
    /// it is a git work tree).
    pub commit: Option<String>,
    /// The project directory (the checkout, or the local directory, plus
    /// `--path`).
    pub project: PathBuf,
    /// What to compile there.
    pub at: At,
}

impl Source {
    /// Fetches (a remote) and says what the project is now.
    pub fn fetch(&self, subdir: Option<&Path>) -> Result<Head, String> {
        let inside = |root: &Path| match subdir {
            Some(s) => root.join(s),
            None => root.to_path_buf(),
        };
        match self {
            Source::Remote {
                url,
                branch,
                cache,
                token_env,
            } => {
                let oid = fetch_remote(url, branch, cache, token_env).map_err(|e| {
                    format!("cannot fetch branch {branch} of {url}: {}", e.message())
                })?;
                Ok(Head {
                    commit: Some(oid.to_string()),
                    project: inside(cache),
                    at: At::Revision(oid.to_string()),
                })
            }
            Source::Local { dir } => {
                if !dir.is_dir() {
                    return Err(format!("{} is not a directory", dir.display()));
                }
                let commit = Repository::discover(dir)
                    .ok()
                    .and_then(|r| r.head().ok()?.target())
                    .map(|oid| oid.to_string());
                Ok(Head {
                    commit,
                    project: inside(dir),
                    at: At::WorkTree,
                })
            }
        }
    }

    /// The fetched `commit` checked out instead of the head (a pinned
    /// sync); refused for a local directory, and for a commit the fetch
    /// did not bring.
    pub fn pinned(&self, commit: &str, subdir: Option<&Path>) -> Result<Head, String> {
        let Source::Remote { branch, cache, .. } = self else {
            return Err("a commit can be pinned only in a fetched repository (--repo URL)".into());
        };
        let checkout = || -> Result<Oid, git2::Error> {
            let repo = Repository::open(cache)?;
            let oid = repo.revparse_single(commit)?.peel_to_commit()?.id();
            let found = repo.find_commit(oid)?;
            repo.checkout_tree(found.as_object(), Some(CheckoutBuilder::new().force()))?;
            repo.set_head_detached(oid)?;
            Ok(oid)
        };
        let oid = checkout().map_err(|e| {
            format!(
                "cannot pin {commit}: it is not in the fetched history of branch {branch} ({})",
                e.message()
            )
        })?;
        Ok(Head {
            commit: Some(oid.to_string()),
            project: match subdir {
                Some(s) => cache.join(s),
                None => cache.clone(),
            },
            at: At::Revision(oid.to_string()),
        })
    }

    /// The repository as `status` names it.
    pub fn describe(&self) -> String {
        match self {
            Source::Remote { url, .. } => url.clone(),
            Source::Local { dir } => dir.display().to_string(),
        }
    }

    /// The branch followed (none for a local directory).
    pub fn branch(&self) -> Option<&str> {
        match self {
            Source::Remote { branch, .. } => Some(branch),
            Source::Local { .. } => None,
        }
    }
}

/// The credentials a fetch offers: the token of `token_env` over http(s),
/// the ssh-agent's keys over ssh; each once.
fn credentials(token_env: &str) -> git2::RemoteCallbacks<'static> {
    let token_env = token_env.to_string();
    let mut offered = false;
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(move |url, user, allowed| {
        if offered {
            return Err(git2::Error::from_str(&format!(
                "{url} refused the credentials offered (the token in ${token_env}, or the ssh-agent's keys)"
            )));
        }
        offered = true;
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            return git2::Cred::ssh_key_from_agent(user.unwrap_or("git"));
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            let token = std::env::var(&token_env)
                .ok()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    git2::Error::from_str(&format!(
                        "{url} asks for credentials: put a token in ${token_env}"
                    ))
                })?;
            return git2::Cred::userpass_plaintext(user.unwrap_or("x-access-token"), &token);
        }
        Err(git2::Error::from_str(&format!(
            "{url} asks for credentials of a kind cortex does not send"
        )))
    });
    callbacks
}

/// Fetches `branch` of `url` into `cache` and checks its head out there
/// (forced: the cache is ours); returns the head.
fn fetch_remote(
    url: &str,
    branch: &str,
    cache: &Path,
    token_env: &str,
) -> Result<Oid, git2::Error> {
    let repo = match Repository::open(cache) {
        Ok(repo) => repo,
        Err(_) => {
            std::fs::create_dir_all(cache).map_err(|e| git2::Error::from_str(&e.to_string()))?;
            Repository::init(cache)?
        }
    };
    let tracking = format!("refs/remotes/origin/{branch}");
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(credentials(token_env));
    repo.remote_anonymous(url)?.fetch(
        &[format!("+refs/heads/{branch}:{tracking}")],
        Some(&mut options),
        None,
    )?;
    let oid = repo.refname_to_id(&tracking)?;
    let commit = repo.find_commit(oid)?;
    repo.checkout_tree(commit.as_object(), Some(CheckoutBuilder::new().force()))?;
    repo.set_head_detached(oid)?;
    Ok(oid)
}
