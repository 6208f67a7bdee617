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

/// Starts processes.
pub trait Launcher: Send + Sync {
    /// Starts one process.
    fn launch(&self) -> BoxFuture<'_, Result<Box<dyn Running>, String>>;
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
    fn launch(&self) -> BoxFuture<'_, Result<Box<dyn Running>, String>> {
        Box::pin(async move {
            if let Some(dir) = self.log.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| format!("{}: {e}", self.log.display()))?;
            let err = log
                .try_clone()
                .map_err(|e| format!("{}: {e}", self.log.display()))?;
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
            let child = command
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
            Ok(Box::new(LocalProcess { child }) as Box<dyn Running>)
        })
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
