//! Source positions: where in which file a value was written.

use std::fmt;
use std::sync::Arc;

/// A position range in one project file.
///
/// `line` and `col` are 1-based and count characters (not bytes), as editors
/// show them. `start` and `end` are 0-based character offsets into the file,
/// used to underline the exact text in a snippet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Span {
    /// Path of the file relative to the project root, with `/` separators.
    pub file: Arc<str>,
    /// 1-based line of the first character.
    pub line: u32,
    /// 1-based column (in characters) of the first character.
    pub col: u32,
    /// 0-based character offset of the first character.
    pub start: u32,
    /// 0-based character offset one past the last character.
    pub end: u32,
}

impl Span {
    /// A span that covers a whole file without pointing at any character in it.
    pub fn file_only(file: Arc<str>) -> Span {
        Span {
            file,
            line: 1,
            col: 1,
            start: 0,
            end: 0,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Where a value of a resolved spec came from: the position and the spec
/// (template, agent, environment…) in the inheritance chain that set it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Provenance {
    /// The text that set the value.
    pub span: Span,
    /// Display name of the spec that set it, e.g. `base-agent` or `env prod`.
    pub spec: Arc<str>,
}

/// The text of every file a compilation read, for rendering snippets.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: std::collections::BTreeMap<Arc<str>, Arc<str>>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    /// Records the text of `file`.
    pub fn insert(&mut self, file: Arc<str>, text: Arc<str>) {
        self.files.insert(file, text);
    }

    /// The text of `file`.
    pub fn text(&self, file: &str) -> Option<&str> {
        self.files.get(file).map(|t| &**t)
    }

    /// Every file with its text, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.files.iter()
    }
}

/// Converts a character offset into a byte offset of `text` (clamped to its end).
pub fn char_to_byte(text: &str, chars: usize) -> usize {
    if text.is_ascii() {
        return chars.min(text.len());
    }
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}
