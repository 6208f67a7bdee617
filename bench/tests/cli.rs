//! The benchmark binary's own behaviour: what it refuses, and the HTTP
//! benchmark's two halves (a runtime and a load generator) talking.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cortex-bench"))
        .args(args)
        .output()
        .expect("run cortex-bench")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_http_benchmark_refuses_to_start_below_the_open_file_limit_it_needs() {
    // A soft limit may always be lowered; `exec` keeps it for cortex-bench.
    let out = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 1024 && exec \"$0\" runtime --http-agents 10000 --health-agents 0",
            env!("CARGO_BIN_EXE_cortex-bench"),
        ])
        .output()
        .expect("run cortex-bench under sh");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`ulimit -n` is 1024") && stderr.contains("ulimit -n 10"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing was measured: {}",
        text(&out.stdout)
    );
}

#[test]
fn the_http_benchmark_runs_in_two_halves_for_two_machines() {
    use std::io::{BufRead, BufReader};
    // The runtime half prints where it listens and the command to run.
    let mut runtime = Command::new(env!("CARGO_BIN_EXE_cortex-bench"))
        .args([
            "runtime",
            "--serve-for-load",
            "127.0.0.1:0",
            "--http-agents",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the runtime half");
    let mut lines = BufReader::new(runtime.stdout.take().expect("stdout")).lines();
    let _banner = lines.next().expect("a banner").expect("text");
    let command = lines.next().expect("the command").expect("text");
    let words: Vec<&str> = command.split_whitespace().collect();
    let after = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).expect(flag);
        words[i + 1].to_string()
    };
    let (url, token) = (after("--client-of"), after("--operator-token"));
    // The load generator half, as that command says, briefly.
    let out = bench(&[
        "runtime",
        "--client-of",
        &url,
        "--operator-token",
        &token,
        "--http-agents",
        "20",
        "--rate",
        "40",
        "--seconds",
        "1",
        "--senders",
        "agents",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let delivered = stdout
        .split("delivered ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("a delivered count");
    let (got, of) = delivered.split_once(" of ").expect("N of M");
    assert!(got == of && got != "0", "{stdout}");
    // Ctrl-C stops the runtime half cleanly.
    let pid = rustix::process::Pid::from_raw(runtime.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    assert!(runtime.wait().expect("exit").success());
}
