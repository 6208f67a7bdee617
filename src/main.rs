//! The `cortex` command line: parse flags, call the crates, print.

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// The compiler allocates many small values (specs, JSON, YAML); mimalloc
/// measured 20–30% faster than the system allocator on `cortex build`.
/// Built without transparent huge pages (`no_thp`): with them, memory a
/// compile freed stayed resident in 2 MiB pages, and `cortex serve` of the
/// 2,000-agent project sat at 117 MB instead of 94 MB (docs/serve.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives back what mimalloc keeps for the calling thread: pages a compile
/// freed, held by a worker that then sits idle (`cortex serve` calls it on
/// every thread after a compile, through [`cortex_compiler::memory`]).
#[allow(unsafe_code)]
fn release_kept_memory() {
    // SAFETY: `mi_collect` has no preconditions: it may be called at any
    // time from any thread, and only frees memory no block is using.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> ExitCode {
    cortex_compiler::memory::set_release(release_kept_memory);
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let _ = output::error_line(&format!("{err:#}"));
            ExitCode::from(1)
        }
    }
}
