//! The Kubernetes target's life cycle — create → no-op → update → prune →
//! stale plan → lock — against a real cluster when `CORTEX_TEST_KUBECONFIG`
//! names a kubeconfig (its current context; `CORTEX_TEST_CONTEXT` picks
//! another), else against the in-process API server.
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
            (
                fake.write_kubeconfig(dir.path()).expect("kubeconfig"),
                None,
                Some(fake),
            )
        }
    };
    let cluster = Cluster::connect(&ConnectOptions {
        kubeconfig: Some(kubeconfig),
        context,
    })
    .await
    .expect("connect");
    Under {
        cluster,
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
