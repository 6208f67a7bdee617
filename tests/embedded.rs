//! The embedded target as a user runs it: `cortex plan`/`apply` against the
//! local state store, `cortex up` on the example project with the example
//! agent as real processes, `cortex status`, Ctrl-C.

use cortex_testkit::git as common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Repo, code, example, text};
use cortex_testkit::serve::ServeApi;
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
    assert!(
        text(&applied.stdout).contains("Run it with: cortex up"),
        "no runtime runs on this store: {}",
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
    let held = cortex_reconciler::target::embedded::ApplyLock::acquire(
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

    // A ticket goes in with `cortex publish`: triage gets it, and the
    // ticket pipeline runs (classify → triage, lookup → scripts/lookup.sh,
    // draft → writer, review → reviewer); `cortex execution` shows it.
    let published = cortex(
        dir,
        &[
            "publish",
            "tickets.created",
            "--key",
            "t-1",
            "--payload",
            r#"{"id": "t-1", "subject": "printer on fire"}"#,
            "--format",
            "json",
        ],
    );
    assert_eq!(code(&published), 0, "{}", text(&published.stderr));
    let published: Value = serde_json::from_slice(&published.stdout).unwrap();
    assert_eq!(
        published["deliveredTo"],
        json!(["triage", "workflow/ticket-pipeline"])
    );
    let execution = format!("ticket-pipeline-m{}", published["ids"][1]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let out = cortex(dir, &["execution", &execution, "--format", "json"]);
        if code(&out) == 0 {
            let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
            if ["succeeded", "failed", "cancelled"].contains(&shown["state"].as_str().unwrap()) {
                break shown;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline did not end: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(shown["state"], json!("succeeded"), "{shown:#}");
    let output = |task: &str| {
        shown["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == json!(task))
            .unwrap()["output"]
            .clone()
    };
    assert_eq!(output("classify")["category"], json!("other"));
    assert_eq!(output("lookup")["customer"]["name"], json!("Ada Example"));
    assert_eq!(
        output("draft")["category"],
        json!("other"),
        "outputs flow on"
    );
    assert_eq!(output("review")["handledBy"], json!(["reviewer"]));
    let table = cortex(dir, &["execution", &execution]);
    let table = text(&table.stdout);
    assert!(
        table.contains(&format!(
            "{execution}  ticket-pipeline  revision 1  succeeded"
        )),
        "{table}"
    );
    // The DAG with each task's state in that execution.
    let graph = cortex(
        dir,
        &[
            "graph",
            "workflow/ticket-pipeline",
            "--execution",
            &execution,
        ],
    );
    assert_eq!(code(&graph), 0, "{}", text(&graph.stderr));
    assert!(
        text(&graph.stdout).contains("class t_review succeeded"),
        "{}",
        text(&graph.stdout)
    );
    // A payload the topic's schema refuses: exit 1, the field named.
    let refused = cortex(
        dir,
        &[
            "publish",
            "tickets.created",
            "--payload",
            r#"{"id": "t-2"}"#,
        ],
    );
    assert_eq!(code(&refused), 1);
    assert!(
        text(&refused.stderr).contains("\"subject\" is a required property"),
        "{}",
        text(&refused.stderr)
    );
    // Everything the ticket set off is handled: no queue holds a message.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status_json(dir);
        let held: u64 = status["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["depth"].as_u64().unwrap() + q["inFlight"].as_u64().unwrap())
            .sum();
        if held == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "messages left: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The example agents count what they handled in their own state scope
    // (`cortex state`), and `cortex status` lists the scopes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let counted = loop {
        let out = cortex(
            dir,
            &["state", "agents/triage", "handled", "--format", "json"],
        );
        if code(&out) == 0 {
            break serde_json::from_slice::<Value>(&out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "triage counted nothing: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(counted["value"].as_u64().unwrap() >= 1, "{counted}");
    assert_eq!(counted["updatedBy"], json!("triage"));
    // The classification was counted in the shared scope (State desk-stats).
    let category = cortex(
        dir,
        &["state", "desk-stats", "category/other", "--format", "json"],
    );
    assert_eq!(code(&category), 0, "{}", text(&category.stderr));
    let category: Value = serde_json::from_slice(&category.stdout).unwrap();
    // (classified by the ticket pipeline, and by the escalation workflow
    // the triaged ticket starts)
    assert!(category["value"].as_u64().unwrap() >= 1, "{category}");
    assert_eq!(category["updatedBy"], json!("triage"));
    // An operator's hand on state, with compare-and-swap.
    let set = |extra: &[&str]| {
        let mut args = vec!["state", "desk-stats", "category/manual"];
        args.extend_from_slice(extra);
        cortex(dir, &args)
    };
    let created = set(&["--set", "5", "--if-version", "0"]);
    assert_eq!(code(&created), 0, "{}", text(&created.stderr));
    assert!(text(&created.stdout).contains("desk-stats/category/manual: written at version"));
    let again = set(&["--set", "6", "--if-version", "0"]);
    assert_eq!(code(&again), 1);
    assert!(
        text(&again.stderr).contains("it is at version"),
        "{}",
        text(&again.stderr)
    );
    let refused = set(&["--set=-1"]);
    assert_eq!(
        code(&refused),
        1,
        "the scope's schema holds for the operator too"
    );
    let deleted = set(&["--delete"]);
    assert_eq!(code(&deleted), 0, "{}", text(&deleted.stderr));
    // `--watch` prints every change after a version, one JSON line each:
    // here the whole history of desk-stats, ending with the delete above.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args([
            "state",
            "desk-stats",
            "--watch",
            "--from-version",
            "0",
            "--format",
            "json",
        ])
        .current_dir(dir)
        .env_remove("CORTEX_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cortex state --watch");
    // Never a hang: the watch is stopped after 30 s whatever it printed.
    let pid = rustix::process::Pid::from_raw(watch.id() as i32).unwrap();
    let reaped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reaped_then = reaped.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        if !reaped_then.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    });
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut changes = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        let change: Value = serde_json::from_str(&line).unwrap();
        let done = change["key"] == json!("category/manual") && change["deleted"] == json!(true);
        changes.push(change);
        if done {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    reaped.store(true, std::sync::atomic::Ordering::SeqCst);
    let versions: Vec<u64> = changes
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "{changes:?}"
    );
    let listed = cortex(dir, &["state", "agents/triage"]);
    assert!(
        text(&listed.stdout).contains("handled"),
        "{}",
        text(&listed.stdout)
    );
    let scopes = status_json(dir)["states"].clone();
    assert!(
        scopes
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["scope"] == json!("agents/triage") && s["keys"] == json!(1)),
        "{scopes}"
    );

    // A replica killed with SIGKILL is restarted, and healthy again.
    let victim = pids[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    up.wait_for("signal: 9", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(60);
    let replaced = loop {
        let status = status_json(dir);
        let replicas: Vec<&Value> = status["agents"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|a| a["replicas"].as_array().unwrap())
            .collect();
        let restarted = replicas
            .iter()
            .find(|r| r["restarts"].as_u64() >= Some(1))
            .and_then(|r| r["pid"].as_u64());
        let all_healthy =
            replicas.len() == 8 && replicas.iter().all(|r| r["state"] == json!("healthy"));
        if let (Some(pid), true) = (restarted, all_healthy) {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the killed replica never came back healthy: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(replaced, victim, "a new process");
    assert!(pid_alive(replaced));
    let pids: Vec<u64> = pids
        .into_iter()
        .filter(|p| *p != victim)
        .chain([replaced])
        .collect();

    let (exit, lines) = up.interrupt();
    assert_eq!(exit, 0, "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("Stopped cleanly")),
        "{}",
        lines.join("\n")
    );
    // The first screen says each problem once (the banner), not also as a
    // log line.
    let said = lines
        .iter()
        .filter(|l| l.contains("triage") && l.contains("API_KEY not set"))
        .count();
    assert_eq!(said, 1, "{}", lines.join("\n"));
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
    // The state scopes too, with what the agents counted.
    let offline_json = status_json(dir);
    let scopes = offline_json["states"].as_array().unwrap();
    assert!(
        scopes
            .iter()
            .any(|s| s["scope"] == json!("desk-stats") && s["keys"].as_u64().unwrap() >= 1),
        "{offline_json}"
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

/// The operator token `cortex up` keeps beside its store.
fn operator_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".cortex/operator.token")).expect("operator token")
}

/// The pids of every agent replica `cortex status` lists.
fn agent_pids(status: &Value) -> Vec<u64> {
    status["agents"]
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
        .collect()
}

/// Waits until none of `pids` runs; the ones still running after `limit`.
fn outliving(pids: &[u64], limit: Duration) -> Vec<u64> {
    let deadline = Instant::now() + limit;
    loop {
        let alive: Vec<u64> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Regressions: `kill -9` of `cortex up` left its agents running
/// (reparented to init, still consuming, unseen by status and by the next
/// run); and the first `cortex up` made the store's WAL and shared-memory
/// files, which hold tokens, readable by every user.
#[test]
fn kill_9_of_cortex_up_takes_its_agents_with_it_and_its_files_are_owner_only() {
    let repo = support_desk();
    let dir = repo.path();
    let mut up = Up::start(dir, &[]);
    up.wait_for("agents: 8/8 processes healthy", Duration::from_secs(90));
    let status = status_json(dir);
    let pids = agent_pids(&status);
    assert_eq!(pids.len(), 8, "{status}");

    #[cfg(unix)]
    {
        let state = dir.join(".cortex");
        assert_eq!(mode(&state), 0o700, "the state directory");
        let mut files = vec![
            state.join("state.db"),
            state.join("state.db-wal"),
            state.join("state.db-shm"),
            state.join("operator.token"),
            state.join("state.db.runtime.lock"),
            state.join("state.db.lock"),
            state.join("agents/triage/config.json"),
        ];
        for log in std::fs::read_dir(state.join("logs")).expect("logs") {
            files.push(log.unwrap().path());
        }
        for file in &files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
    }

    let mut child = up.child;
    child.kill().expect("kill -9 cortex up");
    child.wait().expect("reaped");
    let alive = outliving(&pids, Duration::from_secs(10));
    assert!(
        alive.is_empty(),
        "agents outlived a kill -9 of cortex up: {alive:?}"
    );

    // The next run starts one set of agents, and stops cleanly.
    let mut again = Up::start(dir, &[]);
    again.wait_for("agents: 8/8 processes healthy", Duration::from_secs(90));
    let new_pids = agent_pids(&status_json(dir));
    assert_eq!(new_pids.len(), 8);
    let (exit, lines) = again.interrupt();
    assert_eq!(exit, 0, "{}", lines.join("\n"));
    assert!(outliving(&new_pids, Duration::from_secs(10)).is_empty());
}

/// Regression: `cortex up` on a busy port refused only after it had
/// applied a new revision to the store. It binds first.
#[test]
fn up_on_a_busy_port_applies_nothing() {
    let repo = support_desk();
    let dir = repo.path();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().unwrap().to_string();
    let out = cortex(dir, &["up", "--listen", &addr]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on {addr}")),
        "{}",
        text(&out.stderr)
    );
    let plan = cortex(dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        code(&plan),
        2,
        "nothing was applied: {}",
        text(&plan.stdout)
    );
    assert!(
        text(&plan.stdout).contains("+ Agent/triage"),
        "{}",
        text(&plan.stdout)
    );
}

/// Regression: a 0-byte `state.db` silently became a new store. It is
/// refused, named, and left as it was.
#[test]
fn a_state_file_that_is_not_a_store_is_refused_and_kept() {
    let repo = support_desk();
    let dir = repo.path();
    std::fs::create_dir_all(dir.join(".cortex")).unwrap();
    let state = dir.join(".cortex/state.db");
    std::fs::write(&state, b"").unwrap();
    let out = cortex(dir, &["up", "--listen", "127.0.0.1:0"]);
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(
        err.contains(&state.display().to_string()) && err.contains("not a cortex state store"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&state).unwrap().len(),
        0,
        "left as it was"
    );
}

/// Regression: after a crash, `cortex status` sent the operator token to
/// whatever listened on the recorded address. It asks for proof first and
/// sends nothing to a process that cannot give it.
#[test]
fn status_never_sends_the_operator_token_to_an_impostor() {
    use std::io::{Read, Write};
    let repo = support_desk();
    let dir = repo.path();
    let mut up = Up::start(dir, &["--no-agents"]);
    up.wait_for(
        "cortex up: support-desk revision 1",
        Duration::from_secs(60),
    );
    let (exit, _) = up.interrupt();
    assert_eq!(exit, 0);

    // An impostor on another port answers everything, and records it.
    let impostor = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", impostor.local_addr().unwrap());
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = heard.clone();
    std::thread::spawn(move || {
        for stream in impostor.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body =
                r#"{"proof":"00","project":"x","revision":9,"url":"x","agents":{},"queues":[]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use cortex_runtime::store::{Op, Store};
        let store =
            cortex_runtime::store::SqliteStore::open(&dir.join(".cortex/state.db")).unwrap();
        store
            .write(vec![Op::Meta {
                key: "runtime.url".into(),
                value: Some(url.clone()),
            }])
            .await
            .unwrap();
        store.close();
    });
    let out = cortex(dir, &["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not the runtime that wrote this state store"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("broker not running"),
        "{}",
        text(&out.stdout)
    );
    let heard = heard.lock().unwrap();
    assert!(
        !heard.is_empty(),
        "status asked the impostor to prove itself"
    );
    let token = operator_token(dir);
    for request in heard.iter() {
        assert!(
            !request.to_ascii_lowercase().contains("authorization"),
            "{request}"
        );
        assert!(!request.contains(&token), "{request}");
    }
    drop(heard);
    // Without the token file, status says why it cannot ask the runtime.
    std::fs::remove_file(dir.join(".cortex/operator.token")).unwrap();
    let out = cortex(dir, &["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("cannot be asked") && said.contains("operator.token"),
        "{said}"
    );
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

/// A bare "remote" holding the example project, and its head commit.
fn support_desk_remote() -> (tempfile::TempDir, String) {
    let remote = tempfile::tempdir().unwrap();
    git2::Repository::init_bare(remote.path()).unwrap();
    let work = support_desk();
    let repo = git2::Repository::open(work.path()).unwrap();
    repo.remote_anonymous(remote.path().to_str().unwrap())
        .unwrap()
        .push(&["+refs/heads/main:refs/heads/main"], None)
        .unwrap();
    let head = repo.head().unwrap().target().unwrap().to_string();
    (remote, head)
}

/// `cortex serve` of `remote` on `state` (a 1 s interval, no agents), and
/// its API with the operator token.
fn serve(remote: &Path, state: &Path, more: &[&str]) -> (Child, ServeApi) {
    serve_with(remote.to_str().unwrap(), state, more, &[])
}

/// `cortex serve` of the repository `repo` on `state`, with `more`
/// arguments and `env`ironment; its API with the operator token.
fn serve_with(repo: &str, state: &Path, more: &[&str], env: &[(&str, &str)]) -> (Child, ServeApi) {
    let args: Vec<&str> = ["--interval", "1s", "--no-agents"]
        .into_iter()
        .chain(more.iter().copied())
        .collect();
    let env: Vec<(&str, &str)> = [("CORTEX_LOG", "warn")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let cortex = Path::new(env!("CARGO_BIN_EXE_cortex"));
    let (child, url) =
        cortex_testkit::serve::spawn(cortex, repo, state, &args, &env).expect("start cortex serve");
    (child, ServeApi::operator(&url, state))
}

#[test]
fn serve_runs_the_head_of_a_repository_and_stops_on_ctrl_c() {
    let (remote, head) = support_desk_remote();
    let state = tempfile::tempdir().unwrap();
    let (mut child, api) = serve(remote.path(), state.path(), &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status =
        runtime.block_on(api.until("the status awaited", |s| s["syncState"] == json!("synced")));
    assert_eq!(status["syncedCommit"], json!(head));
    assert_eq!(status["syncedRevision"], json!(1));
    assert_eq!(status["leader"], json!(true));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn two_serve_replicas_elect_one_leader_and_the_standby_takes_over_a_killed_one() {
    let (remote, head) = support_desk_remote();
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let lease = ["--lease", "2s"];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut first, first_api) = serve(remote.path(), state, &lease);
    runtime.block_on(first_api.until("the status awaited", |s| {
        s["syncState"] == json!("synced") && s["leader"] == json!(true)
    }));
    let (mut second, second_api) = serve(remote.path(), state, &lease);
    // The second stands by, showing what the leader published.
    let standby = runtime.block_on(second_api.until("the status awaited", |s| {
        s["leader"] == json!(false) && s["syncedCommit"] == json!(head) && s["leaderId"].is_string()
    }));
    assert!(
        standby["leaderId"]
            .as_str()
            .is_some_and(|l| l.contains(&first_api.url)),
        "{standby}"
    );
    assert_eq!(standby["syncState"], json!("synced"), "{standby}");
    // A standby refuses to sync, naming the leader.
    let refused = runtime.block_on(async {
        cortex_client::http_client()
            .post(format!("{}/api/v1/sync", second_api.url))
            .bearer_auth(&second_api.token)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(refused.status().as_u16(), 503);
    // Messages the leader acknowledged...
    let client = cortex_client::Client::new(&first_api.url, "operator", &first_api.token);
    const SENT: usize = 20;
    runtime.block_on(async {
        for n in 0..SENT {
            client
                .publish("tickets.triaged", None, &json!({ "n": n }))
                .await
                .expect("the leader acknowledges the publish");
        }
    });
    // ...survive the leader's kill -9: the standby takes over and holds
    // every one for each agent subscribed (no agent runs to take them).
    first.kill().unwrap();
    first.wait().unwrap();
    let leading = runtime.block_on(second_api.until("the status awaited", |s| {
        s["leader"] == json!(true) && s["runtime"].is_string()
    }));
    assert_eq!(leading["syncState"], json!("synced"), "{leading}");
    assert_eq!(leading["syncedCommit"], json!(head));
    let topics = runtime.block_on(second_api.get("/api/v1/topics"));
    let queues = topics["queues"]
        .as_array()
        .unwrap_or_else(|| panic!("{topics}"));
    for subscriber in ["crm-lookup", "writer"] {
        let queue = queues
            .iter()
            .find(|q| q["inbox"] == json!(subscriber))
            .unwrap_or_else(|| panic!("no inbox {subscriber}: {topics}"));
        assert_eq!(queue["depth"], json!(SENT), "{topics}");
    }
    let pid = rustix::process::Pid::from_raw(second.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert_eq!(second.wait().unwrap().code(), Some(0));
}

#[test]
fn serve_fetches_over_http_with_a_token_from_the_environment() {
    let (remote, head) = support_desk_remote();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let root = remote.path().parent().unwrap();
    let name = remote.path().file_name().unwrap().to_str().unwrap();
    let server = runtime
        .block_on(cortex_testkit::git_http::GitHttpServer::start(
            root, "s3cret",
        ))
        .expect("git http-backend served");
    let url = server.url(name);
    let start = |token: &str, state: &Path| {
        serve_with(
            &url,
            state,
            &["--git-token-env", "FORGE_TOKEN"],
            &[("FORGE_TOKEN", token)],
        )
    };
    // The right token: fetched over HTTP and synced.
    let state = tempfile::tempdir().unwrap();
    let (mut child, api) = start("s3cret", state.path());
    let synced =
        runtime.block_on(api.until("the status awaited", |s| s["syncState"] == json!("synced")));
    assert_eq!(synced["syncedCommit"], json!(head));
    child.kill().unwrap();
    child.wait().unwrap();
    // A wrong one: refused, and said so.
    let state = tempfile::tempdir().unwrap();
    let (mut child, api) = start("wrong", state.path());
    let refused =
        runtime.block_on(api.until("the status awaited", |s| s["syncState"] == json!("error")));
    let message = refused["lastError"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused the credentials") && message.contains("FORGE_TOKEN"),
        "{refused}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `program` with `args`, which must succeed.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        text(&out.stderr)
    );
}

#[test]
fn serve_fetches_over_ssh_with_the_agents_key() {
    let (remote, head) = support_desk_remote();
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    for key in ["host_key", "user_key"] {
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", &at(key)],
            &[],
        );
    }
    std::fs::copy(at("user_key.pub"), at("authorized_keys")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        at("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n",
            at("host_key"),
            at("authorized_keys"),
            at("sshd.pid")
        ),
    )
    .unwrap();
    // sshd wants its privilege-separation directory and an absolute path.
    let _ = std::fs::create_dir_all("/run/sshd");
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sshd (package openssh-server; scripts/test installs it)");
    let daemon = Killed(
        Command::new(sshd)
            .args(["-D", "-e", "-f", &at("sshd_config")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd"),
    );
    let agent = Killed(
        Command::new("ssh-agent")
            .args(["-D", "-a", &at("agent.sock")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(dir.path().join("agent.sock").exists()
        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
    {
        assert!(Instant::now() < deadline, "sshd or ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    run(
        "ssh-add",
        &["-q", &at("user_key")],
        &[("SSH_AUTH_SOCK", &at("agent.sock"))],
    );
    // The server's key is known (libgit2 checks ~/.ssh/known_hosts).
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let host_key = std::fs::read_to_string(at("host_key.pub")).unwrap();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    std::fs::write(
        home.join(".ssh/known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
    )
    .unwrap();
    let user = Command::new("id").arg("-un").output().expect("id -un");
    let user = text(&user.stdout).trim().to_string();
    let url = format!("ssh://{user}@127.0.0.1:{port}{}", remote.path().display());
    // `cortex serve` fetching with the agent's key, `home` holding (or not)
    // the server's key among its known hosts.
    let serve_from = |home: &Path| {
        let state = tempfile::tempdir().unwrap();
        let (child, api) = serve_with(
            &url,
            state.path(),
            &[],
            &[
                ("SSH_AUTH_SOCK", &at("agent.sock")),
                ("HOME", home.to_str().unwrap()),
            ],
        );
        (Killed(child), api, state)
    };
    let (child, api, _state) = serve_from(&home);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let synced = runtime.block_on(api.until("the status awaited", |s| {
        s["syncState"] == json!("synced") || s["syncState"] == json!("error")
    }));
    assert_eq!(synced["syncState"], json!("synced"), "{synced}");
    assert_eq!(synced["syncedCommit"], json!(head));
    drop(child);
    // A server whose key is not known is refused, and said so.
    let stranger = dir.path().join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    let (child, api, _state) = serve_from(&stranger);
    let refused =
        runtime.block_on(api.until("the status awaited", |s| s["syncState"] == json!("error")));
    let message = refused["lastError"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("hostkey"), "{refused}");
    drop((child, agent, daemon));
}
