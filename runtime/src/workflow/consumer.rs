//! A workflow's topic triggers: its inbox (`workflow/NAME`, subscribed to
//! the topics its triggers name) is consumed like an agent's. Each message
//! becomes an execution, and is acked only once the execution is durably
//! created; a crash in between redelivers the message, which finds the
//! execution its id names instead of creating another.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::broker::config::workflow_inbox;
use crate::broker::{Broker, BrokerError};
use crate::workflow::scheduler::{Start, Workflows};

/// Deliveries taken at once.
const BATCH: usize = 64;
/// How long one receive waits for a message.
const WAIT: Duration = Duration::from_secs(30);
/// How long a message waits before it is offered again after the
/// execution could not be created (the store refused).
const AGAIN_AFTER: Duration = Duration::from_secs(5);

/// Consumes `workflow`'s inbox until shutdown, or until an apply removes
/// its topic triggers (the inbox is no longer declared).
pub async fn consume(
    workflows: Workflows,
    broker: Arc<Broker>,
    workflow: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let inbox = workflow_inbox(&workflow);
    loop {
        let taken = tokio::select! {
            taken = broker.receive(&inbox, BATCH, WAIT) => taken,
            _ = shutdown.changed() => return,
        };
        let messages = match taken {
            Ok(messages) => messages,
            Err(BrokerError::UnknownAgent(_)) => return,
            Err(e) => {
                tracing::error!(workflow = %workflow, error = %e, "cannot receive trigger messages");
                tokio::time::sleep(AGAIN_AFTER).await;
                continue;
            }
        };
        for message in messages {
            let payload: Value = serde_json::from_str(&message.payload).unwrap_or(Value::Null);
            let topic = message
                .topic
                .as_ref()
                .map(|t| t.name.to_string())
                .unwrap_or_default();
            let started = workflows
                .start_execution(
                    &workflow,
                    Start::Message {
                        topic,
                        id: message.id,
                    },
                    payload,
                )
                .await;
            let settled = match started {
                Ok(execution) => {
                    tracing::debug!(execution = %execution.id, message = message.id, "trigger message became an execution");
                    broker.ack(&inbox, message.id).await
                }
                Err(e) => {
                    tracing::warn!(workflow = %workflow, message = message.id, error = %e, "no execution for a trigger message; it is offered again");
                    broker
                        .nack(&inbox, message.id, AGAIN_AFTER, Some(&e.to_string()))
                        .await
                }
            };
            if let Err(e) = settled {
                tracing::warn!(workflow = %workflow, message = message.id, error = %e, "a trigger message was not settled; it is redelivered after its ack timeout");
            }
        }
    }
}
