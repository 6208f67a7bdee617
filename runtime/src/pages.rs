//! Transparent huge pages: on for the short commands, off for the daemons.
//!
//! The allocator (mimalloc) asks the kernel for transparent huge pages on
//! its memory. A `cortex build` touches about 120 MiB once and exits: in
//! 2 MiB pages it takes some 750 page faults instead of 26,000. A daemon
//! (`cortex up`, `cortex serve`) lives on after a compile has freed its
//! memory, and freed memory inside a huge page stays resident; those
//! commands call [`keep_small_pages`] first. The agents and workflow
//! commands they start get back the setting cortex itself was started
//! with ([`restore_in_child`]), not the daemon's.

use std::sync::atomic::{AtomicU8, Ordering};

/// What cortex was started with, recorded by [`keep_small_pages`].
static INHERITED: AtomicU8 = AtomicU8::new(NOT_CHANGED);
/// [`keep_small_pages`] has not changed the setting.
const NOT_CHANGED: u8 = 0;
/// Huge pages were allowed when cortex started; the daemon turned them off.
const WERE_ALLOWED: u8 = 1;

/// Turns transparent huge pages off for this process (Linux; elsewhere
/// nothing to do). Call it at the start of a long-running command, before
/// its threads allocate. An error (a kernel without the setting) is
/// returned for the caller to log; the daemon runs either way.
pub fn keep_small_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{disable_transparent_huge_pages, transparent_huge_pages_are_disabled};
        if !transparent_huge_pages_are_disabled()? {
            disable_transparent_huge_pages(true)?;
            INHERITED.store(WERE_ALLOWED, Ordering::SeqCst);
        }
    }
    Ok(())
}

/// In a child between `fork` and `exec`: gives the child the setting cortex
/// was started with, when [`keep_small_pages`] changed it. One system call,
/// no allocation (safe to run in `pre_exec`).
#[cfg(target_os = "linux")]
pub(crate) fn restore_in_child() -> std::io::Result<()> {
    if INHERITED.load(Ordering::SeqCst) == WERE_ALLOWED {
        rustix::thread::disable_transparent_huge_pages(false)?;
    }
    Ok(())
}
