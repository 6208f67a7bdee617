//! The embedded target's apply lock: an exclusive OS file lock on
//! `<state>.lock` (released by the OS if the process dies), with the
//! holder's identity written inside so a refused apply can say who holds it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error(
        "another apply holds the lock {path} ({holder}); wait for it, or pass --lock-timeout to wait"
    )]
    Held {
        /// The lock file.
        path: String,
        /// Who (as written by the holder).
        holder: String,
    },
    /// Another `cortex up` runs on the store.
    #[error(
        "another cortex up runs on the state store {state} ({holder}); stop it first (cortex status shows it)"
    )]
    RuntimeHeld {
        /// The state store.
        state: String,
        /// Who (as written by the holder).
        holder: String,
    },
    /// The lock file could not be opened.
    #[error("cannot open the lock file {path}: {message}")]
    Io {
        /// The lock file.
        path: String,
        /// Why.
        message: String,
    },
}

/// A held lock (the apply lock, or the runtime's); released when dropped.
#[derive(Debug)]
pub struct ApplyLock {
    file: File,
    path: PathBuf,
}

/// The lock file of a state store.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The file the running runtime locks for as long as it runs.
pub fn runtime_lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".runtime.lock");
    PathBuf::from(name)
}

impl ApplyLock {
    /// Takes the apply lock of the store at `state` for `holder`, retrying
    /// for up to `wait`.
    pub fn acquire(state: &Path, holder: &str, wait: Duration) -> Result<ApplyLock, LockError> {
        let path = lock_path(state);
        Self::acquire_file(path, holder, wait, |path, holder| LockError::Held {
            path,
            holder,
        })
    }

    /// Takes the runtime lock of the store at `state` (one `cortex up` per
    /// store), without waiting.
    pub fn acquire_runtime(state: &Path, holder: &str) -> Result<ApplyLock, LockError> {
        let state_name = state.display().to_string();
        Self::acquire_file(
            runtime_lock_path(state),
            holder,
            Duration::ZERO,
            move |_, holder| LockError::RuntimeHeld {
                state: state_name,
                holder,
            },
        )
    }

    fn acquire_file(
        path: PathBuf,
        holder: &str,
        wait: Duration,
        held: impl FnOnce(String, String) -> LockError,
    ) -> Result<ApplyLock, LockError> {
        let io = |e: std::io::Error| LockError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            cortex_runtime::private_files::create_dir(dir).map_err(io)?;
        }
        let mut file = cortex_runtime::private_files::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= wait {
                        let mut holder = String::new();
                        let _ = file.rewind();
                        let _ = file.read_to_string(&mut holder);
                        return Err(held(
                            path.display().to_string(),
                            if holder.trim().is_empty() {
                                "holder unknown".into()
                            } else {
                                holder.trim().to_string()
                            },
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{holder}, pid {}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(ApplyLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApplyLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}
