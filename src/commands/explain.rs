//! `cortex explain [DIR] KIND/NAME`.

use std::io::Write;
use std::process::ExitCode;

use cortex_compiler::{Options, compile, explain::explain, find_spec};

use crate::cli::DiagnosticFormat;
use crate::output;

pub fn run(args: &[String], env: Option<String>) -> anyhow::Result<ExitCode> {
    let (dir, reference) = super::dir_and_reference(args, "cortex explain [DIR] KIND/NAME")?;
    let source = super::open_project(&dir)?;
    let result = compile(&source, &Options { env });
    let prefix = output::prefix_of(&dir);
    // Problems are shown, but a spec that resolved is still explained.
    output::diagnostics(
        &result.diagnostics,
        &result.files,
        &prefix,
        DiagnosticFormat::Text,
    )?;
    let Some(resolved) = &result.resolved else {
        return Ok(ExitCode::from(1));
    };
    let spec = find_spec(resolved, reference).map_err(anyhow::Error::msg)?;
    write!(std::io::stdout(), "{}", explain(spec, &prefix))?;
    Ok(if result.diagnostics.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
