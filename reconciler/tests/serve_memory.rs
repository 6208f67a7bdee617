//! `cortex serve` gives back the memory a compile freed: after a reconcile
//! that compiled, the release the binary set (mimalloc's collect in
//! `cortex`; here a counter) runs on every thread of rayon's pool and on
//! the thread that asked. Its own test binary: the release is set once per
//! process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_reconciler::serve::Serve;
use cortex_testkit::git::Repo;
use cortex_testkit::serve::{ServeApi, remote_options, small_project, small_specs};
use git2::Repository;

/// How many times a thread ran the release.
static RELEASES: AtomicUsize = AtomicUsize::new(0);

fn count_release() {
    RELEASES.fetch_add(1, Ordering::SeqCst);
}

/// Pushes the work repository's `main` to the remote.
fn push(work: &Repo, remote: &std::path::Path) {
    let repo = Repository::open(work.path()).expect("open");
    repo.remote_anonymous(remote.to_str().expect("utf-8"))
        .expect("remote")
        .push(&["+refs/heads/main:refs/heads/main"], None)
        .expect("push");
}

/// Waits until the releases counted reach `at_least` (two minutes at most:
/// the deadline only stops a hung run); the count.
async fn releases_reach(at_least: usize) -> usize {
    for _ in 0..12_000 {
        let count = RELEASES.load(Ordering::SeqCst);
        if count >= at_least {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the release ran {} times, not {at_least}",
        RELEASES.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reconcile_that_compiles_gives_memory_back_on_every_thread() {
    assert!(cortex_compiler::memory::set_release(count_release));
    let every_thread = rayon::current_num_threads() + 1;

    let remote = tempfile::tempdir().unwrap();
    Repository::init_bare(remote.path()).expect("bare");
    let work = Repo::new();
    work.write("cortex.yaml", &small_project("served", "served"));
    work.write("specs.yaml", &small_specs("1d"));
    let first = work.commit("first").to_string();
    push(&work, remote.path());

    let state = tempfile::tempdir().unwrap();
    let mut serve = Serve::new(remote_options(
        remote.path(),
        state.path(),
        Duration::from_millis(200),
    ));
    let url = serve.listen().await.expect("listens");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve.run(stopped));
    let api = ServeApi::operator(&url, state.path());

    api.until("the first commit synced", |s| {
        s["syncedCommit"] == first.as_str()
    })
    .await;
    let after_first = releases_reach(every_thread).await;

    // A new commit compiles again, and memory is given back again.
    work.write("specs.yaml", &small_specs("2d"));
    let second = work.commit("second").to_string();
    push(&work, remote.path());
    api.until("the second commit synced", |s| {
        s["syncedCommit"] == second.as_str()
    })
    .await;
    releases_reach(after_first + every_thread).await;

    let _ = stop.send(true);
    task.await.unwrap().expect("stops cleanly");
}
