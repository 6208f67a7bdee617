//! The peer of the durable broker figure: NATS JetStream on the same
//! workload. A real `nats-server` (file storage, `sync_interval: always`,
//! so a publish is acknowledged only once fsynced, as cortex acknowledges
//! only what its store made durable) runs as a child process on a free
//! port; 256 publishers each publish and await the acknowledgement, two
//! pull consumers fetch batches and acknowledge each batch durably
//! (`AckPolicy::All`, a double ack of the batch's last message: cortex's
//! `ack_many`). Throughput is messages per second until everything is
//! acknowledged; latency is publish call → durable acknowledgement.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use crate::peer::{Killed, free_port};

use crate::durable::{DurableFigures, PAYLOAD, System, drive};

/// The `nats-server` to run: `CORTEX_BENCH_NATS_SERVER`, else the one
/// `scripts/bench` installs (`.tools/bench/bin/nats-server` in the
/// workspace), else `nats-server` on PATH.
pub fn find_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CORTEX_BENCH_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bench/bin/nats-server");
    if installed.is_file() {
        return Some(installed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    })
}

/// `nats-server --version`'s answer (`nats-server: v2.15.1` → `nats-server v2.15.1`).
pub fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().replace(':', ""))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "nats-server".to_string())
}

/// A `nats-server` child process, killed when dropped.
struct Server {
    _child: Killed,
    url: String,
    _dir: tempfile::TempDir,
}

async fn start(binary: &Path, sync_always: bool) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?}{} }}\n",
            dir.path().join("store").display().to_string(),
            if sync_always {
                ", sync_interval: always"
            } else {
                ""
            }
        ),
    )?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let server = Server {
        _child: Killed(child),
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nats-server did not listen on port {port} within 5 s")
}

/// The durable workload on JetStream: `total` messages. Without
/// `sync_always` the server runs with its default (`sync_interval` 2 min:
/// a publish is acknowledged before it is fsynced), for context.
pub async fn durable(
    binary: &Path,
    total: u64,
    sync_always: bool,
) -> anyhow::Result<DurableFigures> {
    let server = start(binary, sync_always).await?;
    let client = async_nats::connect(&server.url).await?;
    let js = jetstream::new(client);
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH".to_string(),
            subjects: vec!["bench.>".to_string()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the stream: {e}"))?;
    let mut consumers = Vec::new();
    for lane in 0..2 {
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(format!("a{lane}")),
                filter_subject: format!("bench.a{lane}"),
                ack_policy: consumer::AckPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot create a consumer: {e}"))?;
        consumers.push(consumer);
    }
    let system = JetStream {
        js,
        consumers: Arc::new(consumers),
        payload: bytes::Bytes::from_static(PAYLOAD.as_bytes()),
    };
    let figures = drive(system, total).await?;
    drop(server);
    Ok(figures)
}

/// JetStream: a context to publish with and a pull consumer per lane.
#[derive(Clone)]
struct JetStream {
    js: jetstream::Context,
    consumers: Arc<Vec<consumer::PullConsumer>>,
    payload: bytes::Bytes,
}

impl System for JetStream {
    async fn publish(&self, lane: u64) -> anyhow::Result<()> {
        self.js
            .publish(format!("bench.a{lane}"), self.payload.clone())
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?
            .await
            .map_err(|e| anyhow::anyhow!("publish acknowledgement: {e}"))?;
        Ok(())
    }

    async fn take_and_ack(&self, lane: u64) -> anyhow::Result<u64> {
        let mut batch = self.consumers[lane as usize]
            .fetch()
            .max_messages(2000)
            .expires(Duration::from_millis(50))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
        let (mut last, mut count) = (None, 0);
        while let Some(message) = batch.next().await {
            last = Some(message.map_err(|e| anyhow::anyhow!("fetch: {e}"))?);
            count += 1;
        }
        if let Some(last) = last {
            last.double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(count)
    }
}
