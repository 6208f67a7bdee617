//! YAML text to spanned [`Node`]s, with the spec language's restrictions:
//! no duplicate keys, bounded alias expansion, no merge keys or custom tags,
//! bounded nesting.

mod build;
mod cause;
pub(crate) mod fast;
mod simple;

use std::sync::Arc;

#[cfg(test)]
use saphyr::{MarkedYaml, YamlData, YamlLoader};
use saphyr::{Scalar, ScanError};
#[cfg(test)]
use saphyr_parser::SpannedEventReceiver;
use saphyr_parser::{Event, Parser};

use crate::diagnostic::{Diagnostic, codes};
use crate::node::{Node, Value};
use crate::span::Span;

/// Most nodes alias expansion may produce in one file. Hand-written specs
/// stay far below it; a "billion laughs" file hits it within milliseconds.
pub const MAX_ALIAS_NODES: usize = 10_000;

/// Deepest nesting accepted; the deepest real spec is under 15 levels.
pub const MAX_DEPTH: usize = 64;

/// Parses every document of `text` (the content of `file`). Empty documents
/// (only comments, or a trailing `---`) are skipped.
pub fn parse(file: &Arc<str>, text: &str) -> Result<Vec<Node>, Box<Diagnostic>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(docs) = simple::documents(file, text) {
        return Ok(docs);
    }
    parse_in_full(file, text)
}

/// [`parse`] by the full parser, for any text (the byte-order mark taken
/// off).
fn parse_in_full(file: &Arc<str>, text: &str) -> Result<Vec<Node>, Box<Diagnostic>> {
    let mut builder = build::Builder::new(file, text);
    feed(file, text, &mut |event, span| builder.event(event, span))?;
    Ok(builder.into_documents())
}

/// Scans `text` into its non-empty documents as the parser's own tree (the
/// tests' independent reading of what [`parse`] builds): duplicate keys, alias expansion past
/// [`MAX_ALIAS_NODES`] and nesting past [`MAX_DEPTH`] are errors; a
/// byte-order mark is ignored.
#[cfg(test)]
fn load_documents<'t>(
    file: &Arc<str>,
    text: &'t str,
) -> Result<Vec<MarkedYaml<'t>>, Box<Diagnostic>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    loader.alias_limit(MAX_ALIAS_NODES);
    feed(file, text, &mut |event, span| {
        loader.on_event(event, span);
        match loader.error() {
            Some(err) => Err(Box::new(scan_error(file, text, err))),
            None => Ok(()),
        }
    })?;
    let mut docs = loader.into_documents();
    docs.retain(|doc| !matches!(doc.data, YamlData::Value(Scalar::Null)));
    Ok(docs)
}

/// Parses `text` (the byte-order mark taken off) and hands each event to
/// `on`; a scanner error, an unknown anchor and nesting past [`MAX_DEPTH`]
/// stop it with a diagnostic, as does the first error `on` answers.
///
/// The events are handed over one by one rather than through
/// `Parser::load`, which recurses once per nesting level (a 5,000-deep
/// `- - - … 1` overflowed the stack): the depth is counted as the events
/// come, and nothing deeper than [`MAX_DEPTH`] is ever built.
fn feed<'t>(
    file: &Arc<str>,
    text: &'t str,
    on: &mut dyn FnMut(Event<'t>, saphyr_parser::Span) -> Result<(), Box<Diagnostic>>,
) -> Result<(), Box<Diagnostic>> {
    let parser = Parser::new_from_str(text);
    let mut open = 0usize;
    // Anchors are per document (`Parser::load` cleared them; its iterator
    // does not): an alias to another document's anchor is unknown.
    let mut anchors: std::collections::HashSet<usize> = std::collections::HashSet::new();
    for event in parser {
        let (event, span) = event.map_err(|e| Box::new(scan_error(file, text, &e)))?;
        let anchor = match &event {
            Event::SequenceStart(id, _) | Event::MappingStart(id, _) => {
                open += 1;
                // A collection at depth MAX_DEPTH would hold nodes past it.
                if open > MAX_DEPTH {
                    return Err(Box::new(too_deep(file, span)));
                }
                *id
            }
            Event::Scalar(_, _, id, _) => *id,
            Event::SequenceEnd | Event::MappingEnd => {
                open = open.saturating_sub(1);
                0
            }
            Event::DocumentStart(_) => {
                anchors.clear();
                0
            }
            Event::Alias(id) if !anchors.contains(id) => {
                let err =
                    ScanError::new_str(span.start, "while parsing node, found unknown anchor");
                return Err(Box::new(scan_error(file, text, &err)));
            }
            _ => 0,
        };
        if anchor > 0 {
            anchors.insert(anchor);
        }
        on(event, span)?;
    }
    Ok(())
}

/// The one-character span at character `index` of `text`.
fn char_span(file: &Arc<str>, text: &str, index: usize) -> Span {
    let before: String = text.chars().take(index).collect();
    let line = before.matches('\n').count() + 1;
    let col = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    Span {
        file: file.clone(),
        line: line as u32,
        col: col as u32,
        start: index as u32,
        end: index as u32 + 1,
    }
}

/// A collection opened past [`MAX_DEPTH`] levels, at `span`.
fn too_deep(file: &Arc<str>, span: saphyr_parser::Span) -> Diagnostic {
    let at = Span {
        file: file.clone(),
        line: span.start.line() as u32,
        col: span.start.col() as u32 + 1,
        start: span.start.index() as u32,
        end: span.end.index().max(span.start.index()) as u32,
    };
    Diagnostic::error(
        codes::UNSUPPORTED_YAML,
        format!("nesting deeper than {MAX_DEPTH} levels is not supported"),
    )
    .at(&at)
    .label("this level is one too many")
    .help(format!(
        "the deepest real spec nests under 15 levels; flatten the data, or pass it as a JSON string (the limit is {MAX_DEPTH})"
    ))
}

fn scan_error(file: &Arc<str>, text: &str, err: &ScanError) -> Diagnostic {
    let mark = err.marker();
    let span = Span {
        file: file.clone(),
        line: mark.line() as u32,
        col: mark.col() as u32 + 1,
        start: mark.index() as u32,
        end: mark.index() as u32,
    };
    let info = err.info();
    if !info.contains("duplicated key")
        && !info.contains("alias expansion")
        && !info.contains("recursion limit")
        && let Some(cause) = cause::locate(text, mark.index(), info)
    {
        return Diagnostic::error(codes::YAML_SYNTAX, format!("invalid YAML: {}", cause.label))
            .at(&char_span(file, text, cause.index))
            .label(cause.label)
            .help(cause.help);
    }
    let (code, message, help) = if info.contains("duplicated key") {
        (
            codes::DUPLICATE_KEY,
            "duplicate key in mapping".to_string(),
            Some("remove one of the two entries; YAML keys must be unique"),
        )
    } else if info.contains("alias expansion") {
        (
            codes::ALIAS_LIMIT,
            format!("YAML aliases expand to more than {MAX_ALIAS_NODES} nodes"),
            Some("write the values out, or share them with `extends`"),
        )
    } else if info.contains("recursion limit") {
        (
            codes::UNSUPPORTED_YAML,
            format!("nesting deeper than {MAX_DEPTH} levels is not supported"),
            None,
        )
    } else if info.contains("quoted scalar") {
        (
            codes::YAML_SYNTAX,
            format!("invalid YAML: {info}"),
            Some(
                "this quote is never closed: close it on the same line, or indent every line of the value past its key",
            ),
        )
    } else {
        (codes::YAML_SYNTAX, format!("invalid YAML: {info}"), None)
    };
    let diag = Diagnostic::error(code, message)
        .at(&span)
        .label(info.to_string());
    match help {
        Some(h) => diag.help(h),
        None => diag,
    }
}

fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Str(s.to_string()),
    }
}

/// Sets the spec that owns every node of `node` (done once the document's
/// kind and name are known).
pub fn set_owner(node: &mut Node, owner: &Arc<str>) {
    node.prov.spec = owner.clone();
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| set_owner(n, owner)),
        Value::Map(map) => map.values_mut().for_each(|n| set_owner(n, owner)),
        _ => {}
    }
}

/// Parses every document of `text` straight into JSON, with the same rules
/// as [`parse`] (no merge keys, no custom tags, bounded aliases and depth)
/// but without spans: for reading back rendered objects, where speed
/// matters and positions do not.
pub fn parse_json(file: &Arc<str>, text: &str) -> Result<Vec<serde_json::Value>, Box<Diagnostic>> {
    // What cortex's templates render reads much faster this way; anything
    // else (and every error) goes through the full parser.
    if let Some(docs) = fast::documents(text.strip_prefix('\u{feff}').unwrap_or(text)) {
        return Ok(docs);
    }
    Ok(parse_json_located(file, text)?
        .into_iter()
        .map(|(_, value)| value)
        .collect())
}

/// [`parse_json`], each document with the position where it starts
/// (a span of no width: for naming the document in diagnostics). The
/// documents are read as spec files are ([`parse`]), by the same rules: a
/// key written twice, also as `1` and `"1"`, is a duplicate, not a value
/// silently replaced.
pub fn parse_json_located(
    file: &Arc<str>,
    text: &str,
) -> Result<Vec<(Span, serde_json::Value)>, Box<Diagnostic>> {
    Ok(parse(file, text)?
        .iter()
        .map(|doc| {
            let start = doc.span();
            let at = Span {
                end: start.start,
                ..start.clone()
            };
            (at, doc.to_json())
        })
        .collect())
}

/// The documents of `text` read through the parser's own tree: what
/// [`parse_json_located`] read before it went through [`parse`], kept as
/// the tests' independent reading.
#[cfg(test)]
pub(crate) fn parse_json_by_tree(
    file: &Arc<str>,
    text: &str,
) -> Result<Vec<serde_json::Value>, Box<Diagnostic>> {
    load_documents(file, text)?
        .iter()
        .map(|doc| {
            json_of(doc, 0)
                .map_err(|what| Box::new(Diagnostic::error(codes::UNSUPPORTED_YAML, what)))
        })
        .collect()
}

#[cfg(test)]
fn json_of(node: &MarkedYaml<'_>, depth: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
    }
    Ok(match &node.data {
        YamlData::Value(Scalar::Null) => J::Null,
        YamlData::Value(Scalar::Boolean(b)) => J::Bool(*b),
        YamlData::Value(Scalar::Integer(i)) => J::from(*i),
        YamlData::Value(Scalar::FloatingPoint(f)) => {
            serde_json::Number::from_f64(f.into_inner()).map_or(J::Null, J::Number)
        }
        YamlData::Value(Scalar::String(s)) => J::String(s.to_string()),
        YamlData::Representation(raw, _, _) => J::String(raw.to_string()),
        YamlData::Sequence(items) => J::Array(
            items
                .iter()
                .map(|i| json_of(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(mapping) => {
            let mut map = serde_json::Map::new();
            for (key, value) in mapping {
                let key = match &key.data {
                    YamlData::Value(Scalar::String(s)) if s != "<<" => s.to_string(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    _ => {
                        return Err(
                            "unsupported mapping key (merge key, null or non-scalar)".to_string()
                        );
                    }
                };
                map.insert(key, json_of(value, depth + 1)?);
            }
            J::Object(map)
        }
        YamlData::Tagged(tag, _) => return Err(format!("the YAML tag `{tag}` is not supported")),
        YamlData::Alias(_) | YamlData::BadValue => return Err("invalid YAML value".to_string()),
    })
}
