//! Compiling a commit for `serve`, on a thread of its own that also frees
//! what the compile made. A large project's compile allocates hundreds of
//! MiB; the allocator (mimalloc) keeps pages with the heap of the thread
//! that allocated them. Compiled on a pooled blocking thread, which then
//! sat idle, the freed pages stayed resident; compiled on a thread that
//! ended at once, what serve dropped later was freed into an abandoned heap
//! and given back only now and then (`serve` of the 2,000-agent project
//! settled at 84–114 MiB, bimodal). Here the compiled project goes back to
//! its own thread when serve drops it, is freed there, and the thread ends.
//! The compile's parallel parts ran on rayon's workers, which keep the pages
//! they freed while they sit idle: after a reconcile that compiled (see
//! `Serve::reconcile`), and again here once a compiled project is freed,
//! every thread gives back what it keeps ([`cortex_compiler::memory`]).

use std::path::PathBuf;
use std::sync::mpsc;

use cortex_compiler::Options;

use crate::desired::{DesiredError, desired_at};
use crate::{At, Desired};

/// A compiled project; dropping it frees it on the thread that made it.
pub struct Compiled {
    desired: Option<Desired>,
    home: mpsc::Sender<Desired>,
}

impl std::ops::Deref for Compiled {
    type Target = Desired;

    fn deref(&self) -> &Desired {
        match &self.desired {
            Some(desired) => desired,
            // Taken only by `drop`, after which nothing can deref.
            None => unreachable!("a compiled project is taken only when dropped"),
        }
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(desired) = self.desired.take() {
            // Its thread waits for it (were it gone, it is freed here).
            let _ = self.home.send(desired);
        }
    }
}

/// Compiles `project` at `at` on a thread of its own, which waits for the
/// result to be dropped and frees it.
pub async fn on_its_thread(
    project: PathBuf,
    at: At,
    options: Options,
) -> Result<Result<Compiled, DesiredError>, String> {
    let (done, compiled) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cortex-compile".into())
        .spawn(move || {
            let (home, back) = mpsc::channel();
            let made = desired_at(&project, &at, &options).map(|desired| Compiled {
                desired: Some(desired),
                home,
            });
            if done.send(made).is_ok() {
                // Freed here, on the thread that allocated it; the parts the
                // workers allocated go back to their pages.
                drop(back.recv());
                cortex_compiler::memory::release_on_every_thread();
            }
        })
        .map_err(|e| format!("cannot start the compile: {e}"))?;
    compiled
        .await
        .map_err(|_| "the compile stopped without an answer".to_string())
}
