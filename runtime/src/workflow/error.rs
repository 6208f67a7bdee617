//! Why an operator's workflow command was refused; each reason maps to one
//! HTTP status and the API's JSON error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cortex_client::ApiError;

use crate::broker::BrokerError;
use crate::store::StoreError;

/// Why a workflow command was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// No workflow of that name in the applied revision (404).
    #[error("no workflow named {name} in the applied revision{}", known_list(.known))]
    UnknownWorkflow {
        /// What was asked for.
        name: String,
        /// The workflows there are.
        known: Vec<String>,
    },
    /// The workflow declares no manual trigger (409).
    #[error(
        "workflow {0} declares no manual trigger, so it cannot be started by hand: add `- {{ name: by-hand, manual: {{}} }}` to its triggers"
    )]
    NoManualTrigger(String),
    /// No execution of that id (404).
    #[error("no execution with id {0}")]
    UnknownExecution(String),
    /// The execution is not in a state the command acts on (409).
    #[error("execution {id} is {state}: {hint}")]
    WrongState {
        /// The execution.
        id: String,
        /// Where it is.
        state: String,
        /// What can be done instead.
        hint: &'static str,
    },
    /// The request does not have the expected shape (400).
    #[error("{0}")]
    BadRequest(String),
    /// The caller is not the operator (403).
    #[error("only the operator token may {0}")]
    Forbidden(&'static str),
    /// The store could not make the change durable (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime is stopping (503).
    #[error("the runtime is stopping; try again once it is back")]
    Stopping,
    /// Refused by the API's common checks (token, body): the broker
    /// API's error, status and all.
    #[error(transparent)]
    Api(#[from] BrokerError),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (it has none)".to_string()
    } else {
        format!(" (there are: {})", known.join(", "))
    }
}

impl WorkflowError {
    /// The HTTP status and error code of this error.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            WorkflowError::UnknownWorkflow { .. } | WorkflowError::UnknownExecution(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            WorkflowError::NoManualTrigger(_) | WorkflowError::WrongState { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
            WorkflowError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            WorkflowError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            WorkflowError::Store(_) | WorkflowError::Stopping => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            WorkflowError::Api(e) => e.status(),
        }
    }
}

impl IntoResponse for WorkflowError {
    fn into_response(self) -> Response {
        if let WorkflowError::Api(e) = self {
            return e.into_response();
        }
        let (status, code) = self.status();
        let error = ApiError {
            code: code.to_string(),
            message: self.to_string(),
            inbox: None,
            pointer: None,
        };
        (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
    }
}
