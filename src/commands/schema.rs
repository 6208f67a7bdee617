//! `cortex schema [KIND]` and `cortex explain-code [CODE]`.

use std::io::Write;
use std::process::ExitCode;

use cortex_compiler::diagnostic::codes;
use cortex_compiler::schema::{combined_schema, editor_schema};
use cortex_compiler::{Kind, diagnostic::did_you_mean};

pub fn run(kind: Option<&str>) -> anyhow::Result<ExitCode> {
    let schema = match kind {
        None => combined_schema(),
        Some(text) => {
            let kind = Kind::parse_ref(text).ok_or_else(|| {
                let names: Vec<String> = Kind::ALL.iter().map(|k| k.as_str().to_string()).collect();
                let hint = did_you_mean(text, names.iter().map(String::as_str));
                anyhow::anyhow!(
                    "unknown kind `{text}`{}; kinds: {}",
                    hint.map(|h| format!(" ({h})")).unwrap_or_default(),
                    names.join(", ")
                )
            })?;
            editor_schema(kind)
        }
    };
    writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&schema)?
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn explain_code(code: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout();
    match code {
        Some(code) => {
            let info = codes::lookup(code).ok_or_else(|| anyhow::anyhow!("unknown diagnostic code `{code}` (codes look like CX0201; `cortex explain-code` lists them)"))?;
            writeln!(out, "{}: {}\n\n{}", info.code, info.title, info.explanation)?;
        }
        None => {
            for info in codes::ALL {
                writeln!(out, "{}  {}", info.code, info.title)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
