//! Talking to a project's running runtime as its operator: find the
//! runtime `cortex up` recorded in the project's state store, make it prove
//! it holds the operator token (nothing secret is sent before), then call
//! it with that token.

use std::path::Path;
use std::time::Duration;

use cortex_client::Client;
use cortex_reconciler::target::embedded;
use cortex_runtime::engine::RUNTIME_URL;
use cortex_runtime::store::{SqliteStore, Store};
use cortex_runtime::tokens;

use crate::cli::PlanFormat;
use crate::commands::target::compile;

/// Whether the process at `url` is the runtime that wrote this store: it
/// must answer a fresh nonce with the proof only the holder of the operator
/// token can make ([`tokens::identity_proof`]). Nothing secret is sent.
pub async fn proves_identity(url: &str, token: &str) -> Result<(), String> {
    let nonce = tokens::new_token();
    let response = cortex_client::http_client()
        .get(format!("{url}/v1/identity"))
        .query(&[("nonce", &nonce)])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("it does not answer ({e})"))?;
    let proof = response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v.get("proof").and_then(|p| p.as_str()).map(str::to_string))
        .unwrap_or_default();
    if tokens::verify_identity(token, &nonce, &proof) {
        Ok(())
    } else {
        Err("what answers there is not the runtime that wrote this state store (it cannot prove it holds the operator token); the token was not sent".into())
    }
}

/// The operator's client of the runtime running `dir` (with environment
/// `env`); `Ok(None)` when the project does not compile (its diagnostics
/// are printed).
pub async fn connect(dir: &Path, env: Option<String>) -> anyhow::Result<Option<Client>> {
    let Some(desired) = compile(dir, env, PlanFormat::Text)? else {
        return Ok(None);
    };
    let state = embedded::state_path(dir, &desired);
    if !state.exists() {
        anyhow::bail!(
            "no state store at {}: nothing runs this project yet (start it with `cortex up {}`)",
            state.display(),
            dir.display()
        );
    }
    let store = SqliteStore::open(&state)?;
    let state_dir = state.parent().unwrap_or(Path::new("."));
    let found = async {
        let url = store.meta(RUNTIME_URL).await?;
        let token = tokens::read_operator_token(state_dir, &store).await?;
        anyhow::Ok((url, token))
    }
    .await;
    store.close();
    let (url, token) = found?;
    let Some(url) = url else {
        anyhow::bail!(
            "no runtime is running for {} (start it with `cortex up {}`)",
            dir.display(),
            dir.display()
        );
    };
    let Some(token) = token else {
        anyhow::bail!(
            "the runtime at {url} cannot be asked: {} is missing or belongs to another store",
            tokens::operator_token_path(state_dir).display()
        );
    };
    proves_identity(&url, &token)
        .await
        .map_err(|e| anyhow::anyhow!("the runtime recorded at {url} is not reachable: {e}"))?;
    Ok(Some(Client::new(&url, "cortex", &token)))
}
