//! Alerts end to end: a local agent (the example agent, a real process)
//! fails its health check, the rule fires an HMAC-signed webhook to a real
//! HTTP server; a new revision fixes the check, the runtime reloads it, the
//! agent turns healthy and the rule resolves.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use cortex_runtime::alerts::{SIGNATURE_HEADER, verify};
use cortex_testkit::runtime::{apply_project, start_project_with_secrets};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn project(dir: &std::path::Path, hook: &str, check_port: &str) {
    let agent = env!("CARGO_BIN_EXE_cortex-echo-agent");
    std::fs::write(
        dir.join("cortex.yaml"),
        "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: { name: alerting }\nspec:\n  include: [\"specs.yaml\"]\n  namespace: alerting\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("specs.yaml"),
        format!(
            r#"apiVersion: cortex.codevald.io/v1
kind: Agent
metadata: {{ name: watcher, labels: {{ team: support }} }}
spec:
  image: example/agent:1
  local: {{ command: ["{agent}"] }}
  ports:
    - {{ name: http, port: 8080 }}
    - {{ name: metrics, port: 9090 }}
  health:
    check: {{ http: {{ path: /healthz, port: {check_port} }} }}
    interval: 200ms
    timeout: 500ms
    failureThreshold: 2
  recovery: {{ backoff: {{ initial: 30s, max: 1m }} }}
---
apiVersion: cortex.codevald.io/v1
kind: AlertRule
metadata: {{ name: watcher-down }}
spec:
  when: {{ health: unhealthy, for: 300ms, selector: {{ team: support }} }}
  severity: critical
  notify:
    - webhook: {{ url: "{hook}", secretRef: alert-hmac }}
"#
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_and_resolves_with_a_valid_signature() {
    // The webhook receiver.
    let (tx, mut rx) = mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The check names the port nobody serves: the agent turns unhealthy.
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &hook, "metrics");
    let t = start_project_with_secrets(dir.path(), true, Some("alert-hmac: s3cret-key\n")).await;

    let (headers, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the alert fired in time")
        .expect("a webhook call");
    let signature = headers
        .get(SIGNATURE_HEADER)
        .expect("signed")
        .to_str()
        .unwrap();
    assert!(
        verify(b"s3cret-key", &body, signature),
        "the HMAC verifies with the rule's secret"
    );
    assert!(!verify(b"another-key", &body, signature));
    let fired: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(fired["status"], json!("firing"));
    assert_eq!(fired["rule"], json!("watcher-down"));
    assert_eq!(fired["severity"], json!("critical"));
    assert_eq!(fired["agents"], json!(["watcher"]));
    assert_eq!(t.runtime.status().alerts_firing, ["watcher-down"]);

    // Fix the check in a new revision; the running runtime picks it up.
    project(dir.path(), &hook, "http");
    assert_eq!(apply_project(dir.path(), &t.store).await, 2);
    let (headers, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the alert resolved in time")
        .expect("a webhook call");
    let signature = headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap();
    assert!(verify(b"s3cret-key", &body, signature));
    let resolved: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(resolved["status"], json!("resolved"));
    let status = t.runtime.status();
    assert_eq!(status.revision, 2);
    assert!(status.alerts_firing.is_empty());
    // The new process passes its first check.
    let healthy = |s: &cortex_runtime::status::RuntimeStatus| {
        s.agents["watcher"]
            .replicas
            .iter()
            .all(|r| r.state == cortex_runtime::health::HealthState::Healthy)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !healthy(&t.runtime.status()) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            t.runtime.status().agents["watcher"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The health history reaches the store (written behind the board).
    use cortex_runtime::store::Store;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let history = t.store.health_history("watcher", 50).await.unwrap();
        let states: Vec<&str> = history.iter().map(|h| h.state.as_str()).collect();
        if states.contains(&"unhealthy") && states.contains(&"healthy") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.runtime.stop().await.unwrap();
}
