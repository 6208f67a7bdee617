//! The Kubernetes target against the in-process API server: plans, applies,
//! prunes, conflicts, ordering, stale plans, the lock and faults.

use cortex_testkit::git as common;

use std::time::Duration;

use cortex_compiler::Options;
use cortex_reconciler::target::kubernetes::lock::{self, Lock};
use cortex_reconciler::target::kubernetes::{
    ApplySettings, Cluster, KubeError, PlanSettings, RetryPolicy, apply, plan,
};
use cortex_reconciler::{Action, At, Desired, desired_at};
use cortex_testkit::kubernetes::Method;
use cortex_testkit::kubernetes::{FakeApiServer, Fault, FaultKind, Rollout};
use serde_json::{Value, json};

use common::{Repo, edit, example};

/// A fake cluster, a kubeconfig for it, and a copy of support-desk.
struct Env {
    server: FakeApiServer,
    cluster: Cluster,
    project: Repo,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let server = FakeApiServer::start().expect("start the fake API server");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = server.connect(dir.path()).await.expect("connect");
        cluster.retry = RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(40),
        };
        let project = Repo::new();
        project.copy_dir(&example("support-desk"), "");
        Env {
            server,
            cluster,
            project,
            _dir: dir,
        }
    }

    fn desired(&self) -> Desired {
        desired_at(self.project.path(), &At::WorkTree, &Options::default()).expect("compiles")
    }

    async fn plan(
        &self,
        settings: &PlanSettings,
    ) -> Result<cortex_reconciler::target::kubernetes::ClusterPlan, KubeError> {
        plan(&self.cluster, &self.desired(), settings).await
    }

    /// Plans and applies; returns the plan's counts.
    async fn converge(&self, settings: &PlanSettings) -> cortex_reconciler::plan::Summary {
        let planned = self.plan(settings).await.expect("plan");
        apply(&self.cluster, &planned.saved, &quick())
            .await
            .expect("apply");
        planned.saved.summary
    }
}

fn quick() -> ApplySettings {
    ApplySettings {
        poll: Duration::from_millis(20),
        holder: "tests@ci".into(),
        ..ApplySettings::default()
    }
}

fn changed(plan: &cortex_reconciler::target::kubernetes::ClusterPlan) -> Vec<String> {
    plan.display
        .changed()
        .map(|c| format!("{} {}", c.action.as_str(), c.id))
        .collect()
}

#[tokio::test]
async fn create_from_empty_then_no_op() {
    let env = Env::new().await;
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    let desired = env.desired();
    let kube_objects = desired
        .objects
        .iter()
        .filter(|o| o.api_version.is_some())
        .count();
    // The namespace is created first, and every object.
    assert_eq!(planned.saved.summary.create, kube_objects + 1);
    assert!(planned.saved.create_namespace);
    assert_eq!(changed(&planned)[0], "create Namespace/support");
    let requests = env.server.requests();
    assert_eq!(
        requests.writes(),
        0,
        "planning writes nothing: {requests:?}"
    );
    assert_eq!(requests.dry_run, 0);

    let report = apply(&env.cluster, &planned.saved, &quick())
        .await
        .expect("apply");
    assert!(report.namespace_created);
    assert_eq!(report.created, kube_objects);
    let triage = env
        .server
        .object("Deployment", Some("support"), "triage")
        .expect("applied");
    assert_eq!(triage["metadata"]["managedFields"][0]["manager"], "cortex");
    assert!(triage["metadata"]["annotations"]["cortex.codevald.io/applied-hash"].is_string());

    // Planning again: nothing changes, and only reads are made — one LIST
    // per kind, no dry-run.
    env.server.reset_requests();
    let again = env.plan(&PlanSettings::default()).await.expect("plan");
    assert_eq!(changed(&again), Vec::<String>::new());
    assert_eq!(again.saved.summary.unchanged, kube_objects);
    let requests = env.server.requests();
    assert_eq!(
        (requests.writes(), requests.dry_run),
        (0, 0),
        "{requests:?}"
    );
    assert_eq!(requests.list, again.saved.kinds.len());
    // Applying it writes nothing either (not even the lock).
    env.server.reset_requests();
    let report = apply(&env.cluster, &again.saved, &quick())
        .await
        .expect("apply");
    assert_eq!((report.created, report.updated, report.deleted), (0, 0, 0));
    assert_eq!(env.server.requests().writes(), 0);
}

#[tokio::test]
async fn an_update_shows_what_changed_and_not_what_the_server_defaulted() {
    let env = Env::new().await;
    env.converge(&PlanSettings::default()).await;
    // The server defaulted fields cortex never set…
    let live = env
        .server
        .object("Deployment", Some("support"), "triage")
        .expect("live");
    assert_eq!(live["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(
        live["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    assert_eq!(
        live["spec"]["template"]["spec"]["schedulerName"],
        "default-scheduler"
    );

    // Change every agent's log level through the project value.
    edit(
        &env.project,
        "cortex.yaml",
        "logLevel: info",
        "logLevel: debug",
    );
    env.server.reset_requests();
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    let updates: Vec<&cortex_reconciler::plan::Change> = planned.display.changed().collect();
    assert!(!updates.is_empty());
    assert!(
        updates.iter().all(|c| c.action == Action::Update),
        "{:?}",
        changed(&planned)
    );
    for change in &updates {
        for field in &change.fields {
            for noise in [
                "progressDeadlineSeconds",
                "schedulerName",
                "terminationGracePeriodSeconds",
                "strategy",
                "dnsPolicy",
                "clusterIP",
                "managedFields",
                "resourceVersion",
            ] {
                assert!(
                    !field.path.contains(noise),
                    "{} shows defaulted {}",
                    change.id,
                    field.path
                );
            }
        }
    }
    let env_change = updates
        .iter()
        .find(|c| c.id.kind == "Deployment" && c.id.name == "triage")
        .expect("triage's Deployment changes");
    assert!(
        env_change
            .fields
            .iter()
            .any(|f| f.path.contains("env[LOG_LEVEL]") && f.new.as_ref() == Some(&json!("debug"))),
        "{:#?}",
        env_change.fields
    );
    // One dry-run per changed object, no writes.
    let requests = env.server.requests();
    assert_eq!(
        requests.dry_run, planned.saved.summary.update,
        "{requests:?}"
    );
    assert_eq!(requests.writes(), 0);

    let report = apply(&env.cluster, &planned.saved, &quick())
        .await
        .expect("apply");
    assert_eq!(report.updated, planned.saved.summary.update);
    let live = env
        .server
        .object("Deployment", Some("support"), "triage")
        .expect("live");
    assert_eq!(
        live["spec"]["progressDeadlineSeconds"], 600,
        "defaults survive the update"
    );
    assert_eq!(
        env.plan(&PlanSettings::default())
            .await
            .expect("plan")
            .saved
            .summary
            .update,
        0
    );
}

fn container_env<'v>(deployment: &'v mut Value, name: &str) -> &'v mut Value {
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("env");
    env.iter_mut().find(|e| e["name"] == name).expect("env var")
}

#[tokio::test]
async fn drift_by_another_manager_is_an_update_and_a_conflict() {
    let env = Env::new().await;
    env.converge(&PlanSettings::default()).await;
    // Someone edits a field cortex manages…
    assert!(env.server.edit(
        "Deployment",
        Some("support"),
        "triage",
        "kubectl-edit",
        |d| {
            container_env(d, "LOG_LEVEL")["value"] = json!("trace");
        }
    ));
    // …and a field it does not: not shown.
    assert!(env.server.edit(
        "Deployment",
        Some("support"),
        "triage",
        "kubectl-edit",
        |d| {
            d["metadata"]["labels"]["team"] = json!("support");
        }
    ));
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    assert_eq!(changed(&planned), ["update Deployment/triage"]);
    let change = planned.display.changed().next().expect("one change");
    assert_eq!(change.fields.len(), 1, "{:#?}", change.fields);
    assert!(change.fields[0].path.contains("env[LOG_LEVEL]"));
    assert_eq!(change.fields[0].old, Some(json!("trace")));
    assert_eq!(planned.saved.conflicts.len(), 1);
    assert_eq!(planned.saved.conflicts[0].fields[0].manager, "kubectl-edit");

    // Applying without --force-conflicts fails, naming the manager and field.
    let err = apply(&env.cluster, &planned.saved, &quick())
        .await
        .expect_err("conflict");
    let text = err.to_string();
    assert!(
        text.contains("kubectl-edit")
            && text.contains("LOG_LEVEL")
            && text.contains("--force-conflicts"),
        "{text}"
    );
    let live = env
        .server
        .object("Deployment", Some("support"), "triage")
        .expect("live");
    assert_eq!(
        container_env(&mut live.clone(), "LOG_LEVEL")["value"],
        "trace",
        "nothing was written"
    );

    // --force-conflicts takes the field back; the other edit stays.
    let forced = ApplySettings {
        force_conflicts: true,
        ..quick()
    };
    apply(&env.cluster, &planned.saved, &forced)
        .await
        .expect("forced apply");
    let mut live = env
        .server
        .object("Deployment", Some("support"), "triage")
        .expect("live");
    assert_eq!(container_env(&mut live, "LOG_LEVEL")["value"], "info");
    assert_eq!(live["metadata"]["labels"]["team"], "support");
    assert_eq!(
        changed(&env.plan(&PlanSettings::default()).await.expect("plan")),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn prune_deletes_what_left_only_with_prune() {
    let env = Env::new().await;
    env.converge(&PlanSettings::default()).await;
    assert!(
        env.server
            .names("Deployment", Some("support"))
            .contains(&"crm-lookup".to_string())
    );
    std::fs::remove_file(env.project.path().join("agents/lookup.yaml")).expect("remove");
    // Objects someone made by hand beside cortex's, without its ownership
    // label: a Deployment and a ConfigMap in the project's namespace.
    for (kind, api) in [("Deployment", "apps/v1"), ("ConfigMap", "v1")] {
        let mut body = json!({
            "apiVersion": api,
            "kind": kind,
            "metadata": {"name": "hand-made", "namespace": "support", "labels": {"team": "support"}},
        });
        if kind == "Deployment" {
            body["spec"] = json!({
                "selector": {"matchLabels": {"app": "hand-made"}},
                "template": {
                    "metadata": {"labels": {"app": "hand-made"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}
                }
            });
        }
        assert!(env.server.create(body, "kubectl"), "{kind} created");
    }

    // Without --prune: kept, and reported as orphans.
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    assert_eq!(planned.saved.summary.delete, 0);
    assert!(
        planned
            .saved
            .orphans
            .contains(&"Deployment/crm-lookup".to_string()),
        "{:?}",
        planned.saved.orphans
    );

    // With --prune: deleted, in reverse dependency order.
    let prune = PlanSettings {
        prune: true,
        ..PlanSettings::default()
    };
    let planned = env.plan(&prune).await.expect("plan");
    let deletes: Vec<String> = planned
        .saved
        .deletes
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    assert!(
        deletes.contains(&"Deployment/crm-lookup".to_string()),
        "{deletes:?}"
    );
    let position = |k: &str| deletes.iter().position(|d| d.starts_with(k));
    assert!(
        position("Deployment/") < position("ServiceAccount/"),
        "{deletes:?}"
    );
    let report = apply(&env.cluster, &planned.saved, &quick())
        .await
        .expect("apply");
    assert_eq!(report.deleted, deletes.len());
    assert!(
        !env.server
            .names("Deployment", Some("support"))
            .contains(&"crm-lookup".to_string())
    );
    assert!(
        env.server
            .names("Deployment", Some("support"))
            .contains(&"triage".to_string())
    );
    // An object without the ownership label is never touched.
    assert!(
        !deletes.iter().any(|d| d.contains("hand-made")),
        "{deletes:?}"
    );
    for kind in ["Deployment", "ConfigMap"] {
        assert!(
            env.server
                .names(kind, Some("support"))
                .contains(&"hand-made".to_string()),
            "the hand-made {kind} survives a prune"
        );
    }
    assert_eq!(
        env.plan(&prune).await.expect("plan").saved.summary.delete,
        0
    );
}

#[tokio::test]
async fn prune_guard_refuses_more_than_half_unless_forced() {
    let env = Env::new().await;
    env.converge(&PlanSettings::default()).await;
    let mut desired = env.desired();
    let keep: Vec<_> = desired
        .objects
        .iter()
        .filter(|o| o.id.kind == "ConfigMap")
        .cloned()
        .collect();
    desired.objects = keep;
    let prune = PlanSettings {
        prune: true,
        ..PlanSettings::default()
    };
    let err = plan(&env.cluster, &desired, &prune)
        .await
        .expect_err("guarded");
    assert!(matches!(err, KubeError::PruneGuard { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    let forced = PlanSettings {
        prune: true,
        force: true,
        ..PlanSettings::default()
    };
    let planned = plan(&env.cluster, &desired, &forced)
        .await
        .expect("forced plan");
    apply(&env.cluster, &planned.saved, &quick())
        .await
        .expect("apply");
    assert!(env.server.names("Deployment", Some("support")).is_empty());
    assert!(!env.server.names("ConfigMap", Some("support")).is_empty());
}

#[tokio::test]
async fn a_crd_is_established_before_its_custom_resource_is_applied() {
    let env = Env::new().await;
    env.server.set_crd_delay(Duration::from_millis(300));
    // support-desk ships `k8s/*.yaml` through spec.manifests.
    env.project.write(
        "k8s/widgets.yaml",
        &common::fixture("manifests/widgets.yaml"),
    );
    let desired = env.desired();
    let planned = plan(&env.cluster, &desired, &PlanSettings::default())
        .await
        .expect("plan");
    let order: Vec<String> = planned
        .saved
        .writes
        .iter()
        .map(|w| w.id.kind.clone())
        .collect();
    let at = |k: &str| order.iter().position(|o| o == k).expect(k);
    assert!(at("CustomResourceDefinition") < at("ServiceAccount"));
    assert!(at("Deployment") < at("Widget"));
    apply(&env.cluster, &planned.saved, &quick())
        .await
        .expect("apply waits for the CRD");
    let widget = env
        .server
        .object("Widget", Some("support"), "blue")
        .expect("the custom resource exists");
    assert_eq!(widget["spec"]["size"], 3);
    // And the next plan reads Widgets too, finding no change.
    let again = plan(&env.cluster, &desired, &PlanSettings::default())
        .await
        .expect("plan");
    assert_eq!(changed(&again), Vec::<String>::new());
}

#[tokio::test]
async fn a_stale_saved_plan_is_refused() {
    let env = Env::new().await;
    env.converge(&PlanSettings::default()).await;
    edit(
        &env.project,
        "cortex.yaml",
        "logLevel: info",
        "logLevel: debug",
    );
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    // The plan goes through a file, as in CI.
    let text = serde_json::to_string(&planned.saved).expect("save");
    let saved: cortex_reconciler::target::kubernetes::SavedPlan =
        serde_json::from_str(&text).expect("load");
    // Meanwhile someone scales a Deployment by hand.
    env.server
        .edit("Deployment", Some("support"), "triage", "kubectl", |d| {
            d["metadata"]["labels"]["touched"] = json!("yes");
        });
    env.server.reset_requests();
    let err = apply(&env.cluster, &saved, &quick())
        .await
        .expect_err("stale");
    assert_eq!(
        err.to_string(),
        "stale plan: Deployment/triage changed since the plan was made; run `cortex plan` again"
    );
    assert_eq!(env.server.requests().apply, 0, "nothing applied");
    let lease = env
        .server
        .object("Lease", Some("support"), "cortex-lock-support-desk")
        .expect("lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "the lock was released: {lease}"
    );
}

#[tokio::test]
async fn the_lock_keeps_a_second_apply_out_until_released_or_broken() {
    let env = Env::new().await;
    env.converge(&PlanSettings::default()).await;
    let held = Lock::acquire(
        &env.cluster,
        "support",
        "support-desk",
        "alice@laptop (GitHub Actions run 7)",
        Duration::ZERO,
    )
    .await
    .expect("lock");
    edit(
        &env.project,
        "cortex.yaml",
        "logLevel: info",
        "logLevel: debug",
    );
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    let err = apply(&env.cluster, &planned.saved, &quick())
        .await
        .expect_err("locked");
    let text = err.to_string();
    assert!(
        text.starts_with("support is locked by alice@laptop (GitHub Actions run 7)"),
        "{text}"
    );
    assert!(text.contains("cortex unlock"), "{text}");

    // Waiting works once the holder lets go.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release(&[]).await
    });
    let waiting = ApplySettings {
        lock_timeout: Duration::from_secs(10),
        ..quick()
    };
    apply(&env.cluster, &planned.saved, &waiting)
        .await
        .expect("applies after the lock is released");
    release.await.expect("join").expect("release");

    // A stale lock is broken on purpose.
    let _stuck = Lock::acquire(
        &env.cluster,
        "support",
        "support-desk",
        "bob@ci",
        Duration::ZERO,
    )
    .await
    .expect("lock");
    assert_eq!(
        lock::unlock(&env.cluster, "support", "support-desk")
            .await
            .expect("unlock"),
        Some("bob@ci".to_string())
    );
    assert_eq!(
        lock::unlock(&env.cluster, "support", "support-desk")
            .await
            .expect("unlock"),
        None
    );
    Lock::acquire(
        &env.cluster,
        "support",
        "support-desk",
        "carol@ci",
        Duration::ZERO,
    )
    .await
    .expect("free again");
}

#[tokio::test]
async fn faults_are_retried_to_convergence() {
    let env = Env::new().await;
    env.server.inject(Fault::new(
        Method::GET,
        "/api/v1/namespaces/support",
        FaultKind::Status(500),
        2,
    ));
    env.server.inject(Fault::new(
        Method::GET,
        "/apis/apps/v1",
        FaultKind::Status(429),
        2,
    ));
    env.server.inject(Fault::new(
        Method::PATCH,
        "deployments",
        FaultKind::Status(409),
        2,
    ));
    env.server.inject(Fault::new(
        Method::PATCH,
        "services",
        FaultKind::Status(503),
        1,
    ));
    env.server
        .inject(Fault::new(Method::PATCH, "configmaps", FaultKind::Drop, 2));
    env.server.inject(Fault::new(
        Method::GET,
        "serviceaccounts",
        FaultKind::Delay(Duration::from_millis(200)),
        1,
    ));
    env.converge(&PlanSettings::default()).await;
    assert!(
        env.server.requests().faulted >= 9,
        "{:?}",
        env.server.requests()
    );
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    assert_eq!(changed(&planned), Vec::<String>::new(), "converged");

    // Faults that never stop give a clear error, not a hang.
    env.server
        .inject(Fault::new(Method::GET, "", FaultKind::Status(503), 100));
    let err = env
        .plan(&PlanSettings::default())
        .await
        .expect_err("gives up");
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn wait_follows_the_rollout_and_names_what_is_stuck() {
    let env = Env::new().await;
    env.server
        .set_rollout(Rollout::After(Duration::from_millis(300)));
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    let waiting = ApplySettings {
        wait: Some(Duration::from_secs(10)),
        ..quick()
    };
    let started = std::time::Instant::now();
    apply(&env.cluster, &planned.saved, &waiting)
        .await
        .expect("rolls out");
    assert!(started.elapsed() >= Duration::from_millis(300));

    env.server.set_rollout(Rollout::Stuck);
    edit(
        &env.project,
        "cortex.yaml",
        "logLevel: info",
        "logLevel: debug",
    );
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    let short = ApplySettings {
        wait: Some(Duration::from_millis(200)),
        ..quick()
    };
    let err = apply(&env.cluster, &planned.saved, &short)
        .await
        .expect_err("times out");
    let text = err.to_string();
    assert!(
        text.starts_with("timed out after 200ms waiting for"),
        "{text}"
    );
    assert!(
        text.contains("Deployment/triage: 0 of") && text.contains("MinimumReplicasUnavailable"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeApiServer::start().expect("start");
    let mut cluster = server.connect(dir.path()).await.expect("config loads");
    drop(server); // nobody listens there any more
    cluster.retry = RetryPolicy {
        attempts: 2,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(5),
    };
    let desired =
        desired_at(&example("support-desk"), &At::WorkTree, &Options::default()).expect("compiles");
    let err = plan(&cluster, &desired, &PlanSettings::default())
        .await
        .expect_err("unreachable");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot reach the Kubernetes API server at http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("kubeconfig context"), "{text}");
}

#[tokio::test]
async fn an_interrupted_apply_stops_writing_and_releases_the_lock() {
    let env = Env::new().await;
    // Deployments answer slowly: the interrupt arrives while they are sent.
    env.server.inject(Fault::new(
        Method::PATCH,
        "deployments",
        FaultKind::Delay(Duration::from_secs(3)),
        8,
    ));
    let planned = env.plan(&PlanSettings::default()).await.expect("plan");
    let interrupt = std::sync::Arc::new(tokio::sync::Notify::new());
    let settings = ApplySettings {
        interrupt: Some(interrupt.clone()),
        ..quick()
    };
    let started = std::time::Instant::now();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        interrupt.notify_one();
    });
    let err = apply(&env.cluster, &planned.saved, &settings)
        .await
        .expect_err("interrupted");
    stopper.await.expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped without waiting for the slow writes"
    );
    match &err {
        KubeError::Interrupted { created, .. } => {
            assert!(*created > 0, "ServiceAccounts and ConfigMaps went first")
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("the lock was released"), "{err}");
    let lease = env
        .server
        .object("Lease", Some("support"), "cortex-lock-support-desk")
        .expect("lease");
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    assert!(
        env.server
            .names("HorizontalPodAutoscaler", Some("support"))
            .is_empty(),
        "nothing after the interrupt"
    );
}

#[tokio::test]
async fn quantities_the_server_rewrites_are_not_drift() {
    let env = Env::new().await;
    edit(
        &env.project,
        "agents/lookup.yaml",
        "limits: { cpu: 500m",
        "limits: { cpu: \"0.5\"",
    );
    env.converge(&PlanSettings::default()).await;
    let live = env
        .server
        .object("Deployment", Some("support"), "crm-lookup")
        .expect("live");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"], "500m",
        "stored canonically"
    );
    env.server.reset_requests();
    let again = env.plan(&PlanSettings::default()).await.expect("plan");
    assert_eq!(changed(&again), Vec::<String>::new());
    assert_eq!(
        env.server.requests().dry_run,
        0,
        "no dry-run for a canonicalised value"
    );
}
