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

/// A value nested `levels` collections deep, in one of the four
/// constructs, indented to sit under a key at `indent` spaces.
fn nested(construct: &str, levels: usize, indent: usize) -> String {
    match construct {
        "block sequence" => format!("\n{}{}1", " ".repeat(indent), "- ".repeat(levels)),
        "block mapping" => {
            let mut text = String::new();
            for level in 0..levels {
                let value = if level + 1 == levels { " 1" } else { "" };
                text.push_str(&format!(
                    "\n{}k:{value}",
                    " ".repeat(indent + 2 + 2 * level)
                ));
            }
            text
        }
        "flow sequence" => format!(" {}1{}", "[".repeat(levels), "]".repeat(levels)),
        "flow mapping" => format!(" {}1{}", "{a: ".repeat(levels), "}".repeat(levels)),
        other => unreachable!("{other}"),
    }
}

const CONSTRUCTS: [&str; 4] = [
    "block sequence",
    "block mapping",
    "flow sequence",
    "flow mapping",
];

/// Regression: a block sequence nested 5,000 levels deep (`- - - … 1`,
/// 10 KB) overflowed the stack (exit 134, no diagnostic). The limit holds
/// for every construct, in an agent's free-form `config`, in a topic's
/// schema and as a whole document, before anything recursive runs: at the
/// limit it compiles, one past it is CX0113 naming the limit, and 5,000
/// levels is the same diagnostic.
#[test]
fn nesting_is_bounded_for_every_construct_at_the_limit_and_past_it() {
    use cortex_compiler::MAX_YAML_DEPTH as MAX_DEPTH;
    // Open collections around the value: the document, `spec`, and the
    // mapping that holds `v`.
    type Document = Box<dyn Fn(&str) -> String>;
    let places: [(&str, usize, Document); 3] = [
        (
            "an agent's config",
            3,
            Box::new(|value: &str| {
                format!(
                    "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: {{ name: deep }}\nspec:\n  image: x\n  config:\n    v:{value}\n"
                )
            }),
        ),
        (
            "a topic's schema",
            3,
            Box::new(|value: &str| {
                format!(
                    "apiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: {{ name: deep }}\nspec:\n  schema:\n    v:{value}\n"
                )
            }),
        ),
        (
            "a whole document",
            0,
            Box::new(|value: &str| value.trim_start().to_string()),
        ),
    ];
    for (place, around, document) in &places {
        for construct in CONSTRUCTS {
            let indent = if *around == 0 { 0 } else { 4 };
            // Indented block mappings reach the 4 MiB file limit near 2,000 levels.
            let far = if construct == "block mapping" {
                1_500
            } else {
                5_000
            };
            for (levels, allowed) in [
                (MAX_DEPTH - around, true),
                (MAX_DEPTH - around + 1, false),
                (far, false),
            ] {
                let result = compile_with(document(&nested(construct, levels, indent)));
                let too_deep = codes_of(&result).contains(&codes::UNSUPPORTED_YAML.0);
                assert_eq!(
                    too_deep,
                    !allowed,
                    "{construct} {levels} levels deep in {place}: {:?}",
                    result
                        .diagnostics
                        .iter()
                        .map(|d| d.message.clone())
                        .collect::<Vec<_>>()
                );
                if !allowed {
                    let message = &result.diagnostics.iter().next().unwrap().message;
                    assert!(message.contains(&MAX_DEPTH.to_string()), "{message}");
                }
            }
        }
    }
}

/// Regression: `spec.manifests` leading outside the project passed
/// `validate` (only `build` refused it). Every path check `build` makes,
/// `validate` makes.
#[test]
fn manifest_patterns_outside_the_project_fail_validation() {
    for pattern in ["../../../../etc/*.conf", "/etc/passwd", "k8s/../../x.yaml"] {
        let source = MemorySource::new().with(
            "cortex.yaml",
            format!("{PROJECT}  manifests: [\"{pattern}\"]\n"),
        );
        let result = compile(&source, &Options::default());
        assert!(
            codes_of(&result).contains(&codes::OUTSIDE_ROOT.0),
            "{pattern}: {:?}",
            codes_of(&result)
        );
    }
}

/// Regression: YAML scanner errors pointed where the scanner stopped. A
/// tab used as indentation is reported at the tab, with the hint that YAML
/// indents with spaces; an unclosed quote or bracket at its opening
/// character.
#[test]
fn yaml_syntax_errors_point_at_the_character_at_fault() {
    let head = "apiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata:\n  name: t\n";
    for (body, line, col, hint) in [
        ("spec:\n  retention: 3d\n\tordering: none\n", 7, 1, "spaces"),
        (
            "spec:\n  schema:\n    type: object\n \t  required: [a]\n",
            8,
            2,
            "spaces",
        ),
        ("spec:\n  retention: \"3d\n", 6, 14, "quote"),
        (
            "spec:\n  deadLetter: [a, b\n  retention: 3d\n",
            6,
            15,
            "`]`",
        ),
        ("spec: { retention: 3d\nordering: none\n", 5, 7, "`}`"),
    ] {
        let result = compile_with(format!("{head}{body}"));
        let d = result.diagnostics.iter().next().expect("a diagnostic");
        let span = d.span.as_ref().expect("a position");
        assert_eq!(
            (d.code.0, span.line, span.col),
            (codes::YAML_SYNTAX.0, line, col),
            "{body:?}: {}",
            d.message
        );
        assert!(
            d.help.iter().any(|h| h.contains(hint)),
            "{body:?}: {:?}",
            d.help
        );
    }
}

/// Anchors belong to their document: an alias to an anchor of an earlier
/// document in the same file is an error, one to its own document is not.
#[test]
fn an_alias_to_another_documents_anchor_is_unknown() {
    let topic = |name: &str, spec: &str| {
        format!(
            "apiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: {{ name: {name} }}\nspec: {spec}\n"
        )
    };
    let across = format!(
        "{}---\n{}",
        topic("a", "&s { retention: 3d }"),
        topic("b", "*s")
    );
    let result = compile_with(across);
    assert_eq!(codes_of(&result), vec![codes::YAML_SYNTAX.0]);
    let d = result.diagnostics.iter().next().unwrap();
    assert!(d.message.contains("unknown anchor"), "{}", d.message);
    assert_eq!(d.span.as_ref().map(|s| s.line), Some(9));
    let within = "apiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: { name: a }\nspec:\n  delivery: &d { maxAttempts: 3 }\n---\napiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: { name: b, labels: &l { x: y }, annotations: *l }\nspec: { retention: 3d }\n";
    let result = compile_with(within);
    assert!(!result.diagnostics.has_errors(), "{:?}", codes_of(&result));
}
