//! A `run` task: a local command started in the project directory, with
//! the runtime's environment plus the task's (`CORTEX_TASK_INPUT`, the
//! resolved input as JSON — also on stdin —, `CORTEX_EXECUTION_ID`,
//! `CORTEX_TASK_NAME`, `CORTEX_TASK_ATTEMPT`, 1-based, and
//! `CORTEX_IDEMPOTENCY_KEY` = `<execution>/<task>/<attempt>`). Its stdout,
//! read as JSON, is the output; a non-zero exit fails the attempt with the
//! tail of stderr; past its timeout the command is killed with its whole
//! process group.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::resolve_program;

/// Bytes of stderr kept in a failure's message (its end).
const STDERR_TAIL: usize = 2048;
/// Bytes of a non-JSON stdout quoted in a failure's message (its start).
const STDOUT_HEAD: usize = 200;

/// One attempt of a `run` task.
#[derive(Clone, Debug)]
pub struct CommandTask<'a> {
    /// Program and arguments.
    pub command: &'a [String],
    /// The project directory (the working directory; relative programs
    /// are found from it).
    pub project: &'a Path,
    /// The resolved input.
    pub input: &'a Value,
    /// The execution's id.
    pub execution: &'a str,
    /// The task's name.
    pub task: &'a str,
    /// The attempt, 1-based.
    pub attempt: u32,
    /// How long the attempt may take.
    pub timeout: Duration,
}

impl CommandTask<'_> {
    /// `<execution>/<task>/<attempt>`: the same for a retry of nothing, new
    /// for every attempt, so a command can tell a repeat from a new try.
    pub fn idempotency_key(&self) -> String {
        super::runner::idempotency_key(self.execution, self.task, self.attempt)
    }
}

/// Runs one attempt; `Ok` is the output, `Err` says why the attempt failed.
pub async fn run(task: &CommandTask<'_>) -> Result<Value, String> {
    let Some(program) = task.command.first() else {
        return Err(format!("task `{}` has an empty command", task.task));
    };
    let program = resolve_program(program, task.project)?;
    let input = task.input.to_string();
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&task.command[1..])
        .current_dir(task.project)
        .env("CORTEX_TASK_INPUT", &input)
        .env("CORTEX_EXECUTION_ID", task.execution)
        .env("CORTEX_TASK_NAME", task.task)
        .env("CORTEX_TASK_ATTEMPT", task.attempt.to_string())
        .env("CORTEX_IDEMPOTENCY_KEY", task.idempotency_key())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    #[cfg(target_os = "linux")]
    crate::process::die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let group = child.id();
    // Dropped before the command ended (the driver's own timeout, a
    // cancel): the whole group goes, not only the child.
    let mut guard = GroupGuard(group);
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(format!("cannot talk to {}", program.display()));
    };
    let finished = async {
        // A command that does not read its input closes stdin early: fine.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (read_out, read_err) =
            tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        read_out.and(read_err).map_err(|e| e.to_string())?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(task.timeout, finished).await {
        Ok(done) => {
            guard.0 = None;
            done?
        }
        Err(_) => {
            guard.0 = None;
            kill_group(group);
            return Err(format!(
                "task `{}` timed out after {} ms (its command was killed)",
                task.task,
                task.timeout.as_millis()
            ));
        }
    };
    if !status.success() {
        let tail = tail(&err, STDERR_TAIL);
        return Err(format!(
            "task `{}` exited with {status}{}",
            task.task,
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ));
    }
    serde_json::from_slice(&out).map_err(|_| {
        let head = String::from_utf8_lossy(&out[..out.len().min(STDOUT_HEAD)]).into_owned();
        format!(
            "task `{}` printed no JSON on stdout (its output must be JSON): {:?}",
            task.task,
            head.trim()
        )
    })
}

/// Kills the command's process group when dropped while it may still run.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0.take());
    }
}

/// Kills the process group `pid` leads (the command and what it started).
fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// The last `limit` bytes of `bytes`, as text, trimmed.
fn tail(bytes: &[u8], limit: usize) -> String {
    let start = bytes.len().saturating_sub(limit);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task<'a>(command: &'a [String], input: &'a Value, timeout: Duration) -> CommandTask<'a> {
        CommandTask {
            command,
            project: Path::new("/tmp"),
            input,
            execution: "ticket-pipeline-7",
            task: "lookup",
            attempt: 2,
            timeout,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn the_input_comes_in_and_the_json_output_goes_out() {
        let command = sh(
            r#"read -r line; printf '{"stdin": %s, "env": %s, "key": "%s", "attempt": %s}' "$line" "$CORTEX_TASK_INPUT" "$CORTEX_IDEMPOTENCY_KEY" "$CORTEX_TASK_ATTEMPT""#,
        );
        let input = json!({"ticket": 7});
        let output = run(&task(&command, &input, Duration::from_secs(10)))
            .await
            .expect("runs");
        assert_eq!(
            output,
            json!({"stdin": {"ticket": 7}, "env": {"ticket": 7}, "key": "ticket-pipeline-7/lookup/2", "attempt": 2})
        );
    }

    #[tokio::test]
    async fn the_examples_lookup_script_answers_the_customer_as_json() {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/support-desk");
        let command = vec!["./scripts/lookup.sh".to_string()];
        let input = json!({"id": 7});
        let output = run(&CommandTask {
            project: &project,
            ..task(&command, &input, Duration::from_secs(10))
        })
        .await
        .expect("the script runs");
        assert_eq!(output["customer"]["lookedUpFor"], input);
        assert_eq!(output["customer"]["tier"], "standard");
    }

    #[tokio::test]
    async fn a_failing_command_says_its_exit_and_the_end_of_stderr() {
        let command = sh("echo starting >&2; echo 'no such customer' >&2; exit 3");
        let err = run(&task(&command, &json!(null), Duration::from_secs(10)))
            .await
            .expect_err("fails");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.ends_with("starting\nno such customer"), "{err}");
    }

    #[tokio::test]
    async fn output_that_is_not_json_fails_naming_the_task() {
        let command = sh("echo 'customer: 42'");
        let err = run(&task(&command, &json!(null), Duration::from_secs(10)))
            .await
            .expect_err("fails");
        assert!(err.contains("task `lookup` printed no JSON"), "{err}");
        assert!(err.contains("customer: 42"), "{err}");
    }

    #[tokio::test]
    async fn past_its_timeout_the_command_and_its_children_are_killed() {
        let marker = tempfile::tempdir().expect("tempdir");
        let pid_file = marker.path().join("child.pid");
        // The command starts a grandchild that would outlive a plain kill.
        let command = sh(&format!(
            "sleep 30 & echo $! > {}; wait",
            pid_file.display()
        ));
        let err = run(&task(&command, &json!(null), Duration::from_millis(300)))
            .await
            .expect_err("times out");
        assert!(err.contains("timed out after 300 ms"), "{err}");
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .expect("the grandchild started")
            .trim()
            .parse()
            .expect("a pid");
        // The kill is delivered at once; give the kernel a moment to reap.
        let mut gone = false;
        for _ in 0..250 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "the grandchild {pid} outlived the timeout");
    }
}
