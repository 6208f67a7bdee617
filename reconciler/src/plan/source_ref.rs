//! A place in a spec file, as plans name it: the file, line and column,
//! the spec that wrote it and the field written there.

use std::fmt;

use cortex_compiler::span::{Provenance, Span};
use serde::Serialize;

/// A place in a spec file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourceRef {
    /// File, relative to the project.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// The spec (or environment, or `values`) that wrote it.
    pub by: String,
    /// What is written there: a spec field (`spec.env[MODEL]`) or a value (`values.model`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl SourceRef {
    pub(crate) fn at(prov: &Provenance, field: String) -> SourceRef {
        SourceRef::from_span(&prov.span, prov.spec.to_string(), field)
    }

    pub(crate) fn from_span(span: &Span, by: String, field: String) -> SourceRef {
        SourceRef {
            file: span.file.to_string(),
            line: span.line,
            column: span.col,
            by,
            field,
        }
    }
}

impl fmt::Display for SourceRef {
    /// `file:line`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}
