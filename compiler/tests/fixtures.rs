//! Golden tests over `fixtures/`: every `invalid/<case>` must produce,
//! as `cortex validate` reports it ([`check`]), exactly one diagnostic whose code is the case's prefix (`cx0201-…` →
//! `CX0201`), at the line its `at` file names (`agents.yaml:27`, written
//! by hand from reading the input, never blessed), rendered exactly as
//! `expected.txt` says;
//! every `valid/<case>` must compile cleanly and explain exactly as its
//! `expected.txt` says. `CORTEX_BLESS=1 cargo test` rewrites the goldens.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use cortex_compiler::diagnostic::render::render_text;
use cortex_compiler::explain::explain;
use cortex_compiler::{Options, WorkTree, check, compile};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(kind);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn options(dir: &Path) -> Options {
    let args = std::fs::read_to_string(dir.join("args")).unwrap_or_default();
    let mut words = args.split_whitespace();
    let mut options = Options::default();
    while let Some(word) = words.next() {
        match word {
            "--env" => options.env = words.next().map(str::to_string),
            other => panic!("{}: unknown argument {other} in args", dir.display()),
        }
    }
    options
}

/// Compares `actual` with `dir/expected.txt`, or writes it when blessing.
fn golden(dir: &Path, actual: &str, failures: &mut Vec<String>) {
    let path = dir.join("expected.txt");
    if std::env::var_os("CORTEX_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff = similar_lines(&expected, actual);
        failures.push(format!(
            "{}: output differs from expected.txt\n{diff}",
            dir.display()
        ));
    }
}

fn similar_lines(expected: &str, actual: &str) -> String {
    let mut out = String::new();
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i).copied(), a.get(i).copied());
        if x != y {
            let _ = writeln!(
                out,
                "  line {}:\n    expected: {}\n    actual:   {}",
                i + 1,
                x.unwrap_or("<none>"),
                y.unwrap_or("<none>")
            );
        }
    }
    out
}

#[test]
fn invalid_fixtures_report_their_one_defect() {
    let cases = fixtures("invalid");
    assert!(cases.len() >= 40, "only {} invalid fixtures", cases.len());
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let expected_code = name.split('-').next().expect("code prefix").to_uppercase();
        let source = WorkTree::open(dir).expect("open fixture");
        let result = check(&source, &options(dir));
        let diags: Vec<_> = result.diagnostics.iter().collect();
        if diags.len() != 1 {
            let codes: Vec<String> = diags
                .iter()
                .map(|d| format!("{} {}", d.code, d.message))
                .collect();
            failures.push(format!(
                "{name}: expected exactly one diagnostic, got {}: {codes:#?}",
                diags.len()
            ));
            continue;
        }
        let d = diags[0];
        if d.code.0 != expected_code {
            failures.push(format!(
                "{name}: expected {expected_code}, got {} ({})",
                d.code, d.message
            ));
        }
        let Some(span) = &d.span else {
            failures.push(format!("{name}: the diagnostic has no position"));
            continue;
        };
        // The position is the defect's, as the case's `at` file says.
        let expected_at = std::fs::read_to_string(dir.join("at"))
            .unwrap_or_else(|_| panic!("{name}: no `at` file (FILE:LINE of the defect)"));
        let actual_at = format!("{}:{}", span.file, span.line);
        if expected_at.trim() != actual_at {
            failures.push(format!(
                "{name}: the diagnostic is at {actual_at}, the defect at {}",
                expected_at.trim()
            ));
        }
        let mut actual = format!(
            "{} {} {}:{}:{}\n\n",
            d.code, d.severity, span.file, span.line, span.col
        );
        actual.push_str(&render_text(&result.diagnostics, &result.files, "", false));
        golden(dir, &actual, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid fixtures failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_fixtures_explain_as_expected() {
    let cases = fixtures("valid");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for dir in &cases {
        let source = WorkTree::open(dir).expect("open fixture");
        let result = compile(&source, &options(dir));
        if !result.diagnostics.is_empty() {
            failures.push(format!(
                "{}: expected no diagnostics:\n{}",
                dir.display(),
                render_text(&result.diagnostics, &result.files, "", false)
            ));
            continue;
        }
        let resolved = result.resolved.expect("resolved");
        let actual: String = resolved
            .specs
            .iter()
            .map(|s| explain(s, "") + "\n")
            .collect();
        golden(dir, &actual, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn examples_validate_in_every_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for (example, envs) in [
        ("support-desk", &[None, Some("staging"), Some("prod")][..]),
        ("hello", &[None, Some("prod")][..]),
    ] {
        let source = WorkTree::open(root.join(example)).expect("open example");
        for env in envs {
            let result = compile(
                &source,
                &Options {
                    env: env.map(str::to_string),
                },
            );
            assert!(
                result.diagnostics.is_empty(),
                "{example} {env:?}:\n{}",
                render_text(&result.diagnostics, &result.files, "", false)
            );
        }
    }
}

#[test]
fn generated_benchmark_projects_validate() {
    use cortex_testkit::generate::{Shape, memory_source};
    let source = memory_source(Shape {
        agents: 60,
        workflows: 12,
        tasks: 7,
    });
    for env in [None, Some("prod".to_string())] {
        let result = compile(&source, &Options { env });
        assert!(
            result.diagnostics.is_empty(),
            "{}",
            render_text(&result.diagnostics, &result.files, "", false)
        );
        let resolved = result.resolved.expect("resolved");
        assert_eq!(
            resolved
                .specs
                .iter()
                .filter(|s| s.kind == cortex_compiler::Kind::Agent)
                .count(),
            60
        );
    }
}
