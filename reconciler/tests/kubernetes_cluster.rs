//! The Kubernetes target's life cycle — create → no-op → update → prune →
//! stale plan → lock — and `cortex serve` healing drift in a cluster,
//! against a real cluster when `CORTEX_TEST_KUBECONFIG` names a kubeconfig
//! (its current context; `CORTEX_TEST_CONTEXT` picks another), else against
//! the in-process API server.
//!
//! On a real cluster it works in a fresh namespace `cortex-test-<random>`,
//! deleted at the end, and checks only what the API server itself
//! guarantees (no node is needed: nothing waits for Pods).

use cortex_testkit::git as common;

use std::time::Duration;

use cortex_compiler::Options;
use cortex_reconciler::target::kubernetes::lock::Lock;
use cortex_reconciler::target::kubernetes::{
    ApplySettings, Cluster, ConnectOptions, KubeError, PlanSettings, SavedPlan, apply, plan,
};
use cortex_reconciler::{At, Desired, desired_at};
use cortex_testkit::kubernetes::FakeApiServer;
use kube::api::{DeleteParams, Patch, PatchParams};

use common::{Repo, edit, example};

/// The cluster under test, and the in-process server when it is that.
struct Under {
    cluster: Cluster,
    connect: ConnectOptions,
    _fake: Option<FakeApiServer>,
    _dir: tempfile::TempDir,
    real: bool,
}

async fn cluster() -> Under {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kubeconfig, context, fake) = match std::env::var_os("CORTEX_TEST_KUBECONFIG") {
        Some(path) => (path.into(), std::env::var("CORTEX_TEST_CONTEXT").ok(), None),
        None => {
            let fake = FakeApiServer::start().expect("start the in-process API server");
            // A real cluster always has it (serve's leader Lease goes there).
            fake.create_namespace("default");
            (
                fake.write_kubeconfig(dir.path()).expect("kubeconfig"),
                None,
                Some(fake),
            )
        }
    };
    let connect = ConnectOptions {
        kubeconfig: Some(kubeconfig),
        context,
    };
    let cluster = Cluster::connect(&connect).await.expect("connect");
    Under {
        cluster,
        connect,
        real: fake.is_none(),
        _fake: fake,
        _dir: dir,
    }
}

fn desired(project: &Repo) -> Desired {
    desired_at(project.path(), &At::WorkTree, &Options::default()).expect("compiles")
}

fn settings() -> ApplySettings {
    ApplySettings {
        poll: Duration::from_millis(100),
        holder: "cortex tests".into(),
        ..ApplySettings::default()
    }
}

#[tokio::test]
async fn life_cycle() {
    let under = cluster().await;
    let cluster = &under.cluster;
    let namespace = format!("cortex-test-{:08x}", getrandom::u32().expect("random"));
    let project = Repo::new();
    project.copy_dir(&example("support-desk"), "");
    edit(
        &project,
        "cortex.yaml",
        "namespace: support",
        &format!("namespace: {namespace}"),
    );

    let result = scenario(cluster, &project, &namespace).await;
    if under.real {
        // Leave the real cluster as it was.
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(cluster.client().clone());
        let _ = api.delete(&namespace, &DeleteParams::background()).await;
    }
    result.unwrap_or_else(|e| panic!("{e}"));
}

async fn scenario(cluster: &Cluster, project: &Repo, namespace: &str) -> Result<(), KubeError> {
    // Create: the namespace and every object.
    let first = plan(cluster, &desired(project), &PlanSettings::default()).await?;
    assert!(first.saved.create_namespace);
    assert!(first.saved.summary.create > 10);
    let report = apply(cluster, &first.saved, &settings()).await?;
    assert_eq!(report.created + 1, first.saved.summary.create);

    // No-op: nothing to change, and applying writes nothing.
    let second = plan(cluster, &desired(project), &PlanSettings::default()).await?;
    let changes: Vec<String> = second.display.changed().map(|c| c.id.to_string()).collect();
    assert!(changes.is_empty(), "a second plan changes {changes:?}");

    // Update: one value, one object family changes; defaults never show.
    edit(
        project,
        "agents/triage.yaml",
        "maxReplicas: 10",
        "maxReplicas: 12",
    );
    let third = plan(cluster, &desired(project), &PlanSettings::default()).await?;
    let updated: Vec<String> = third.display.changed().map(|c| c.id.to_string()).collect();
    assert!(
        updated.contains(&"HorizontalPodAutoscaler/triage".to_string()),
        "{updated:?}"
    );
    for change in third.display.changed() {
        for field in &change.fields {
            assert!(
                !field.path.contains("Seconds") && !field.path.contains("strategy"),
                "{}: {}",
                change.id,
                field.path
            );
        }
    }
    apply(cluster, &third.saved, &settings()).await?;

    // Prune: an agent leaves the project.
    std::fs::remove_file(project.path().join("agents/lookup.yaml")).expect("remove");
    let pruning = PlanSettings {
        prune: true,
        ..PlanSettings::default()
    };
    let fourth = plan(cluster, &desired(project), &pruning).await?;
    assert!(
        fourth
            .saved
            .deletes
            .iter()
            .any(|d| d.id.to_string() == "Deployment/crm-lookup")
    );
    let report = apply(cluster, &fourth.saved, &settings()).await?;
    assert_eq!(report.deleted, fourth.saved.deletes.len());

    // Stale plan: planned, saved, then the cluster changes under it.
    edit(project, "cortex.yaml", "logLevel: info", "logLevel: debug");
    let fifth = plan(cluster, &desired(project), &PlanSettings::default()).await?;
    let saved: SavedPlan =
        serde_json::from_str(&serde_json::to_string(&fifth.saved).expect("save")).expect("load");
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(cluster.client().clone(), namespace);
    let label = serde_json::json!({"metadata": {"labels": {"touched-by": "someone"}}});
    deployments
        .patch("triage", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .map_err(|e| cluster.error("edit triage", e))?;
    match apply(cluster, &saved, &settings()).await {
        Err(KubeError::Stale(objects)) => assert_eq!(objects, ["Deployment/triage changed"]),
        other => panic!("expected a stale plan, got {other:?}"),
    }

    // Lock: held by someone else, an apply is refused with their name.
    let held = Lock::acquire(
        cluster,
        namespace,
        "support-desk",
        "alice@laptop",
        Duration::ZERO,
    )
    .await?;
    let again = plan(cluster, &desired(project), &PlanSettings::default()).await?;
    match apply(cluster, &again.saved, &settings()).await {
        Err(KubeError::Locked { holder, .. }) => assert_eq!(holder, "alice@laptop"),
        other => panic!("expected the lock to hold, got {other:?}"),
    }
    held.release(&[]).await?;
    apply(cluster, &again.saved, &settings()).await?;
    Ok(())
}

/// Polls `check` (the deadline only stops a hung test).
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_heals_a_field_another_manager_changed() {
    use cortex_reconciler::serve::{Serve, ServeOptions, ServeTarget, Source};
    use k8s_openapi::api::apps::v1::Deployment;
    let under = cluster().await;
    let namespace = format!("cortex-test-{:08x}", getrandom::u32().expect("random"));
    let project = Repo::new();
    project.write(
        "cortex.yaml",
        &cortex_testkit::serve::small_project("healed", &namespace),
    );
    project.write("specs.yaml", &cortex_testkit::serve::small_specs("1d"));
    project.commit("first");
    let state = tempfile::tempdir().expect("tempdir");
    let mut serve = Serve::new(ServeOptions {
        source: Source::Local {
            dir: project.path().to_path_buf(),
        },
        target: ServeTarget::Kubernetes {
            connect: under.connect.clone(),
            prune: false,
        },
        subdir: None,
        env: None,
        interval: Duration::from_millis(300),
        state: state.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        supervise: false,
        webhook_secret: None,
        auto_sync: true,
        self_heal: true,
        tokens_file: None,
        lease: Duration::from_secs(3),
    });
    serve.listen().await.expect("listens");
    let status = serve.status();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(serve.run(stopped));
    let deployments: kube::Api<Deployment> =
        kube::Api::namespaced(under.cluster.client().clone(), &namespace);
    let image = |d: &Deployment| {
        d.spec.as_ref()?.template.spec.as_ref()?.containers[0]
            .image
            .clone()
    };
    let outcome = async {
        eventually("the project synced to the cluster", async || {
            status
                .lock()
                .ok()
                .filter(|s| s.sync_state == "synced")
                .map(|_| ())
        })
        .await;
        let name = eventually("the worker's Deployment", async || {
            let list = deployments.list(&Default::default()).await.ok()?;
            list.items.into_iter().find_map(|d| d.metadata.name)
        })
        .await;
        // An edit of the image by another field manager (as `kubectl
        // edit` makes it); a merge patch replaces the container list.
        let mut container = deployments
            .get(&name)
            .await
            .ok()?
            .spec?
            .template
            .spec?
            .containers[0]
            .clone();
        container.image = Some("evil/agent:6".into());
        let edit = serde_json::json!({"spec": {"template": {"spec": {"containers": [container]}}}});
        deployments
            .patch(
                &name,
                &PatchParams {
                    field_manager: Some("kubectl-edit".into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&edit),
            )
            .await
            .ok()?;
        eventually("the edit put back", async || {
            let healed = status.lock().ok()?.drift.iter().any(|d| d.contains(&name));
            let now = deployments.get(&name).await.ok()?;
            (healed && image(&now).as_deref() == Some("example/agent:1")).then_some(())
        })
        .await;
        Some(())
    }
    .await;
    let _ = stop.send(true);
    let stopped = running.await;
    if under.real {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(under.cluster.client().clone());
        let _ = api.delete(&namespace, &DeleteParams::background()).await;
    }
    assert!(outcome.is_some(), "the cluster could not be read or edited");
    stopped.expect("serve's task").expect("serve stops cleanly");
}
