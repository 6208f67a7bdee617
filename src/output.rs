//! Printing: colour-aware streams (anstream honours NO_COLOR, CLICOLOR and
//! whether the stream is a terminal) and diagnostics in every format.

use std::io::Write;

use cortex_compiler::diagnostic::render;
use cortex_compiler::{Diagnostics, SourceMap};

use crate::cli::DiagnosticFormat;

/// Prints `error: message` on stderr.
pub fn error_line(message: &str) -> std::io::Result<()> {
    let mut err = anstream::stderr();
    writeln!(err, "\x1b[1;31merror\x1b[0m: {message}")
}

/// Prints diagnostics: text to stderr with a summary; json and github to stdout.
pub fn diagnostics(
    diags: &Diagnostics,
    files: &SourceMap,
    prefix: &str,
    format: DiagnosticFormat,
) -> std::io::Result<()> {
    match format {
        DiagnosticFormat::Text => {
            let mut err = anstream::stderr();
            if !diags.is_empty() {
                write!(err, "{}", render::render_text(diags, files, prefix, true))?;
                writeln!(err, "{}", render::summary_line(diags))?;
            }
            Ok(())
        }
        DiagnosticFormat::Json => {
            write!(std::io::stdout(), "{}", render::render_json(diags, prefix))
        }
        DiagnosticFormat::Github => write!(
            std::io::stdout(),
            "{}",
            render::render_github(diags, prefix)
        ),
    }
}

/// The directory as the user wrote it, for prefixing project-relative paths.
pub fn prefix_of(dir: &std::path::Path) -> String {
    let text = dir.to_string_lossy().to_string();
    if text == "." { String::new() } else { text }
}
