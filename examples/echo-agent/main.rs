//! cortex-echo-agent: the example agent, built on the `cortex-client`
//! library and talking over its agent socket. It answers requests with
//! their payload and passes every other message on to the topics it may
//! publish to, adding its name to the payload's `handledBy` list (so a
//! message's path through a pipeline of echo agents is visible at the
//! end). It counts what it handled in its own state scope
//! (`agents/<name>`, key `handled`, compare-and-swap through
//! `StateScope::update`, so replicas never lose a count). An agent whose `config` lists `categories` stands in for a
//! classifier: its replies carry a `category`, the first listed one whose
//! name appears in the request, else the last; with `countIn: SCOPE` it
//! also counts each category there, under `category/<name>`. It serves `GET /healthz` on `$PORT` for the health loop and exits
//! on SIGTERM, or when the broker has been unreachable for 30 s (cortex is
//! gone).
//!
//! cortex starts it with everything in its environment; by hand:
//! `CORTEX_BROKER_URL=http://127.0.0.1:7400 CORTEX_AGENT_NAME=triage
//! CORTEX_AGENT_TOKEN=… cortex-echo-agent`.

use std::time::{Duration, Instant};

use cortex_client::{Client, ClientError, Delivery, Session, StateScope};
use serde_json::{Value, json};

/// How long the broker may stay unreachable before the agent gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

fn transformed(agent: &str, payload: &Value) -> Value {
    let mut out = match payload {
        Value::Object(map) => Value::Object(map.clone()),
        other => json!({ "payload": other }),
    };
    let mut handled = out
        .get("handledBy")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    handled.push(json!(agent));
    out["handledBy"] = Value::Array(handled);
    out
}

/// The first of `categories` named in `payload` (case-insensitive), else
/// the last one: a keyword stand-in for a language model's answer.
fn classify(categories: &[Value], payload: &Value) -> Option<Value> {
    let text = payload.to_string().to_lowercase();
    categories
        .iter()
        .find(|c| c.as_str().is_some_and(|c| text.contains(&c.to_lowercase())))
        .or_else(|| categories.last())
        .cloned()
}

/// Adds one to `key`'s count in `state` (a failure is logged, never
/// fatal: the message was handled).
async fn count(state: &StateScope, key: &str) {
    let counted = state
        .update(key, |old| {
            json!(old.and_then(Value::as_u64).unwrap_or(0) + 1)
        })
        .await;
    if let Err(e) = counted {
        eprintln!("cannot count {key} in {}: {e}", state.name());
    }
}

async fn handle(
    session: &mut Session,
    agent: &str,
    topics: &[String],
    config: &Value,
    shared: Option<&StateScope>,
    delivery: &Delivery,
) -> Result<(), ClientError> {
    let mut out = transformed(agent, &delivery.payload);
    if delivery.request {
        let categories = config.get("categories").and_then(Value::as_array);
        if let Some(category) = categories.and_then(|c| classify(c, &delivery.payload)) {
            if let (Some(shared), Some(name)) = (shared, category.as_str()) {
                count(shared, &format!("category/{name}")).await;
            }
            out["category"] = category;
        }
        return session.reply(delivery.id, &out).await;
    }
    for topic in topics {
        if let Err(e) = session.publish(topic, delivery.key.as_deref(), &out).await {
            eprintln!(
                "publish to {topic} failed: {e}; giving message {} back",
                delivery.id
            );
            return session.nack(delivery.id, Duration::from_secs(1)).await;
        }
    }
    session.ack(delivery.id).await
}

async fn serve_health() {
    let Some(port) = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        return;
    };
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => {
            let _ = axum::serve(listener, app).await;
        }
        Err(e) => eprintln!("cannot serve /healthz on port {port}: {e}"),
    }
}

async fn work(client: Client) -> Result<(), ClientError> {
    let topics = Client::publish_topics();
    let config = Client::config()?;
    eprintln!(
        "{} up: publishing to [{}], config keys [{}]",
        client.agent(),
        topics.join(", "),
        config
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    let state = client.state(&format!("agents/{}", client.agent()));
    let shared = config
        .get("countIn")
        .and_then(Value::as_str)
        .map(|scope| client.state(scope));
    let mut unreachable_since: Option<Instant> = None;
    loop {
        // The agent socket: deliveries in, settlements and publishes out.
        let mut session = match client.session(32).await {
            Ok(session) => session,
            Err(e) if e.is_retryable() => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        unreachable_since = None;
        // Until the socket closes (cortex stopped or restarted): then open it again.
        while let Some(next) = session.next().await {
            let result = match next {
                Ok(delivery) => {
                    let handled = handle(
                        &mut session,
                        client.agent(),
                        &topics,
                        &config,
                        shared.as_ref(),
                        &delivery,
                    )
                    .await;
                    if handled.is_ok() {
                        count(&state, "handled").await;
                    }
                    handled
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {}
                Err(e @ ClientError::Socket { .. }) => {
                    eprintln!("the agent socket broke: {e}");
                    break;
                }
                Err(e) => eprintln!("{e}"),
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let client = match Client::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cortex-echo-agent: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    tokio::spawn(serve_health());
    #[cfg(unix)]
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminated = std::future::pending::<()>();
    tokio::select! {
        result = work(client) => match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cortex-echo-agent: {e}");
                std::process::ExitCode::from(1)
            }
        },
        _ = terminated => std::process::ExitCode::SUCCESS,
        _ = tokio::signal::ctrl_c() => std::process::ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_classifier_picks_the_first_category_named_else_the_last() {
        let categories = [json!("billing"), json!("bug"), json!("other")];
        let refund = json!({"ticket": {"subject": "Billing: refund please"}});
        assert_eq!(classify(&categories, &refund), Some(json!("billing")));
        assert_eq!(
            classify(&categories, &json!({"x": 1})),
            Some(json!("other"))
        );
        assert_eq!(classify(&[], &refund), None);
    }
}
