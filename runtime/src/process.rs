//! Starting and stopping local agent processes: the command from the
//! agent's `local.command`, its environment, stdout and stderr appended to
//! a per-replica log file, its own process group (a Ctrl-C on cortex's
//! terminal reaches cortex, which stops the agents in order), SIGTERM then
//! SIGKILL after a grace period.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::store::BoxFuture;

/// Time an agent has to exit after SIGTERM before it is killed
/// (Kubernetes' `terminationGracePeriodSeconds` default is 30 s; local
/// agents are expected to be quicker).
pub const GRACE: Duration = Duration::from_secs(5);

/// Why a process could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchError {
    /// What went wrong.
    pub message: String,
    /// Whether starting again cannot help (the spec must change): the
    /// supervisor then reports it once instead of retrying.
    pub permanent: bool,
}

impl LaunchError {
    /// A failure that may pass (a log directory not writable yet…).
    pub fn retryable(message: impl Into<String>) -> LaunchError {
        LaunchError {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure no retry can mend.
    pub fn permanent(message: impl Into<String>) -> LaunchError {
        LaunchError {
            message: message.into(),
            permanent: true,
        }
    }
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Starts processes.
pub trait Launcher: Send + Sync {
    /// Starts one process.
    fn launch(&self) -> BoxFuture<'_, Result<Box<dyn Running>, LaunchError>>;
}

/// A started process.
pub trait Running: Send {
    /// Resolves when it exits, saying how (`exit status: 1`).
    fn wait(&mut self) -> BoxFuture<'_, String>;
    /// Stops it (SIGTERM, then SIGKILL after [`GRACE`]) and waits for it.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
    /// Its process id.
    fn pid(&self) -> Option<u32>;
}

/// Starts a local command.
#[derive(Clone, Debug)]
pub struct LocalLauncher {
    /// The program (resolved to a path).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment (added to cortex's own).
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
    /// Working directory (the project directory).
    pub cwd: PathBuf,
}

/// Finds `program`: a path as given; a bare name on `PATH`, then beside
/// the running cortex binary (where `cargo build` puts the example agent).
pub fn resolve_program(program: &str, cwd: &Path) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = cwd.join(program);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{program}: no such file (relative to {})",
                cwd.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    on_path
        .into_iter()
        .chain(beside.clone())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "{program}: not found on PATH{}",
                beside
                    .map(|b| format!(" or in {}", b.display()))
                    .unwrap_or_default()
            )
        })
}

struct LocalProcess {
    child: tokio::process::Child,
}

impl Launcher for LocalLauncher {
    fn launch(&self) -> BoxFuture<'_, Result<Box<dyn Running>, LaunchError>> {
        Box::pin(async move {
            let io = |path: &Path, e: std::io::Error| {
                LaunchError::retryable(format!("{}: {e}", path.display()))
            };
            if let Some(dir) = self.log.parent() {
                crate::private_files::create_dir(dir).map_err(|e| io(dir, e))?;
            }
            let log = crate::private_files::options()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| io(&self.log, e))?;
            crate::private_files::restrict(&self.log);
            let err = log.try_clone().map_err(|e| io(&self.log, e))?;
            let mut command = tokio::process::Command::new(&self.program);
            command
                .args(&self.args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&self.cwd)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(err))
                .kill_on_drop(true);
            #[cfg(unix)]
            command.process_group(0);
            #[cfg(target_os = "linux")]
            die_with_parent(&mut command);
            let child = command.spawn().map_err(|e| {
                let message = format!("cannot start {}: {e}", self.program.display());
                // A NUL in an argument or the environment: the same every time.
                if e.kind() == std::io::ErrorKind::InvalidInput {
                    LaunchError::permanent(message)
                } else {
                    LaunchError::retryable(message)
                }
            })?;
            Ok(Box::new(LocalProcess { child }) as Box<dyn Running>)
        })
    }
}

/// Has the kernel kill the child (SIGKILL) when the thread that started it
/// dies: a `kill -9` of cortex then takes its agents with it instead of
/// leaving them running, reparented to init. The supervisors spawn from
/// the runtime's worker threads, which live as long as the runtime.
///
/// One of cortex's two `unsafe` blocks (the other calls mimalloc's
/// collect, in `src/main.rs`): the death signal can only be set in the
/// child, between `fork` and `exec`, which std offers only through
/// `pre_exec`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut tokio::process::Command) {
    use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
    let parent = getpid();
    // SAFETY: the closure runs in the forked child before `exec`. It makes
    // two system calls (prctl, getppid) and allocates nothing: an error
    // from rustix becomes an io::Error from its raw OS error number.
    unsafe {
        command.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died before the signal was set.
            if getppid() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
}

impl Running for LocalProcess {
    fn wait(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match self.child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("lost track of the process: {e}"),
            }
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            #[cfg(unix)]
            if let Some(pid) = self
                .child
                .id()
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                if tokio::time::timeout(GRACE, self.child.wait()).await.is_ok() {
                    return;
                }
            }
            let _ = self.child.kill().await;
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
