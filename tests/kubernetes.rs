//! `cortex plan`, `cortex apply` and `cortex unlock` as a user runs them,
//! against the in-process API server through a kubeconfig.

use cortex_testkit::git as common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use cortex_testkit::kubernetes::FakeApiServer;

use common::{Repo, code, edit, example, text};

struct Setup {
    server: FakeApiServer,
    kubeconfig: PathBuf,
    project: Repo,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let server = FakeApiServer::start().expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.write_kubeconfig(dir.path()).expect("kubeconfig");
    let project = Repo::new();
    project.copy_dir(&example("support-desk"), "");
    project.commit("support desk");
    Setup {
        server,
        kubeconfig,
        project,
        _dir: dir,
    }
}

impl Setup {
    fn cortex(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cortex"))
            .env("CORTEX_TARGET", "kubernetes")
            .args(args)
            .current_dir(self.project.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("NO_COLOR", "1")
            .env_remove("CORTEX_ENV")
            .stdin(Stdio::null())
            .output()
            .expect("run cortex")
    }
}

#[test]
fn plan_save_apply_and_plan_again() {
    let s = setup();
    let planned = s.cortex(&["plan", "-o", "plan.json", "--detailed-exitcode"]);
    let stdout = text(&planned.stdout);
    assert_eq!(code(&planned), 2, "{stdout}{}", text(&planned.stderr));
    assert!(stdout.contains("Namespace/support"), "{stdout}");
    assert!(stdout.contains("Deployment/triage"), "{stdout}");
    assert!(text(&planned.stderr).contains("cortex apply plan.json"));
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.project.path().join("plan.json")).expect("plan.json"),
    )
    .expect("json");
    assert_eq!(saved["kind"], "cortex-kubernetes-plan");
    assert_eq!(
        saved["revision"]["commit"].as_str().map(str::len),
        Some(40),
        "the commit is recorded"
    );
    assert!(saved["read"].as_object().is_some_and(|r| !r.is_empty()));

    let applied = s.cortex(&["apply", "plan.json"]);
    let stdout = text(&applied.stdout);
    assert_eq!(code(&applied), 0, "{stdout}{}", text(&applied.stderr));
    assert!(
        stdout.starts_with("Apply complete: namespace support created, "),
        "{stdout}"
    );
    assert!(
        s.server
            .object("Deployment", Some("support"), "triage")
            .is_some()
    );

    let again = s.cortex(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again.stdout));
    // The same saved plan cannot be applied twice: what it read has changed.
    let twice = s.cortex(&["apply", "plan.json"]);
    assert_eq!(code(&twice), 1);
    assert!(
        text(&twice.stderr).contains("stale plan: "),
        "{}",
        text(&twice.stderr)
    );
}

#[test]
fn apply_needs_yes_without_a_terminal() {
    let s = setup();
    let refused = s.cortex(&["apply"]);
    assert_eq!(code(&refused), 1);
    assert!(
        text(&refused.stderr).contains("pass --yes"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(
        s.server.requests().total(),
        0,
        "refused before contacting the cluster"
    );
    let applied = s.cortex(&["apply", "--yes", "--wait", "--timeout", "30s"]);
    assert_eq!(code(&applied), 0, "{}", text(&applied.stderr));
    let nothing = s.cortex(&["apply", "--yes"]);
    assert!(
        text(&nothing.stdout).contains("Nothing to apply."),
        "{}",
        text(&nothing.stdout)
    );
}

#[test]
fn a_project_that_does_not_compile_is_never_applied_or_pruned() {
    let s = setup();
    assert_eq!(code(&s.cortex(&["apply", "--yes"])), 0);
    let deployments = s.server.names("Deployment", Some("support"));
    edit(
        &s.project,
        "agents/triage.yaml",
        "extends: llm-agent",
        "extends: no-such-template",
    );
    s.server.reset_requests();
    let broken = s.cortex(&["apply", "--yes", "--prune", "--force"]);
    assert_eq!(code(&broken), 1);
    let stderr = text(&broken.stderr);
    assert!(stderr.contains("agents/triage.yaml:7:"), "{stderr}");
    assert_eq!(
        s.server.requests().total(),
        0,
        "the cluster was not even read"
    );
    assert_eq!(s.server.names("Deployment", Some("support")), deployments);
}

#[test]
fn a_conflict_names_the_manager_and_force_conflicts_takes_over() {
    let s = setup();
    assert_eq!(code(&s.cortex(&["apply", "--yes"])), 0);
    s.server.edit(
        "Deployment",
        Some("support"),
        "triage",
        "kubectl-edit",
        |d| {
            d["spec"]["template"]["spec"]["serviceAccountName"] = serde_json::json!("someone-else");
        },
    );
    let planned = s.cortex(&["plan"]);
    let stdout = text(&planned.stdout);
    assert!(stdout.contains("conflict: Deployment/triage .spec.template.spec.serviceAccountName is managed by \"kubectl-edit\""), "{stdout}");
    let refused = s.cortex(&["apply", "--yes"]);
    assert_eq!(code(&refused), 1);
    assert!(
        text(&refused.stderr).contains("--force-conflicts"),
        "{}",
        text(&refused.stderr)
    );
    let forced = s.cortex(&["apply", "--yes", "--force-conflicts"]);
    assert_eq!(code(&forced), 0, "{}", text(&forced.stderr));
    let live = s
        .server
        .object("Deployment", Some("support"), "triage")
        .expect("live");
    assert_eq!(
        live["spec"]["template"]["spec"]["serviceAccountName"],
        "triage"
    );
}

#[test]
fn unlock_breaks_a_stale_lock() {
    let s = setup();
    assert_eq!(code(&s.cortex(&["apply", "--yes"])), 0);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let cluster = s.server.connect(s._dir.path()).await.expect("connect");
        let lock = cortex_reconciler::target::kubernetes::lock::Lock::acquire(
            &cluster,
            "support",
            "support-desk",
            "alice@laptop",
            std::time::Duration::ZERO,
        )
        .await
        .expect("lock");
        std::mem::forget(lock); // the holder "crashed"
    });
    edit(
        &s.project,
        "cortex.yaml",
        "logLevel: info",
        "logLevel: debug",
    );
    let locked = s.cortex(&["apply", "--yes"]);
    assert_eq!(code(&locked), 1);
    assert!(
        text(&locked.stderr).contains("support is locked by alice@laptop"),
        "{}",
        text(&locked.stderr)
    );
    let unlocked = s.cortex(&["unlock"]);
    assert_eq!(
        text(&unlocked.stdout),
        "Broke the lock of support-desk in support (held by alice@laptop).\n"
    );
    assert_eq!(code(&s.cortex(&["apply", "--yes"])), 0);
}

#[test]
fn a_saved_plan_is_for_the_cluster_it_was_made_against() {
    let s = setup();
    assert_eq!(code(&s.cortex(&["plan", "-o", "plan.json"])), 0);
    let other = FakeApiServer::start().expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let other_config = other.write_kubeconfig(dir.path()).expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .env("CORTEX_TARGET", "kubernetes")
        .args(["apply", "plan.json", "--kubeconfig"])
        .arg(&other_config)
        .current_dir(s.project.path())
        .output()
        .expect("run");
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("this plan was made against"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(other.requests().writes(), 0);
}

#[test]
fn an_unreachable_cluster_is_named() {
    let s = setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = FakeApiServer::start().expect("start");
    let config = gone.write_kubeconfig(dir.path()).expect("kubeconfig");
    drop(gone);
    let out = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .env("CORTEX_TARGET", "kubernetes")
        .args(["plan", "--kubeconfig"])
        .arg(&config)
        .current_dir(s.project.path())
        .output()
        .expect("run");
    assert_eq!(code(&out), 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Kubernetes API server at http://127.0.0.1:"),
        "{stderr}"
    );
}

/// The apply-on-merge workflow of `examples/ci`: its plan and apply steps,
/// run by bash as GitHub would, against the in-process API server.
#[test]
fn the_example_apply_workflow_plans_and_applies() {
    let run_of = |step: &str| common::workflow_step("apply-on-merge.yml", "apply", step);
    let script = format!("{}\n{}", run_of("Plan"), run_of("Apply the saved plan"));
    let s = setup();
    // The workflow's project lives in deploy/.
    let deploy = Repo::new();
    deploy.copy_dir(&example("support-desk"), "deploy");
    deploy.commit("deploy");
    s.server.create_namespace("support-prod");
    let run = common::run_step(
        &script,
        deploy.path(),
        std::path::Path::new(env!("CARGO_BIN_EXE_cortex")),
        &[
            ("PROJECT", "deploy".as_ref()),
            ("ENVIRONMENT", "prod".as_ref()),
            ("KUBECONFIG", s.kubeconfig.as_os_str()),
        ],
    );
    assert!(
        run.status.success(),
        "{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    assert!(
        text(&run.stdout).contains("Apply complete: "),
        "{}",
        text(&run.stdout)
    );
    assert!(
        s.server
            .object("Deployment", Some("support-prod"), "triage")
            .is_some()
    );
    assert!(deploy.path().join("plan.json").is_file());
}

#[test]
fn planning_flags_are_refused_with_a_saved_plan() {
    let s = setup();
    assert_eq!(code(&s.cortex(&["plan", "-o", "plan.json"])), 0);
    let out = s.cortex(&["apply", "plan.json", "--prune"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("decided when planning"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.server.requests().writes(), 0);
}

/// A CRD and its custom resource shipped through `spec.manifests` are
/// applied in one go: the CRD first, waited on until Established.
#[test]
fn a_crd_and_its_custom_resource_ship_through_manifests() {
    let s = setup();
    s.project.write(
        "k8s/widgets.yaml",
        &common::fixture("manifests/widgets.yaml"),
    );
    s.server
        .set_crd_delay(std::time::Duration::from_millis(300));
    let applied = s.cortex(&["apply", "--yes"]);
    assert_eq!(
        code(&applied),
        0,
        "{}{}",
        text(&applied.stdout),
        text(&applied.stderr)
    );
    let widget = s
        .server
        .object("Widget", Some("support"), "blue")
        .expect("the custom resource");
    assert_eq!(widget["spec"]["size"], 3);
    let again = s.cortex(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again.stdout));
    // Dropping the manifests and pruning deletes the resource before its CRD.
    std::fs::remove_file(s.project.path().join("k8s/widgets.yaml")).expect("remove");
    let pruned = s.cortex(&["plan", "--prune", "-o", "prune.json"]);
    let stdout = text(&pruned.stdout);
    assert!(stdout.contains("- Widget/blue"), "{stdout}");
    assert!(
        stdout.contains("- CustomResourceDefinition/widgets.example.com"),
        "{stdout}"
    );
    // The saved plan holds the deletions in the order apply makes them.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.project.path().join("prune.json")).unwrap())
            .unwrap();
    let deletes: Vec<String> = saved["deletes"]
        .as_array()
        .expect("deletes")
        .iter()
        .map(|d| d.to_string())
        .collect();
    let position = |needle: &str| {
        deletes
            .iter()
            .position(|d| d.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not deleted: {deletes:?}"))
    };
    assert!(
        position("\"Widget\"") < position("\"CustomResourceDefinition\""),
        "the resource before its CRD: {deletes:?}"
    );
    let applied = s.cortex(&["apply", "prune.json"]);
    assert_eq!(code(&applied), 0, "{}", text(&applied.stderr));
    assert!(s.server.object("Widget", Some("support"), "blue").is_none());
    assert!(
        s.server
            .object("CustomResourceDefinition", None, "widgets.example.com")
            .is_none()
    );
}

/// Ctrl-C (SIGINT) in the middle of an apply: no further writes, the lock
/// released, exit 1 with how far it got.
#[test]
fn ctrl_c_stops_an_apply_and_releases_the_lock() {
    use cortex_testkit::kubernetes::{Fault, FaultKind, Method};
    let s = setup();
    s.server.inject(Fault::new(
        Method::PATCH,
        "deployments",
        FaultKind::Delay(std::time::Duration::from_secs(5)),
        8,
    ));
    let child = Command::new(env!("CARGO_BIN_EXE_cortex"))
        .env("CORTEX_TARGET", "kubernetes")
        .args(["apply", "--yes"])
        .current_dir(s.project.path())
        .env("KUBECONFIG", &s.kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the apply is writing (the signal handler is set by then).
    let started = std::time::Instant::now();
    while s.server.requests().apply == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the apply never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("interrupted after") && stderr.contains("the lock was released"),
        "{stderr}"
    );
    let lease = s
        .server
        .object("Lease", Some("support"), "cortex-lock-support-desk")
        .expect("lease");
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

#[test]
fn contexts_are_chosen_by_name_and_an_unknown_one_is_named() {
    let s = setup();
    let by_name = s.cortex(&["plan", "--context", "fake"]);
    assert_eq!(code(&by_name), 0, "{}", text(&by_name.stderr));
    let unknown = s.cortex(&["plan", "--context", "staging-eu"]);
    assert_eq!(code(&unknown), 1);
    let stderr = text(&unknown.stderr);
    assert!(
        stderr.contains("cannot load the Kubernetes configuration")
            && stderr.contains("staging-eu"),
        "{stderr}"
    );
}
