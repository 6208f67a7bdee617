//! The supervisor and health loop: state transitions, restart backoff and
//! its reset on tokio's paused clock (no sleeping), and a real process that
//! dies being restarted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_runtime::backoff::{Backoff, STABLE_PERIOD};
use cortex_runtime::health::{Check, HealthSettings, HealthState, Probe};
use cortex_runtime::process::{LaunchError, Launcher, LocalLauncher, Running};
use cortex_runtime::store::BoxFuture;
use cortex_runtime::supervisor::{ReplicaSpec, Report, Reporter, run_replica};
use tokio::sync::watch;
use tokio::time::Instant;

/// Processes that live for scripted durations (forever when the script is out).
struct ScriptedLauncher {
    lifetimes: Mutex<VecDeque<Duration>>,
    launches: Mutex<Vec<Instant>>,
}

struct ScriptedProcess {
    lifetime: Option<Duration>,
}

impl Launcher for ScriptedLauncher {
    fn launch(&self) -> BoxFuture<'_, Result<Box<dyn Running>, LaunchError>> {
        Box::pin(async move {
            self.launches.lock().unwrap().push(Instant::now());
            let lifetime = self.lifetimes.lock().unwrap().pop_front();
            Ok(Box::new(ScriptedProcess { lifetime }) as Box<dyn Running>)
        })
    }
}

impl Running for ScriptedProcess {
    fn wait(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match self.lifetime {
                Some(d) => {
                    tokio::time::sleep(d).await;
                    "exit status: 1".to_string()
                }
                None => std::future::pending().await,
            }
        })
    }
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn pid(&self) -> Option<u32> {
        Some(4242)
    }
}

/// A check whose answer the test flips.
struct Switch(AtomicBool);

impl Probe for Switch {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let ok = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err("connection refused".to_string())
            }
        })
    }
}

fn spec(threshold: u32, backoff: Backoff) -> ReplicaSpec {
    ReplicaSpec {
        agent: "triage".into(),
        replica: 0,
        health: HealthSettings {
            check: Some(Check::Tcp { port: 1 }),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failure_threshold: threshold,
        },
        backoff,
    }
}

/// Every report a replica loop sent, with the (paused-clock) instant it came.
type Reports = Arc<Mutex<Vec<(Instant, Report)>>>;

fn recorder() -> (Reporter, Reports) {
    let reports: Reports = Arc::default();
    let sink = reports.clone();
    (
        Arc::new(move |r| sink.lock().unwrap().push((Instant::now(), r))),
        reports,
    )
}

/// Runs one replica (threshold 3, [`BACKOFF`], no check) with `launcher`
/// for `time` on the paused clock, then stops it; what it reported.
async fn run_for(launcher: Arc<dyn Launcher>, time: Duration) -> Reports {
    let (report, reports) = recorder();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_replica(
        spec(3, BACKOFF),
        launcher,
        None,
        report,
        stop_rx,
    ));
    tokio::time::sleep(time).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    reports
}

fn states(reports: &Mutex<Vec<(Instant, Report)>>) -> Vec<HealthState> {
    reports
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| r.state)
        .collect()
}

const BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    multiplier: 2.0,
    max: Duration::from_secs(8),
};

#[tokio::test(start_paused = true)]
async fn checks_move_a_replica_through_healthy_degraded_unhealthy_and_a_restart() {
    let launcher = Arc::new(ScriptedLauncher {
        lifetimes: Mutex::default(),
        launches: Mutex::default(),
    });
    let probe = Arc::new(Switch(AtomicBool::new(true)));
    let (report, reports) = recorder();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_replica(
        spec(3, BACKOFF),
        launcher.clone(),
        Some(probe.clone()),
        report,
        stop_rx,
    ));

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        states(&reports),
        [HealthState::Starting, HealthState::Healthy]
    );
    probe.0.store(false, Ordering::SeqCst);
    // Checks every 10 s ± 10 %: the first failure degrades, the third makes it unhealthy.
    // Checks at ~1 s, then every 9–11 s: failures land in 9.9–12.1 s,
    // 18.9–23.1 s and 27.9–34.1 s; look between them.
    tokio::time::sleep(Duration::from_secs(11)).await; // t = 16 s
    assert_eq!(states(&reports).last(), Some(&HealthState::Degraded));
    tokio::time::sleep(Duration::from_millis(9_500)).await; // t = 25.5 s
    assert_eq!(
        states(&reports).last(),
        Some(&HealthState::Degraded),
        "two failures are still degraded"
    );
    tokio::time::sleep(Duration::from_millis(14_500)).await; // t = 40 s
    let all = states(&reports);
    assert_eq!(
        &all[2..],
        [
            HealthState::Degraded,
            HealthState::Unhealthy,
            HealthState::Restarting,
            HealthState::Starting
        ],
        "unhealthy restarts the process after the first backoff delay (1 s)"
    );
    let restarting = reports.lock().unwrap()[4].1.clone();
    assert!(
        restarting
            .detail
            .contains("unhealthy after 3 failed checks (connection refused)"),
        "{}",
        restarting.detail
    );
    assert!(
        restarting.detail.contains("restarting in 1000 ms"),
        "{}",
        restarting.detail
    );
    assert_eq!(restarting.restarts, 1);
    probe.0.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        states(&reports).last(),
        Some(&HealthState::Healthy),
        "a passing check heals it"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(states(&reports).last(), Some(&HealthState::Stopped));
    assert_eq!(launcher.launches.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_exponentially_up_to_the_cap_and_start_over_after_a_stable_run() {
    // Six quick crashes, then a run longer than the stable period, then a crash.
    let mut lifetimes: VecDeque<Duration> =
        std::iter::repeat_n(Duration::from_millis(10), 6).collect();
    lifetimes.push_back(STABLE_PERIOD + Duration::from_secs(1));
    lifetimes.push_back(Duration::from_millis(10));
    let launcher = Arc::new(ScriptedLauncher {
        lifetimes: Mutex::new(lifetimes),
        launches: Mutex::default(),
    });
    let reports = run_for(launcher.clone(), Duration::from_secs(200)).await;

    let launches = launcher.launches.lock().unwrap().clone();
    let gaps: Vec<u64> = launches
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    // Each gap is the process's lifetime plus the backoff delay.
    assert_eq!(
        &gaps[..8],
        [
            1_010,
            2_010,
            4_010,
            8_010,
            8_010,
            8_010,
            61_000 + 1_000,
            2_010
        ],
        "1 s, 2 s, 4 s, then capped at 8 s; after a run of 61 s the sequence starts over (1 s, then 2 s)"
    );
    let details: Vec<String> = reports
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, r)| r.state == HealthState::Restarting)
        .map(|(_, r)| r.detail.clone())
        .take(2)
        .collect();
    assert_eq!(details[0], "exited (exit status: 1); restarting in 1000 ms");
    assert_eq!(details[1], "exited (exit status: 1); restarting in 2000 ms");
}

#[tokio::test(start_paused = true)]
async fn a_launch_failure_is_retried_with_backoff() {
    struct Broken(Mutex<u32>);
    impl Launcher for Broken {
        fn launch(&self) -> BoxFuture<'_, Result<Box<dyn Running>, LaunchError>> {
            *self.0.lock().unwrap() += 1;
            Box::pin(async {
                Err(LaunchError::retryable(
                    "cannot start agent: No such file or directory",
                ))
            })
        }
    }
    let launcher = Arc::new(Broken(Mutex::new(0)));
    let reports = run_for(launcher.clone(), Duration::from_millis(7_500)).await;
    assert_eq!(*launcher.0.lock().unwrap(), 4, "at 0, 1, 3 and 7 s");
    let first = reports.lock().unwrap()[0].1.clone();
    assert_eq!(first.state, HealthState::Restarting);
    assert!(
        first.detail.starts_with("cannot start agent"),
        "{}",
        first.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_process_that_dies_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = Arc::new(LocalLauncher {
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "echo started $CORTEX_AGENT_NAME; sleep 0.2; exit 3".into(),
        ],
        env: vec![("CORTEX_AGENT_NAME".into(), "triage".into())],
        log: dir.path().join("logs/triage-0.log"),
        cwd: dir.path().to_path_buf(),
    });
    let (report, reports) = recorder();
    let (stop, stop_rx) = watch::channel(false);
    let quick = Backoff {
        initial: Duration::from_millis(100),
        multiplier: 2.0,
        max: Duration::from_secs(1),
    };
    let task = tokio::spawn(run_replica(spec(3, quick), launcher, None, report, stop_rx));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logged = || {
        std::fs::read_to_string(dir.path().join("logs/triage-0.log"))
            .unwrap_or_default()
            .matches("started triage")
            .count()
    };
    // Three starts, and the third process has written its line (a start is
    // reported when it is spawned, before it prints).
    while states(&reports)
        .iter()
        .filter(|s| **s == HealthState::Starting)
        .count()
        < 3
        || logged() < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not restarted: {:?}",
            states(&reports)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    let reports = reports.lock().unwrap();
    let pids: std::collections::BTreeSet<u32> = reports.iter().filter_map(|(_, r)| r.pid).collect();
    assert!(pids.len() >= 3, "each restart is a new process: {pids:?}");
    let died = reports
        .iter()
        .find(|(_, r)| r.state == HealthState::Restarting)
        .expect("a restart");
    assert!(
        died.1.detail.starts_with("exited (exit status: 3)"),
        "{}",
        died.1.detail
    );
    let log = std::fs::read_to_string(dir.path().join("logs/triage-0.log")).unwrap();
    assert!(
        log.matches("started triage").count() >= 3,
        "stdout goes to the replica's log: {log}"
    );
}

/// Regression: a spawn error no retry can mend (a NUL in the environment)
/// restart-looped. It is reported once, as `failed`, and not retried.
#[tokio::test(start_paused = true)]
async fn a_launch_that_can_never_work_is_reported_once_and_not_retried() {
    struct Impossible(Mutex<u32>);
    impl Launcher for Impossible {
        fn launch(&self) -> BoxFuture<'_, Result<Box<dyn Running>, LaunchError>> {
            *self.0.lock().unwrap() += 1;
            Box::pin(async {
                Err(LaunchError::permanent(
                    "cannot start agent: nul byte found in provided data",
                ))
            })
        }
    }
    let launcher = Arc::new(Impossible(Mutex::new(0)));
    let reports = run_for(launcher.clone(), Duration::from_secs(600)).await;
    assert_eq!(*launcher.0.lock().unwrap(), 1, "started once, never again");
    assert_eq!(
        states(&reports),
        [HealthState::Failed, HealthState::Stopped]
    );
    let failed = reports.lock().unwrap()[0].1.detail.clone();
    assert!(
        failed.contains("nul byte") && failed.contains("not retried"),
        "{failed}"
    );
}

/// The same with a real process: the environment holds a NUL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_the_environment_fails_the_launch_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = LocalLauncher {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "exit 0".into()],
        env: vec![("FLAG".into(), "on\0off".into())],
        log: dir.path().join("logs/triage-0.log"),
        cwd: dir.path().to_path_buf(),
    };
    let error = match launcher.launch().await {
        Err(e) => e,
        Ok(_) => panic!("a NUL in the environment cannot be passed"),
    };
    assert!(error.permanent, "{error}");
    assert!(error.message.contains("nul byte"), "{error}");
}

/// An agent that ignores SIGTERM is killed once the grace period is over
/// (paused clock: no waiting), and one that honours it ends by it.
#[tokio::test(start_paused = true)]
async fn stopping_escalates_from_sigterm_to_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let launch = |script: &str| LocalLauncher {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.to_string()],
        env: vec![("READY".into(), ready.display().to_string())],
        log: dir.path().join("logs/agent-0.log"),
        cwd: dir.path().to_path_buf(),
    };
    for (script, ended_by) in [
        (
            "trap '' TERM; touch \"$READY\"; while :; do sleep 0.05; done",
            "signal: 9",
        ),
        (
            "touch \"$READY\"; while :; do sleep 0.05; done",
            "signal: 15",
        ),
    ] {
        let _ = std::fs::remove_file(&ready);
        let mut process = launch(script).launch().await.expect("launch");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the script never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        process.stop().await;
        let how = process.wait().await;
        assert!(
            how.contains(ended_by),
            "{script}: ended by {how}, not {ended_by}"
        );
    }
}

/// Processes a previous run left (recorded in the store with their start
/// time) are stopped with their whole process group before new agents
/// start; a record whose process is gone, or whose pid now belongs to
/// another process, is only forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_a_previous_run_left_are_stopped_with_their_group() {
    use cortex_runtime::leftovers;
    use cortex_runtime::store::{Op, SqliteStore, Store};
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let grandchild_file = dir.path().join("grandchild");
    let mut leader = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 300 & echo $! > \"$OUT\"; wait"])
        .env("OUT", &grandchild_file)
        .process_group(0)
        .spawn()
        .expect("spawn a leftover");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let grandchild: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&grandchild_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no grandchild");
        std::thread::sleep(Duration::from_millis(10));
    };
    let store = SqliteStore::open(&dir.path().join("state.db")).expect("open");
    let me = std::process::id();
    store
        .write(vec![
            leftovers::record("ghost", 0, Some(leader.id())),
            // This test's own pid with another start time: a reused pid.
            Op::Meta {
                key: leftovers::key("reused", 0),
                value: Some(format!("{me} 1")),
            },
            Op::Meta {
                key: leftovers::key("gone", 0),
                value: Some("999999999 1".into()),
            },
        ])
        .await
        .expect("record");
    let stopped = leftovers::stop(&store).await.expect("stop leftovers");
    assert_eq!(stopped, [format!("ghost/0 (pid {})", leader.id())]);
    let status = leader.wait().expect("reaped");
    assert!(!status.success(), "stopped by a signal: {status:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leftovers::start_time(grandchild).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the group's other process survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        leftovers::start_time(me).is_some(),
        "a reused pid is left alone"
    );
    assert!(
        store
            .meta_prefix(leftovers::PREFIX)
            .await
            .expect("records")
            .is_empty(),
        "every record is forgotten"
    );
}
