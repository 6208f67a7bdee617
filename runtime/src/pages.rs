//! Transparent huge pages: on for the short commands, off for the daemons.
//!
//! The allocator (mimalloc) asks the kernel for transparent huge pages on
//! its memory. A `cortex build` touches about 150 MiB once and exits: in
//! 2 MiB pages it takes some 760 page faults instead of 26,700. A daemon
//! (`cortex up`, `cortex serve`) lives on after a compile has freed its
//! memory, and freed memory inside a huge page stays resident.
//!
//! So every command starts with huge pages off ([`start`], the first thing
//! `main` does, before anything is allocated: a huge page touched early
//! would stay), and the short ones turn them back on once their command
//! line is read ([`use_huge_pages`]). The agents and workflow commands a
//! daemon starts get the setting cortex itself was started with
//! ([`restore_in_child`]), not the daemon's.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The setting cortex was started with, as [`start`] found it.
static STARTED_WITH: AtomicU8 = AtomicU8::new(UNKNOWN);
/// [`start`] has not run, or the kernel has no such setting.
const UNKNOWN: u8 = 0;
/// Huge pages were allowed.
const ALLOWED: u8 = 1;
/// Whoever started cortex had turned them off.
const DISABLED: u8 = 2;

/// Whether this process now runs without huge pages.
static SMALL_PAGES: AtomicBool = AtomicBool::new(false);

/// Turns transparent huge pages off for this process, remembering what it
/// was started with (Linux; elsewhere, or on a kernel without the setting,
/// nothing changes). Call it first in `main`: it allocates nothing.
pub fn start() {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{disable_transparent_huge_pages, transparent_huge_pages_are_disabled};
        match transparent_huge_pages_are_disabled() {
            Ok(true) => {
                STARTED_WITH.store(DISABLED, Ordering::SeqCst);
                SMALL_PAGES.store(true, Ordering::SeqCst);
            }
            Ok(false) => {
                if disable_transparent_huge_pages(true).is_ok() {
                    STARTED_WITH.store(ALLOWED, Ordering::SeqCst);
                    SMALL_PAGES.store(true, Ordering::SeqCst);
                }
            }
            Err(_) => {}
        }
    }
}

/// For a short command: back to the setting cortex was started with, huge
/// pages unless whoever started it had turned them off.
pub fn use_huge_pages() {
    #[cfg(target_os = "linux")]
    if STARTED_WITH.load(Ordering::SeqCst) == ALLOWED
        && rustix::thread::disable_transparent_huge_pages(false).is_ok()
    {
        SMALL_PAGES.store(false, Ordering::SeqCst);
    }
}

/// Whether this process runs without transparent huge pages now: a daemon
/// says so when it does not (a kernel without the setting).
pub fn small_pages() -> bool {
    SMALL_PAGES.load(Ordering::SeqCst)
}

/// In a child between `fork` and `exec`: gives the child the setting cortex
/// was started with. One system call at most, no allocation (safe to run
/// in `pre_exec`).
#[cfg(target_os = "linux")]
pub(crate) fn restore_in_child() -> std::io::Result<()> {
    if STARTED_WITH.load(Ordering::SeqCst) == ALLOWED {
        rustix::thread::disable_transparent_huge_pages(false)?;
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{small_pages, start, use_huge_pages};

    /// `THP_enabled` of this process's status: 0 once turned off.
    fn huge_pages_allowed() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let value = status
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .expect("a THP_enabled line (Linux 5.0 and later)");
        value.trim() == "1"
    }

    #[test]
    fn every_command_starts_without_huge_pages_and_a_short_one_gets_back_what_it_started_with() {
        let started_with = huge_pages_allowed();
        start();
        assert!(!huge_pages_allowed());
        assert!(small_pages());
        use_huge_pages();
        assert_eq!(huge_pages_allowed(), started_with);
        assert_eq!(small_pages(), !started_with);
    }
}
