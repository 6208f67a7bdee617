//! Giving back memory that a compile freed, on every thread that worked on
//! it.
//!
//! An allocator may keep freed pages with the thread that used them:
//! mimalloc, which the `cortex` binary uses, does, and a rayon worker that
//! sits idle after a compile never goes back to its heap to let them go.
//! A long-lived process (`cortex serve`) then stays at its peak long after
//! the compile. The binary that chose the allocator says how one thread
//! gives back what it keeps ([`set_release`]); the daemon calls
//! [`release_on_every_thread`] when a compile and its garbage are gone.
//! Without a release set (tests, other binaries), nothing happens.

use std::sync::OnceLock;

/// How the calling thread gives back the memory its allocator keeps.
static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Sets how a thread gives back the memory its allocator keeps (the
/// binary's allocator's collect). The first setting holds; `false` when
/// one was set before.
pub fn set_release(release: fn()) -> bool {
    RELEASE.set(release).is_ok()
}

/// Runs the release set with [`set_release`] on every thread of rayon's
/// pool (each waits for its turn between jobs) and on the calling thread;
/// returns how many threads ran it (0 without a release).
pub fn release_on_every_thread() -> usize {
    let Some(release) = RELEASE.get().copied() else {
        return 0;
    };
    let pool = rayon::broadcast(|_| release()).len();
    release();
    pool + 1
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::thread::ThreadId;

    /// The threads that ran the release.
    static RAN_ON: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());

    fn note_thread() {
        RAN_ON
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(std::thread::current().id());
    }

    #[test]
    fn the_release_runs_once_on_each_pool_thread_and_the_caller() {
        assert!(super::set_release(note_thread));
        assert!(!super::set_release(|| {}), "the first release holds");
        let ran = super::release_on_every_thread();
        let threads = RAN_ON.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(ran, rayon::current_num_threads() + 1);
        assert_eq!(threads.len(), ran);
        let distinct: HashSet<ThreadId> = threads.iter().copied().collect();
        assert_eq!(distinct.len(), ran, "each thread once: {threads:?}");
        assert!(distinct.contains(&std::thread::current().id()));
    }
}
