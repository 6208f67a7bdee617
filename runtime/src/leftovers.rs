//! Agent processes a previous run left behind. Each process the runtime
//! starts is recorded in the store (`process/<agent>/<replica>`: its pid
//! and its start time, so a pid reused by an unrelated process is never
//! mistaken for it) and the record is removed when it exits. Agents die
//! with the runtime (see [`super::process`]); should one survive anyway
//! (a `kill -9` of cortex before the kernel could signal it, an agent's own
//! children in its process group), the next start stops the whole process
//! group of every recorded process still running before it starts new ones.

use std::time::Duration;

use crate::store::{Op, Store, StoreError};

/// Prefix of the store's process records.
pub const PREFIX: &str = "process/";

/// How long a leftover process group gets to stop after SIGTERM before
/// SIGKILL (the supervisor's own grace period).
pub const GRACE: Duration = super::process::GRACE;

/// The record name of a replica's process.
pub fn key(agent: &str, replica: u32) -> String {
    format!("{PREFIX}{agent}/{replica}")
}

/// The change that records a replica's process (`Some(pid)`: started) or
/// forgets it (`None`: exited, or never started).
pub fn record(agent: &str, replica: u32, pid: Option<u32>) -> Op {
    let value = pid.map(|pid| match start_time(pid) {
        Some(start) => format!("{pid} {start}"),
        None => pid.to_string(),
    });
    Op::Meta {
        key: key(agent, replica),
        value,
    }
}

/// When process `pid` started, in clock ticks since boot (the 22nd field of
/// `/proc/<pid>/stat`); `None` when it is not running — gone, or a zombie
/// waiting for its parent — or not on Linux.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // Field 3 is the state; the start time is field 22.
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the recorded process is still the one that was recorded.
fn still_running(pid: u32, recorded_start: Option<u64>) -> bool {
    match (start_time(pid), recorded_start) {
        (Some(now), Some(then)) => now == then,
        // Recorded without a start time: trust the pid only if it runs.
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Stops the process groups of the recorded processes still running and
/// forgets every record; returns what was stopped (`agent/replica (pid N)`).
pub async fn stop(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let records = store.meta_prefix(PREFIX).await?;
    let mut stopped = Vec::new();
    let mut forget = Vec::new();
    for (name, value) in records {
        let mut fields = value.split_whitespace();
        let pid = fields.next().and_then(|p| p.parse::<u32>().ok());
        let start = fields.next().and_then(|s| s.parse::<u64>().ok());
        if let Some(pid) = pid.filter(|&pid| pid > 1 && still_running(pid, start)) {
            stop_group(pid, start).await;
            stopped.push(format!(
                "{} (pid {pid})",
                name.strip_prefix(PREFIX).unwrap_or(&name)
            ));
        }
        forget.push(Op::Meta {
            key: name,
            value: None,
        });
    }
    if !forget.is_empty() {
        store.write(forget).await?;
    }
    Ok(stopped)
}

/// SIGTERM to the process group led by `pid`, SIGKILL after [`GRACE`] if
/// the leader still runs.
async fn stop_group(pid: u32, start: Option<u64>) {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process_group};
        let Some(group) = Pid::from_raw(pid as i32) else {
            return;
        };
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = tokio::time::Instant::now() + GRACE;
        while still_running(pid, start) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The group may hold the leader's children even once it is gone.
        let _ = kill_process_group(group, Signal::KILL);
    }
    #[cfg(not(unix))]
    let _ = (pid, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_of_this_process_is_read_and_stable() {
        let me = std::process::id();
        let first = start_time(me);
        if cfg!(target_os = "linux") {
            assert!(first.is_some());
            assert_eq!(first, start_time(me));
            assert!(still_running(me, first));
            assert!(
                !still_running(me, first.map(|s| s + 1)),
                "another start time is another process"
            );
        }
    }
}
