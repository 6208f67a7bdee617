//! Hostile input: nothing a user can put in a file makes the compiler
//! panic, hang or read outside the project; each case is a clear error.

use cortex_compiler::diagnostic::codes;
use cortex_compiler::source::MAX_FILE_BYTES;
use cortex_compiler::{Compilation, MemorySource, Options, compile};
use proptest::prelude::*;

const PROJECT: &str = "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: { name: hostile }\nspec:\n  include: [\"specs/*.yaml\"]\n";

fn compile_with(spec: impl Into<Vec<u8>>) -> Compilation {
    let source = MemorySource::new()
        .with("cortex.yaml", PROJECT)
        .with("specs/a.yaml", spec);
    compile(&source, &Options::default())
}

fn codes_of(result: &Compilation) -> Vec<&'static str> {
    result.diagnostics.iter().map(|d| d.code.0).collect()
}

#[test]
fn a_file_over_the_size_limit_is_refused_without_being_parsed() {
    let big = "# padding\n".repeat(MAX_FILE_BYTES as usize / 10 + 1);
    let result = compile_with(big);
    assert_eq!(codes_of(&result), vec![codes::FILE_TOO_LARGE.0]);
    let message = &result.diagnostics.iter().next().unwrap().message;
    assert!(
        message.contains("specs/a.yaml") && message.contains("limit"),
        "{message}"
    );
}

#[test]
fn billion_laughs_is_an_error_not_an_allocation() {
    let mut text = String::from(
        "apiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: { name: lol }\nspec:\n  schema:\n    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for level in 1..12 {
        let prev = level - 1;
        text.push_str(&format!(
            "    l{level}: &l{level} [{}]\n",
            vec![format!("*l{prev}"); 10].join(", ")
        ));
    }
    let result = compile_with(text);
    assert_eq!(codes_of(&result), vec![codes::ALIAS_LIMIT.0]);
}

#[test]
fn deep_flow_nesting_is_an_error() {
    let text = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let result = compile_with(text);
    assert!(result.diagnostics.has_errors());
}

#[test]
fn deep_block_nesting_is_an_error() {
    let mut text = String::from(
        "apiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: { name: deep }\nspec:\n  schema:\n",
    );
    for depth in 0..200 {
        text.push_str(&format!("{}k:\n", "  ".repeat(depth + 2)));
    }
    let result = compile_with(text);
    assert_eq!(codes_of(&result), vec![codes::UNSUPPORTED_YAML.0]);
}

#[test]
fn invalid_utf8_names_the_file() {
    let result = compile_with(b"apiVersion: \xff\xfe\n".to_vec());
    assert_eq!(codes_of(&result), vec![codes::NOT_UTF8.0]);
    assert!(
        result
            .diagnostics
            .iter()
            .next()
            .unwrap()
            .message
            .contains("specs/a.yaml")
    );
}

#[test]
fn absolute_and_parent_includes_are_refused() {
    for pattern in ["/etc/*.yaml", "../*.yaml", "specs/../../x.yaml"] {
        let project = PROJECT.replace("specs/*.yaml", pattern);
        let source = MemorySource::new().with("cortex.yaml", project);
        let result = compile(&source, &Options::default());
        assert_eq!(codes_of(&result), vec![codes::OUTSIDE_ROOT.0], "{pattern}");
    }
}

#[test]
fn a_missing_project_file_is_a_diagnostic() {
    let result = compile(&MemorySource::new(), &Options::default());
    assert_eq!(codes_of(&result), vec![codes::FILE_UNREADABLE.0]);
    assert!(result.resolved.is_none());
}

#[test]
fn a_runaway_template_runs_out_of_fuel() {
    let spec = "apiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: { name: t }\nspec:\n  retention: \"{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\"\n";
    let result = compile_with(spec);
    assert_eq!(codes_of(&result), vec![codes::TEMPLATE_EVAL.0]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the compiler.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = compile_with(text);
    }

    /// YAML-ish fragments (the characters that matter to the parser) never
    /// panic it either.
    #[test]
    fn yaml_shaped_noise_never_panics(text in "[a-z:{}\\[\\]&*!|>'\"#%@,\\- \n$]{0,300}") {
        let spec = format!("apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: {{ name: a }}\nspec:\n  {text}");
        let _ = compile_with(spec);
    }
}
