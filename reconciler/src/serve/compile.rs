//! Compiling a commit for `serve`, on a thread of its own that ends with
//! the compile. A large project's compile allocates hundreds of MiB, most
//! of it freed before it ends. On a pooled blocking thread, which then sits
//! idle, the allocator (mimalloc) kept those pages with the thread's heap
//! for as long as the thread lived: `serve` of the 2,000-agent project sat
//! at 155 MB instead of 114 MB (before huge pages were turned off; see
//! docs/serve.md).

use std::path::PathBuf;

use cortex_compiler::Options;

use crate::desired::{DesiredError, desired_at};
use crate::{At, Desired};

/// Compiles `project` at `at` on a thread of its own.
pub async fn on_its_thread(
    project: PathBuf,
    at: At,
    options: Options,
) -> Result<Result<Desired, DesiredError>, String> {
    let (done, compiled) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cortex-compile".into())
        .spawn(move || {
            let _ = done.send(desired_at(&project, &at, &options));
        })
        .map_err(|e| format!("cannot start the compile: {e}"))?;
    compiled
        .await
        .map_err(|_| "the compile stopped without an answer".to_string())
}
