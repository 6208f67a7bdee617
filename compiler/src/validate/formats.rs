//! Values with a cortex format (`x-cortex-format`): durations, Kubernetes
//! quantities, cron expressions, DNS-1123 names, text handed to a process
//! (no NUL character); and union mappings
//! (`x-cortex-union`) with more than one variant set.

use std::fmt::Write;

use crate::diagnostic::{Diagnostic, Diagnostics, codes};
use crate::node::{Node, Value, push_pointer_token};
use crate::schema::Cursor;
use crate::validate::schema_check::{location, union_diagnostic};

/// Checks every formatted value and union of `node` against `schema`.
pub fn check(node: &Node, schema: Cursor<'_>, diags: &mut Diagnostics) {
    walk(node, schema, &mut String::new(), diags);
}

fn walk(node: &Node, schema: Cursor<'_>, pointer: &mut String, diags: &mut Diagnostics) {
    if !schema.is_known() || schema.is_verbatim() {
        return;
    }
    if let Some(format) = schema.format()
        && let Some(problem) = check_format(format, node)
    {
        diags.push(problem.pointer(pointer.clone()));
    }
    let len = pointer.len();
    match &node.value {
        Value::Map(map) => {
            if let Some(variants) = schema.union() {
                let set = variants.iter().filter(|v| map.get(v).is_some()).count();
                if set > 1 {
                    diags.push(union_diagnostic(
                        node,
                        pointer,
                        &location(pointer),
                        &variants,
                    ));
                }
            }
            for entry in map {
                push_pointer_token(pointer, &entry.key);
                walk(&entry.value, schema.property(&entry.key), pointer, diags);
                pointer.truncate(len);
            }
        }
        Value::Seq(items) => {
            let item_schema = schema.items();
            for (i, item) in items.iter().enumerate() {
                // Writing into a string cannot fail.
                let _ = write!(pointer, "/{i}");
                walk(item, item_schema, pointer, diags);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

fn check_format(format: &str, node: &Node) -> Option<Diagnostic> {
    match (format, &node.value) {
        ("process-text", Value::Str(s)) => s.find('\0').map(|at| {
            Diagnostic::error(
                codes::NUL_IN_PROCESS_TEXT,
                "a NUL character cannot be passed to a process",
            )
            .at(node.span())
            .label(format!(
                "NUL at character {} of this value",
                s[..at].chars().count() + 1
            ))
            .help("remove the `\\0`: environment values, commands and arguments end at a NUL")
        }),
        ("duration", Value::Str(s)) => parse_duration_ms(s).err().map(|why| {
            Diagnostic::error(codes::BAD_DURATION, format!("invalid duration `{s}`"))
                .at(node.span())
                .label(why)
                .help("write a number and a unit: 500ms, 10s, 5m, 2h, 7d (combinable: 1h30m)")
        }),
        ("duration", Value::Int(i)) => Some(
            Diagnostic::error(codes::BAD_DURATION, format!("duration `{i}` has no unit"))
                .at(node.span())
                .label("a bare number is ambiguous")
                .help(format!(
                    "write `{i}s` for seconds or `{i}ms` for milliseconds"
                )),
        ),
        ("quantity", Value::Str(s)) => parse_quantity_milli(s).err().map(|why| {
            Diagnostic::error(codes::BAD_QUANTITY, format!("invalid quantity `{s}`"))
                .at(node.span())
                .label(why)
                .help("write e.g. `250m` or `2` (CPU), `512Mi` or `1Gi` (memory)")
        }),
        ("quantity", Value::Int(i)) if *i < 0 => Some(
            Diagnostic::error(codes::BAD_QUANTITY, format!("negative quantity `{i}`"))
                .at(node.span()),
        ),
        ("quantity", Value::Float(f)) if *f < 0.0 || !f.is_finite() => Some(
            Diagnostic::error(codes::BAD_QUANTITY, format!("invalid quantity `{f}`"))
                .at(node.span()),
        ),
        // A number past what the written form may hold (`1e38` as text is
        // refused as too large) would be taken as the largest quantity.
        ("quantity", Value::Float(f)) if quantity_of(node).is_none() => Some(
            // As JSON writes it (`1e+300`), not in 301 digits.
            Diagnostic::error(
                codes::BAD_QUANTITY,
                format!("invalid quantity `{}`", serde_json::Value::from(*f)),
            )
            .at(node.span())
            .label("quantity too large"),
        ),
        ("cron", Value::Str(s)) => parse_cron(s).err().map(|why| {
            Diagnostic::error(codes::BAD_CRON, format!("invalid cron expression `{s}`"))
                .at(node.span())
                .label(why)
                .help(
                    "five fields: minute hour day-of-month month day-of-week, e.g. `*/15 * * * *`",
                )
        }),
        ("dns-label", Value::Str(s)) => check_dns(s, 63, false)
            .err()
            .map(|why| name_diagnostic(node, s, &why)),
        ("dns-subdomain", Value::Str(s)) => check_dns(s, 253, true)
            .err()
            .map(|why| name_diagnostic(node, s, &why)),
        _ => None,
    }
}

fn name_diagnostic(node: &Node, name: &str, why: &str) -> Diagnostic {
    let suggestion: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches(|c| c == '-' || c == '.')
        .to_string();
    let diag = Diagnostic::error(codes::BAD_NAME, format!("invalid name `{name}`"))
        .at(node.span())
        .label(why.to_string());
    if !suggestion.is_empty() && suggestion != name {
        diag.help(format!("try `{suggestion}`"))
    } else {
        diag
    }
}

/// Checks a DNS-1123 label (`dots = false`, max 63) or subdomain.
pub fn check_dns(name: &str, max: usize, dots: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name.len() > max {
        return Err(format!("{} characters, at most {max} allowed", name.len()));
    }
    if let Some(bad) = name.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || (dots && *c == '.'))
    }) {
        return Err(format!(
            "`{bad}` is not allowed: use lower-case letters, digits, `-`{}",
            if dots { " and `.`" } else { "" }
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    if dots && name.split('.').any(str::is_empty) {
        return Err("empty segment between dots".into());
    }
    Ok(())
}

/// The longest duration: 2,147,483,647 s (about 68 years), what a
/// Kubernetes probe's seconds (an int32) hold; every duration of a spec
/// fits what reads it.
pub const MAX_DURATION_MS: u64 = i32::MAX as u64 * 1_000;

/// Parses a duration (`500ms`, `10s`, `1h30m`, `7d`) into milliseconds, at
/// most [`MAX_DURATION_MS`].
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| "number too large".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let factor = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err("missing unit (ms, s, m, h, d)".into()),
            other => return Err(format!("unknown unit `{other}` (use ms, s, m, h, d)")),
        };
        total = number
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration too large".to_string())?;
        rest = &rest[unit_len..];
    }
    if total > MAX_DURATION_MS {
        return Err(format!(
            "longer than the longest duration, {}s (about 68 years)",
            MAX_DURATION_MS / 1_000
        ));
    }
    Ok(total)
}

/// Parses a Kubernetes quantity into milli-units, rounding up as Kubernetes
/// does (`250m` → 250, `1` → 1000, `1Ki` → 1 024 000).
pub fn parse_quantity_milli(s: &str) -> Result<i128, String> {
    let s = s.trim();
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err("expected a number".into());
    }
    let negative = number.starts_with('-');
    let digits = number.trim_start_matches(['+', '-']);
    if digits.contains(['+', '-']) {
        return Err("misplaced sign".into());
    }
    if negative {
        return Err("quantities cannot be negative".into());
    }
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let mantissa: i128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| "expected a number".to_string())?;
    let scale = frac_part.len() as u32;
    // multiplier as (numerator, extra decimal exponent)
    let (multiplier, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        other if other.starts_with(['e', 'E']) => {
            let e: i32 = other[1..]
                .parse()
                .map_err(|_| format!("invalid exponent `{other}`"))?;
            (1, e)
        }
        other => {
            return Err(format!(
                "unknown suffix `{other}` (use m, k, M, G, Ki, Mi, Gi…)"
            ));
        }
    };
    // value × 1000 = mantissa × multiplier × 10^(exp10 + 3 - scale)
    let exponent = exp10 + 3 - scale as i32;
    let base = mantissa
        .checked_mul(multiplier)
        .ok_or("quantity too large")?;
    if exponent >= 0 {
        let factor = 10i128
            .checked_pow(exponent as u32)
            .ok_or("quantity too large")?;
        base.checked_mul(factor)
            .ok_or_else(|| "quantity too large".to_string())
    } else {
        let divisor = 10i128
            .checked_pow((-exponent) as u32)
            .ok_or("quantity too small")?;
        Ok((base + divisor - 1) / divisor)
    }
}

/// Parses a quantity written as a string or a number.
pub fn quantity_of(node: &Node) -> Option<i128> {
    match &node.value {
        Value::Str(s) => parse_quantity_milli(s).ok(),
        Value::Int(i) => Some(i128::from(*i) * 1000),
        // Below i128::MAX as f64: `as` would saturate at the largest.
        Value::Float(f) if f.is_finite() && *f >= 0.0 && f * 1000.0 < i128::MAX as f64 => {
            Some((f * 1000.0).ceil() as i128)
        }
        _ => None,
    }
}

/// Checks a five-field cron expression.
pub fn parse_cron(s: &str) -> Result<(), String> {
    let fields = s.split_whitespace().count();
    if fields != 5 {
        return Err(format!("{fields} fields; cron expressions have 5"));
    }
    croner::parser::CronParser::new()
        .parse(s)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("10sec").is_err());
        assert!(parse_duration_ms("s").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
        // What a probe's seconds hold, and one millisecond more.
        assert_eq!(parse_duration_ms("2147483647s"), Ok(MAX_DURATION_MS));
        let too_long = parse_duration_ms("2147483647s1ms").unwrap_err();
        assert!(too_long.contains("longest duration"), "{too_long}");
    }

    /// A quantity written as a number is held to what its written form
    /// may hold: past it, refused, not taken as the largest quantity.
    #[test]
    fn a_number_quantity_too_large_is_refused() {
        let file: std::sync::Arc<str> = std::sync::Arc::from("q.yaml");
        let check = |text: &str| {
            let docs = crate::yaml::parse(&file, text).expect(text);
            let cpu = docs[0].get("cpu").expect("cpu").clone();
            (
                quantity_of(&cpu),
                check_format("quantity", &cpu).map(|d| d.message),
            )
        };
        assert_eq!(check("cpu: 1.5"), (Some(1500), None));
        let (large, fine) = check("cpu: 1.0e30");
        assert!(large.is_some_and(|milli| milli > 10i128.pow(32)) && fine.is_none());
        let (value, refused) = check("cpu: 1.0e300");
        assert_eq!(value, None);
        assert_eq!(refused.as_deref(), Some("invalid quantity `1e+300`"));
        assert!(parse_quantity_milli("1e300").is_err(), "the text form too");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_milli("250m"), Ok(250));
        assert_eq!(parse_quantity_milli("1"), Ok(1000));
        assert_eq!(parse_quantity_milli("1.5"), Ok(1500));
        assert_eq!(parse_quantity_milli("1Ki"), Ok(1_024_000));
        assert_eq!(parse_quantity_milli("1Gi"), Ok(1_073_741_824_000));
        assert_eq!(parse_quantity_milli("1G"), Ok(1_000_000_000_000));
        assert_eq!(parse_quantity_milli("0.1m"), Ok(1));
        assert_eq!(parse_quantity_milli("1e3"), Ok(1_000_000));
        assert!(parse_quantity_milli("1GB").is_err());
        assert!(parse_quantity_milli("-1").is_err());
        assert!(parse_quantity_milli("abc").is_err());
        assert!(parse_quantity_milli("1.2.3").is_err());
        assert!(parse_quantity_milli("1e999").is_err());
    }

    #[test]
    fn crons() {
        assert!(parse_cron("*/15 * * * *").is_ok());
        assert!(parse_cron("0 9 * * MON-FRI").is_ok());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("* * * *").is_err());
    }

    #[test]
    fn dns_names() {
        assert!(check_dns("triage", 63, false).is_ok());
        assert!(check_dns("Triage", 63, false).is_err());
        assert!(check_dns("-a", 63, false).is_err());
        assert!(check_dns("tickets.created", 253, true).is_ok());
        assert!(check_dns("tickets.created", 63, false).is_err());
        assert!(check_dns(&"a".repeat(64), 63, false).is_err());
    }
}
