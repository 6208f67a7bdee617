//! A stored execution as the API shows it ([`ExecutionView`]): tasks in
//! the workflow's order, times in RFC 3339, and the state of tasks that
//! never moved read from how the execution ended.

use cortex_client::{ExecutionView, TaskView, TriggerView};
use cortex_compiler::runtime_config::WorkflowEntry;

use crate::store::StoredExecution;

/// `ms` since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The task names of `definition` in its order (its stored tasks for a
/// definition that cannot be read).
fn task_order(stored: &StoredExecution) -> Vec<String> {
    match serde_json::from_value::<WorkflowEntry>(stored.definition.clone()) {
        Ok(definition) => definition.order,
        Err(_) => stored.tasks.keys().cloned().collect(),
    }
}

/// The view of `stored`.
pub fn view(stored: &StoredExecution) -> ExecutionView {
    let ended = matches!(stored.state.as_str(), "failed" | "cancelled");
    let tasks: Vec<TaskView> = task_order(stored)
        .into_iter()
        .map(|name| match stored.tasks.get(&name) {
            Some(t) => {
                // A task still marked running in an ended execution was stopped with it.
                let state = if ended && matches!(t.state.as_str(), "running" | "pending") {
                    "cancelled".to_string()
                } else {
                    t.state.clone()
                };
                TaskView {
                    name,
                    state,
                    attempts: t.attempts,
                    output: t.output.clone(),
                    error: t.error.clone(),
                    started_at: t.started_ms.map(rfc3339),
                    finished_at: t.finished_ms.map(rfc3339),
                }
            }
            None => TaskView {
                name,
                state: match stored.state.as_str() {
                    "failed" => "skipped",
                    "cancelled" => "cancelled",
                    _ => "pending",
                }
                .to_string(),
                attempts: 0,
                output: None,
                error: None,
                started_at: None,
                finished_at: None,
            },
        })
        .collect();
    let started = stored.tasks.values().filter_map(|t| t.started_ms).min();
    ExecutionView {
        id: stored.id.clone(),
        workflow: stored.workflow.clone(),
        revision: stored.revision,
        trigger: TriggerView {
            name: stored.trigger.clone(),
            payload: stored.payload.clone(),
        },
        state: stored.state.clone(),
        created_at: rfc3339(stored.created_ms),
        started_at: started.map(rfc3339),
        finished_at: stored.finished_ms.map(rfc3339),
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredTask;
    use serde_json::json;

    #[test]
    fn tasks_come_in_the_workflows_order_and_unmoved_ones_read_the_end() {
        let definition = json!({
            "triggers": [], "concurrency": 1, "maxActiveExecutions": 1,
            "onFailure": "fail-fast", "order": ["b", "a", "c"],
            "tasks": {"a": {}, "b": {}, "c": {}}
        });
        let mut stored = StoredExecution {
            id: "p-1".into(),
            workflow: "p".into(),
            revision: 3,
            trigger: "by-hand".into(),
            payload: json!({"n": 1}),
            state: "failed".into(),
            definition,
            created_ms: 1_700_000_000_000,
            finished_ms: Some(1_700_000_001_500),
            tasks: Default::default(),
        };
        stored.tasks.insert(
            "b".into(),
            StoredTask {
                state: "failed".into(),
                attempts: 2,
                output: None,
                error: Some("boom".into()),
                started_ms: Some(1_700_000_000_100),
                finished_ms: Some(1_700_000_000_200),
                earlier_attempts: 0,
            },
        );
        let v = view(&stored);
        let states: Vec<(&str, &str)> = v
            .tasks
            .iter()
            .map(|t| (t.name.as_str(), t.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [("b", "failed"), ("a", "skipped"), ("c", "skipped")]
        );
        assert_eq!(v.created_at, "2023-11-14T22:13:20.000Z");
        assert_eq!(v.started_at.as_deref(), Some("2023-11-14T22:13:20.100Z"));
        assert_eq!(v.trigger.payload, json!({"n": 1}));
    }
}
