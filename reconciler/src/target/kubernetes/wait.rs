//! `--wait`: until Deployments have rolled out and HPAs/PDBs exist, with a
//! progress display of what is still pending.

use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::plan::ObjectId;
use crate::target::kubernetes::cluster::{Cluster, Discovery};
use crate::target::kubernetes::error::KubeError;
use crate::target::kubernetes::live::CONCURRENCY;
use crate::target::kubernetes::retry::retry;

/// An object to wait for: identity and `apiVersion`.
pub type Awaited = (ObjectId, String);

/// Whether a Deployment has rolled out, as `kubectl rollout status` judges
/// it; else why not.
pub fn rollout_state(deployment: &Value) -> Result<(), String> {
    let generation = deployment
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status = &deployment["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Err("the controller has not observed the new generation yet".into());
    }
    let wanted = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = status["updatedReplicas"].as_i64().unwrap_or(0);
    let replicas = status["replicas"].as_i64().unwrap_or(0);
    let available = status["availableReplicas"].as_i64().unwrap_or(0);
    let conditions = conditions_text(status);
    if updated < wanted {
        return Err(format!(
            "{updated} of {wanted} replicas updated{conditions}"
        ));
    }
    if replicas > updated {
        return Err(format!(
            "{} old replicas pending termination{conditions}",
            replicas - updated
        ));
    }
    if available < updated {
        return Err(format!(
            "{available} of {updated} updated replicas available{conditions}"
        ));
    }
    Ok(())
}

/// ` (Available=False MinimumReplicasUnavailable: …)` for the conditions
/// that are not true.
fn conditions_text(status: &Value) -> String {
    let failing: Vec<String> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "True")
        .map(|c| {
            format!(
                "{}={} {}: {}",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    match failing.is_empty() {
        true => String::new(),
        false => format!(" ({})", failing.join("; ")),
    }
}

/// Waits for every awaited object; on timeout names each one still
/// pending and why.
pub async fn wait_for(
    cluster: &Cluster,
    discovery: &Discovery,
    awaited: &[Awaited],
    timeout: Duration,
    poll: Duration,
    progress: bool,
) -> Result<(), KubeError> {
    let bar = ProgressBar::with_draw_target(
        Some(awaited.len() as u64),
        match progress {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} waiting {elapsed} [{pos}/{len} ready] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = tokio::time::Instant::now();
    let mut pending: Vec<(Awaited, String)> = awaited
        .iter()
        .map(|a| (a.clone(), "not checked yet".to_string()))
        .collect();
    loop {
        // (Futures collected first: a lazy iterator of borrowing futures
        // keeps the apply's future from being provably Send.)
        let requests: Vec<_> = pending
            .iter()
            .map(|(a, _)| check(cluster, discovery, a))
            .collect();
        let checks = futures::stream::iter(requests)
            .buffered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut still = Vec::new();
        for ((awaited, _), state) in pending.into_iter().zip(checks) {
            if let Err(why) = state? {
                still.push((awaited, why));
            }
        }
        pending = still;
        bar.set_position((awaited.len() - pending.len()) as u64);
        bar.set_message(
            pending
                .iter()
                .take(3)
                .map(|((id, _), why)| format!("{id}: {why}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        if pending.is_empty() {
            bar.finish_and_clear();
            return Ok(());
        }
        if started.elapsed() >= timeout {
            bar.abandon();
            return Err(KubeError::Timeout {
                after: timeout,
                pending: pending
                    .iter()
                    .map(|((id, _), why)| format!("{id}: {why}"))
                    .collect(),
            });
        }
        tokio::time::sleep(poll.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

/// One object's state: `Ok(Ok(()))` ready, `Ok(Err(why))` pending.
async fn check(
    cluster: &Cluster,
    discovery: &Discovery,
    (id, api_version): &Awaited,
) -> Result<Result<(), String>, KubeError> {
    let Some(kind) = discovery.get(api_version, &id.kind) else {
        return Ok(Err(format!("{api_version} {} is not served", id.kind)));
    };
    let api = cluster.api(kind, id.namespace.as_deref());
    let object = retry(cluster.retry, false, || api.get_opt(&id.name))
        .await
        .map_err(|e| cluster.error(&format!("read {id}"), e))?;
    let Some(object) = object else {
        return Ok(Err("not found".into()));
    };
    match id.kind.as_str() {
        "Deployment" => Ok(rollout_state(
            &serde_json::to_value(object).unwrap_or(Value::Null),
        )),
        _ => Ok(Ok(())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rollout_needs_the_new_generation_and_available_replicas() {
        let mut d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}});
        assert!(rollout_state(&d).unwrap_err().contains("generation"));
        d["status"]["observedGeneration"] = json!(2);
        d["status"]["availableReplicas"] = json!(0);
        d["status"]["conditions"] = json!([{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."}]);
        let why = rollout_state(&d).unwrap_err();
        assert!(
            why.contains("0 of 2") && why.contains("MinimumReplicasUnavailable"),
            "{why}"
        );
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(rollout_state(&d), Ok(()));
    }
}
