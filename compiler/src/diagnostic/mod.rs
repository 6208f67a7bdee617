//! Diagnostics as data: what is wrong, where, and how to fix it.
//!
//! Problems in user input accumulate here; the compiler never stops at the
//! first one. Rendering lives in [`render`], one module per output format.

pub mod codes;
pub mod render;

use std::fmt;

use serde::Serialize;

use crate::span::Span;
pub use codes::Code;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The project cannot be compiled.
    Error,
    /// Suspicious but compiled.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A secondary place that explains the primary one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What this place has to do with the problem.
    pub message: String,
}

/// One problem found in the user's specs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// Stable code, e.g. `CX0201`; `cortex explain-code` describes it.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// One line saying what is wrong.
    pub message: String,
    /// Where it is wrong, when a place is known.
    pub span: Option<Span>,
    /// Text under the caret at `span`.
    pub label: Option<String>,
    /// JSON pointer of the value inside its document (e.g. `/spec/env/1/name`).
    pub pointer: Option<String>,
    /// Other places that explain it.
    pub labels: Vec<Label>,
    /// How to fix it.
    pub help: Option<String>,
    /// Extra context (e.g. a usage table).
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A new error with `code` and `message`.
    pub fn error(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, Severity::Error, message)
    }

    /// A new warning with `code` and `message`.
    pub fn warning(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, Severity::Warning, message)
    }

    fn new(code: Code, severity: Severity, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity,
            message: message.into(),
            span: None,
            label: None,
            pointer: None,
            labels: Vec::new(),
            help: None,
            notes: Vec::new(),
        }
    }

    /// Points the diagnostic at `span`.
    pub fn at(mut self, span: &Span) -> Diagnostic {
        self.span = Some(span.clone());
        self
    }

    /// Sets the text under the caret.
    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Records the JSON pointer of the value in its document.
    pub fn pointer(mut self, pointer: impl Into<String>) -> Diagnostic {
        self.pointer = Some(pointer.into());
        self
    }

    /// Adds a secondary place.
    pub fn with_label(mut self, span: &Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span: span.clone(),
            message: message.into(),
        });
        self
    }

    /// Sets the fix.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Sets the fix when there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// All diagnostics of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// None yet.
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    /// Adds one.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Adds all of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// Whether any is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.items.len() - self.error_count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The diagnostics in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// Sorts by file, position and code, and drops exact duplicates (an
    /// inherited mistake is reported once, at the line that holds it).
    pub fn finish(&mut self) {
        fn key(d: &Diagnostic) -> (Option<(&str, u32, u32)>, codes::Code, &str) {
            (
                d.span.as_ref().map(|s| (&*s.file, s.line, s.col)),
                d.code,
                d.message.as_str(),
            )
        }
        self.items.sort_by(|a, b| key(a).cmp(&key(b)));
        self.items
            .dedup_by(|a, b| a.code == b.code && a.span == b.span && a.message == b.message);
    }

    /// Consumes into the vector.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Diagnostics {
        Diagnostics { items: vec![d] }
    }
}

/// The closest of `candidates` to `word`, if any is close enough to be a
/// plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(distance, c)| {
            *distance <= limit
                || c.eq_ignore_ascii_case(word)
                || c.starts_with(word) && word.len() >= 3
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

/// `did you mean `x`?` for the closest candidate.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The indefinite article of `word` (`an Agent`, `a Topic`), by its first
/// letter: the kinds and type names cortex writes all start as they sound.
pub fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}
