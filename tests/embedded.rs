//! The embedded target as a user runs it: `cortex plan`/`apply` against the
//! local state store, `cortex up` on the example project with the example
//! agent as real processes, `cortex status`, Ctrl-C.

#[path = "../reconciler/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Repo, code, example, text};
use serde_json::{Value, json};

fn cortex(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CORTEX_ENV")
        .env_remove("CORTEX_TARGET")
        .stdin(Stdio::null())
        .output()
        .expect("run cortex")
}

fn support_desk() -> Repo {
    let repo = Repo::new();
    repo.copy_dir(&example("support-desk"), "");
    repo.commit("support desk");
    repo
}

#[test]
fn plan_save_apply_and_plan_again_against_the_state_store() {
    let repo = support_desk();
    let dir = repo.path();
    let planned = cortex(dir, &["plan", "-o", "plan.json", "--detailed-exitcode"]);
    assert_eq!(code(&planned), 2, "{}", text(&planned.stderr));
    let out = text(&planned.stdout);
    assert!(out.contains("cortex plan"), "{out}");
    assert!(out.contains("+ Agent/triage"), "{out}");
    assert!(out.contains("+ Topic/tickets.created"), "{out}");
    assert!(
        !dir.join(".cortex/state.db").exists(),
        "planning creates no store"
    );
    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.join("plan.json")).unwrap()).unwrap();
    assert_eq!(saved["kind"], json!("cortex-embedded-plan"));
    assert_eq!(saved["baseRevision"], json!(0));

    let applied = cortex(dir, &["apply", "plan.json"]);
    assert_eq!(code(&applied), 0, "{}", text(&applied.stderr));
    assert!(
        text(&applied.stdout).contains("Apply complete: revision 1"),
        "{}",
        text(&applied.stdout)
    );
    let again = cortex(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again.stdout));

    // A saved plan applied twice is stale: the store moved on.
    let twice = cortex(dir, &["apply", "plan.json"]);
    assert_eq!(code(&twice), 1);
    assert!(
        text(&twice.stderr).contains(
            "stale plan: the state store is at revision 1, the plan was made at revision 0"
        ),
        "{}",
        text(&twice.stderr)
    );

    // A change shows as an update of the runtime object, applied as revision 2.
    common::edit(&repo, "agents/triage.yaml", "replicas: 2", "replicas: 3");
    let changed = cortex(dir, &["plan"]);
    let out = text(&changed.stdout);
    assert!(out.contains("~ Agent/triage"), "{out}");
    assert!(out.contains("replicas"), "{out}");
    let refused = cortex(dir, &["apply"]);
    assert_eq!(code(&refused), 1, "no TTY and no --yes");
    assert!(
        text(&refused.stderr).contains("pass --yes"),
        "{}",
        text(&refused.stderr)
    );
    let applied = cortex(dir, &["apply", "--yes"]);
    assert_eq!(code(&applied), 0, "{}", text(&applied.stderr));
    assert!(
        text(&applied.stdout).contains("revision 2"),
        "{}",
        text(&applied.stdout)
    );
}

#[test]
fn cluster_flags_are_refused_for_the_embedded_target() {
    let repo = support_desk();
    let out = cortex(repo.path(), &["plan", "--prune"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("--prune only apply to --target kubernetes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_second_apply_is_refused_while_one_holds_the_lock() {
    let repo = support_desk();
    let dir = repo.path();
    let state = dir.join(".cortex/state.db");
    let held = cortex_reconciler::embedded::ApplyLock::acquire(
        &state,
        "ci@runner (build 7)",
        Duration::ZERO,
    )
    .expect("take the lock");
    let out = cortex(dir, &["apply", "--yes"]);
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(err.contains("another apply holds the lock"), "{err}");
    assert!(
        err.contains("ci@runner (build 7)"),
        "the holder is named: {err}"
    );
    drop(held);
    assert_eq!(code(&cortex(dir, &["apply", "--yes"])), 0);
}

/// A `cortex up` child with its stderr read line by line.
struct Up {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(dir: &Path, extra: &[&str]) -> Up {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_cortex-echo-agent"))
            .parent()
            .unwrap()
            .to_path_buf();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cortex"))
            .args(["up", "--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(dir)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin_dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("NO_COLOR", "1")
            .env_remove("CORTEX_ENV")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cortex up");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Up {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with {needle:?} within {timeout:?}; got:\n{}",
            self.seen.join("\n")
        );
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn interrupt(mut self) -> (i32, Vec<String>) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        (status.code().unwrap_or(-1), self.seen)
    }
}

fn status_json(dir: &Path) -> Value {
    let out = cortex(dir, &["status", "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn up_runs_the_example_agents_messages_flow_and_ctrl_c_stops_everything() {
    let repo = support_desk();
    let dir = repo.path();
    let mut up = Up::start(dir, &[]);
    up.wait_for("Applied revision 1", Duration::from_secs(60));
    let banner = up.wait_for(
        "cortex up: support-desk revision 1",
        Duration::from_secs(30),
    );
    assert!(banner.contains("broker http://127.0.0.1:"), "{banner}");
    up.wait_for("agents: 8/8 processes healthy", Duration::from_secs(60));

    let status = status_json(dir);
    assert_eq!(status["revision"], json!(1));
    let triage = &status["agents"]["triage"];
    assert_eq!(triage["replicas"].as_array().unwrap().len(), 2);
    assert!(
        triage["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == json!("healthy"))
    );
    assert!(
        triage["problems"][0]
            .as_str()
            .unwrap()
            .contains("API_KEY not set"),
        "a missing secret is reported, not hidden: {triage}"
    );
    let pids: Vec<u64> = status["agents"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|a| {
            a["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r["pid"].as_u64())
        })
        .collect();
    assert_eq!(pids.len(), 8);

    // A second `cortex up` on the same store is refused, naming the first.
    let second = cortex(dir, &["up", "--listen", "127.0.0.1:0"]);
    assert_eq!(code(&second), 1, "{}", text(&second.stderr));
    let said = text(&second.stderr);
    assert!(
        said.contains("another cortex up runs on the state store")
            && said.contains(&format!("pid {}", up.pid())),
        "{said}"
    );

    // A ticket goes in; the echo agents pass it along triage → writer and
    // crm-lookup → reviewer, each acking what it handled.
    let url = status["url"].as_str().unwrap().to_string();
    let token = operator_token(dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = cortex_client::Client::new(&url, "cortex", &token);
    let published = runtime
        .block_on(client.publish(
            "tickets.created",
            Some("t-1"),
            &json!({"id": "t-1", "subject": "printer on fire"}),
        ))
        .expect("publish");
    assert_eq!(published.delivered_to, ["triage"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = runtime
            .block_on(async {
                cortex_client::http_client()
                    .get(format!("{url}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await
            })
            .expect("metrics");
        if metrics.contains("cortex_messages_acked_total 4\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ticket did not make it through:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A replica killed with SIGKILL is restarted.
    let victim = pids[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    up.wait_for("signal: 9", Duration::from_secs(20));

    let (exit, lines) = up.interrupt();
    assert_eq!(exit, 0, "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("Stopped cleanly")),
        "{}",
        lines.join("\n")
    );
    std::thread::sleep(Duration::from_millis(300));
    for pid in pids {
        assert!(!pid_alive(pid), "agent process {pid} outlived cortex up");
    }
    // With the runtime gone, status reads the store.
    let offline = cortex(dir, &["status"]);
    assert_eq!(code(&offline), 0);
    assert!(
        text(&offline.stdout).contains("broker not running"),
        "{}",
        text(&offline.stdout)
    );

    // Running it again resumes the stored revision.
    let mut again = Up::start(dir, &["--no-agents"]);
    again.wait_for("No changes: resuming revision 1", Duration::from_secs(60));
    again.wait_for(
        "cortex up: support-desk revision 1",
        Duration::from_secs(30),
    );
    let (exit, _) = again.interrupt();
    assert_eq!(exit, 0);
}

fn operator_token(dir: &Path) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use cortex_reconciler::store::Store;
        let store =
            cortex_reconciler::store::SqliteStore::open(&dir.join(".cortex/state.db")).unwrap();
        store
            .meta("operator.token")
            .await
            .unwrap()
            .expect("operator token")
    })
}

#[test]
fn json_logs_carry_the_agent_and_state() {
    let repo = support_desk();
    let mut up = Up::start(repo.path(), &["--log-format", "json"]);
    let line = up.wait_for("\"state\":\"healthy\"", Duration::from_secs(60));
    let event: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(event["level"], json!("INFO"));
    assert!(event["agent"].is_string(), "{event}");
    assert!(event["replica"].is_number(), "{event}");
    let (exit, _) = up.interrupt();
    assert_eq!(exit, 0);
}
