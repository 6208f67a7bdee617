//! Workflow executions as the runtime's API shows them (`GET
//! /v1/executions/{id}`, `cortex execution --format json`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One execution of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionView {
    /// Its id.
    pub id: String,
    /// The workflow it runs.
    pub workflow: String,
    /// The applied revision whose definition it runs.
    pub revision: u64,
    /// What started it.
    pub trigger: TriggerView,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When its first task started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Its tasks, in the workflow's order.
    pub tasks: Vec<TaskView>,
}

impl ExecutionView {
    /// Whether it ended (succeeded, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// What started an execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerView {
    /// The trigger's name.
    pub name: String,
    /// The message's payload, the schedule's tick or the operator's input.
    pub payload: Value,
}

/// One task of an execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// Its name.
    pub name: String,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped` or `cancelled`.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// Its output, once it succeeded.
    pub output: Option<Value>,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// When its last attempt started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
}

/// `GET /v1/executions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionList {
    /// Oldest first.
    pub executions: Vec<ExecutionView>,
}

/// `POST /v1/workflows/{name}/pause` and `/resume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowPause {
    /// The workflow.
    pub workflow: String,
    /// Whether it is paused now.
    pub paused: bool,
    /// Executions waiting to start.
    pub queued: usize,
}

/// The workflow API, for a client holding the operator's token (the CLI,
/// tests): start, list, read, cancel, retry, pause and resume.
impl crate::Client {
    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
    ) -> Result<T, crate::ClientError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::decode(response).await.map_err(|e| self.map(e))
    }

    /// Starts an execution of `workflow` by hand with `payload` (its
    /// `$(trigger.payload)`).
    pub async fn start_execution(
        &self,
        workflow: &str,
        payload: &Value,
    ) -> Result<ExecutionView, crate::ClientError> {
        let url = format!("{}/v1/workflows/{workflow}/executions", self.base);
        self.post(&url, &serde_json::json!({ "payload": payload }))
            .await
    }

    /// Every execution (of `workflow`), oldest first.
    pub async fn executions(
        &self,
        workflow: Option<&str>,
    ) -> Result<Vec<ExecutionView>, crate::ClientError> {
        let mut url = format!("{}/v1/executions", self.base);
        if let Some(w) = workflow {
            url.push_str(&format!("?workflow={w}"));
        }
        self.get_json::<ExecutionList>(&url)
            .await
            .map(|l| l.executions)
    }

    /// One execution.
    pub async fn execution(&self, id: &str) -> Result<ExecutionView, crate::ClientError> {
        self.get_json(&format!("{}/v1/executions/{id}", self.base))
            .await
    }

    /// Cancels an execution; answers once it stopped.
    pub async fn cancel_execution(&self, id: &str) -> Result<ExecutionView, crate::ClientError> {
        let url = format!("{}/v1/executions/{id}/cancel", self.base);
        self.post(&url, &serde_json::json!({})).await
    }

    /// Runs a failed or cancelled execution again from where it failed.
    pub async fn retry_execution(&self, id: &str) -> Result<ExecutionView, crate::ClientError> {
        let url = format!("{}/v1/executions/{id}/retry", self.base);
        self.post(&url, &serde_json::json!({})).await
    }

    /// Pauses (`true`) or resumes a workflow.
    pub async fn pause_workflow(
        &self,
        workflow: &str,
        paused: bool,
    ) -> Result<WorkflowPause, crate::ClientError> {
        let verb = if paused { "pause" } else { "resume" };
        let url = format!("{}/v1/workflows/{workflow}/{verb}", self.base);
        self.post(&url, &serde_json::json!({})).await
    }
}
