//! A reader for the plain YAML most spec files are written in: block
//! mappings and sequences of plain keys, with one-line scalars (plain,
//! or quoted without escapes) and one-line flow collections as values.
//! It hands [`Builder`] the very events, at the very positions, that
//! saphyr's parser would, so the nodes, their spans and the language's
//! rules are the same; saphyr's scanner was a seventh of `cortex build`'s CPU.
//!
//! Anything else — anchors, tags, block scalars, multi-line scalars,
//! escapes, quoted keys, non-ASCII text, tabs, a key's error — makes
//! [`documents`] answer `None`, and the caller reads the file with the
//! full parser, which also makes every diagnostic. A test holds the two
//! to the same nodes on every example and fixture file and on generated
//! documents.

use std::borrow::Cow;
use std::sync::Arc;

use saphyr::{Marker, ScalarStyle};
use saphyr_parser::{Event, Span as Range};

use super::build::Builder;
use crate::node::Node;

/// Deepest nesting this reader takes; deeper files go to the full parser
/// (which enforces the language's own limit).
const MAX_NESTING: usize = 32;

/// Longest key this reader takes (YAML's implicit keys stop at 1,024
/// characters).
const MAX_KEY: usize = 512;

/// The text is not in the shapes this reader takes (or a rule of the
/// language is broken, which the full parser reports).
struct Unsupported;

type Step<T> = Result<T, Unsupported>;

/// What the next content line holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Content indented this many spaces, the cursor on its first byte.
    Line(usize),
    /// A `---` line, the cursor on its first dash.
    DocumentStart,
    /// The end of the text, the cursor there.
    End,
}

/// The documents of `text` (byte-order mark removed), when every line is
/// in the shapes this reader takes and no rule is broken.
pub(super) fn documents(file: &Arc<str>, text: &str) -> Option<Vec<Node>> {
    if !text.is_ascii()
        || !text.ends_with('\n')
        || memchr::memchr2(b'\t', b'\r', text.as_bytes()).is_some()
    {
        return None;
    }
    let mut reader = Reader {
        bytes: text.as_bytes(),
        text,
        at: 0,
        line: 1,
        line_start: 0,
        depth: 0,
        builder: Builder::new(file, text),
    };
    reader.stream().ok()?;
    Some(reader.builder.into_documents())
}

struct Reader<'t> {
    /// `text`'s bytes (ASCII, one per character).
    bytes: &'t [u8],
    text: &'t str,
    /// The cursor (a byte index; the text is ASCII, so also a character
    /// index, as the parser's markers count).
    at: usize,
    /// The cursor's line, from 1.
    line: usize,
    /// Where the cursor's line starts.
    line_start: usize,
    /// Collections open.
    depth: usize,
    builder: Builder<'t>,
}

impl<'t> Reader<'t> {
    fn byte(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(b'\n')
    }

    fn here(&self) -> u8 {
        self.byte(self.at)
    }

    /// The marker of `at`, a position on the cursor's line.
    fn mark(&self, at: usize) -> Marker {
        Marker::new(at, self.line, at - self.line_start)
    }

    fn emit(&mut self, event: Event<'t>, start: usize, end: usize) -> Step<()> {
        let range = Range::new(self.mark(start), self.mark(end));
        self.builder.event(event, range).map_err(|_| Unsupported)
    }

    fn scalar(&mut self, text: &'t str, style: ScalarStyle, start: usize, end: usize) -> Step<()> {
        self.emit(
            Event::Scalar(Cow::Borrowed(text), style, 0, None),
            start,
            end,
        )
    }

    fn open(&mut self) -> Step<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(Unsupported);
        }
        Ok(())
    }

    fn skip_spaces(&mut self) {
        while self.here() == b' ' {
            self.at += 1;
        }
    }

    /// What the line starting at `line_start` holds: `None` for a blank or
    /// comment line (the cursor left on its newline).
    fn classify(&mut self) -> Step<Option<Next>> {
        let start = self.line_start;
        if start >= self.bytes.len() {
            self.at = start;
            return Ok(Some(Next::End));
        }
        let rest = &self.bytes[start..];
        if rest.starts_with(b"---") {
            return match self.byte(start + 3) {
                b'\n' => {
                    self.at = start;
                    Ok(Some(Next::DocumentStart))
                }
                b' ' => Err(Unsupported),
                _ => {
                    self.at = start;
                    Ok(Some(Next::Line(0)))
                }
            };
        }
        if rest.starts_with(b"...") || rest[0] == b'%' {
            return Err(Unsupported);
        }
        self.at = start;
        self.skip_spaces();
        match self.here() {
            b'\n' => Ok(None),
            b'#' => {
                self.skip_to_line_end();
                Ok(None)
            }
            _ => Ok(Some(Next::Line(self.at - start))),
        }
    }

    fn skip_to_line_end(&mut self) {
        self.at +=
            memchr::memchr(b'\n', &self.bytes[self.at..]).unwrap_or(self.bytes.len() - self.at);
    }

    /// From the end of a line (the cursor on its newline) to the next
    /// content.
    fn next_content(&mut self) -> Step<Next> {
        loop {
            self.at += 1;
            self.line += 1;
            self.line_start = self.at;
            if let Some(next) = self.classify()? {
                return Ok(next);
            }
        }
    }

    /// After a value: spaces and a comment to the end of the line, then
    /// the next content.
    fn after_value(&mut self) -> Step<Next> {
        let before = self.at;
        self.skip_spaces();
        match self.here() {
            b'\n' => {}
            b'#' if self.at > before => self.skip_to_line_end(),
            _ => return Err(Unsupported),
        }
        self.next_content()
    }

    fn stream(&mut self) -> Step<()> {
        let mut next = match self.classify()? {
            Some(next) => next,
            None => self.next_content()?,
        };
        loop {
            match next {
                Next::End => return Ok(()),
                Next::DocumentStart => {
                    self.at += 3;
                    next = self.next_content()?;
                }
                Next::Line(0) => {
                    next = self.block(0)?;
                    if let Next::Line(_) = next {
                        return Err(Unsupported);
                    }
                    self.emit(Event::DocumentEnd, self.at, self.at)?;
                }
                Next::Line(_) => return Err(Unsupported),
            }
        }
    }

    /// Whether the cursor is on a block sequence's dash.
    fn at_dash(&self) -> bool {
        self.here() == b'-' && matches!(self.byte(self.at + 1), b' ' | b'\n')
    }

    /// A block collection whose first line is indented `indent`.
    fn block(&mut self, indent: usize) -> Step<Next> {
        if self.at_dash() {
            self.sequence(indent, self.at, false)
        } else {
            self.mapping(indent)
        }
    }

    /// A block mapping whose keys are indented `indent`, the cursor on its
    /// first key.
    fn mapping(&mut self, indent: usize) -> Step<Next> {
        self.open()?;
        self.emit(Event::MappingStart(0, None), self.at, self.at)?;
        loop {
            let colon = self.key()?;
            let next = self.value(indent, colon)?;
            match next {
                Next::Line(i) if i == indent && !self.at_dash() => continue,
                Next::Line(i) if i >= indent => return Err(Unsupported),
                _ => {
                    self.emit(Event::MappingEnd, self.at, self.at)?;
                    self.depth -= 1;
                    return Ok(next);
                }
            }
        }
    }

    /// A plain key and its colon: the key's event, the colon's position
    /// (the cursor after it).
    fn key(&mut self) -> Step<usize> {
        let start = self.at;
        if !is_key_start(self.here()) {
            return Err(Unsupported);
        }
        let mut end = start + 1;
        while is_key_byte(self.byte(end)) {
            end += 1;
        }
        if self.byte(end) != b':'
            || !matches!(self.byte(end + 1), b' ' | b'\n')
            || end - start > MAX_KEY
        {
            return Err(Unsupported);
        }
        self.scalar(&self.text[start..end], ScalarStyle::Plain, start, end)?;
        self.at = end + 1;
        Ok(end)
    }

    /// A block mapping's value after the colon at `colon`, its key
    /// indented `indent`.
    fn value(&mut self, indent: usize, colon: usize) -> Step<Next> {
        let before = self.at;
        self.skip_spaces();
        let nested = match self.here() {
            b'\n' => true,
            b'#' => self.at > before,
            _ => false,
        };
        if !nested {
            let next = self.inline_value()?;
            return match next {
                Next::Line(i) if i > indent => Err(Unsupported),
                _ => Ok(next),
            };
        }
        let empty_at = self.mark(colon);
        self.skip_to_line_end();
        let next = self.next_content()?;
        match next {
            Next::Line(i) if i > indent => self.block(i),
            Next::Line(i) if i == indent && self.at_dash() => {
                self.sequence(indent, self.item_content_start()?, true)
            }
            _ => {
                let range = Range::new(empty_at, empty_at);
                self.builder
                    .event(
                        Event::Scalar(Cow::Borrowed(""), ScalarStyle::Plain, 0, None),
                        range,
                    )
                    .map_err(|_| Unsupported)?;
                Ok(next)
            }
        }
    }

    /// Where the item at the cursor's dash starts (its sequence's start
    /// when the sequence is written at its key's indentation).
    fn item_content_start(&self) -> Step<usize> {
        let mut at = self.at + 1;
        while self.byte(at) == b' ' {
            at += 1;
        }
        match self.byte(at) {
            b'\n' | b'#' => Err(Unsupported),
            _ => Ok(at),
        }
    }

    /// A one-line value at the cursor (flow collection, quoted or plain
    /// scalar), then the next content.
    fn inline_value(&mut self) -> Step<Next> {
        match self.here() {
            b'[' | b'{' | b'"' | b'\'' => {
                self.flow_node()?;
                self.after_value()
            }
            _ => {
                let (start, end) = self.block_plain()?;
                if self.text[start..end].contains(": ") {
                    return Err(Unsupported);
                }
                self.scalar(&self.text[start..end], ScalarStyle::Plain, start, end)?;
                self.skip_to_line_end();
                self.next_content()
            }
        }
    }

    /// A plain scalar in block context at the cursor, to the end of its
    /// line or a comment: its start and end (trailing spaces excluded).
    fn block_plain(&mut self) -> Step<(usize, usize)> {
        let start = self.at;
        if !is_plain_start(self.here(), self.byte(start + 1)) {
            return Err(Unsupported);
        }
        let line_end = start + memchr::memchr(b'\n', &self.bytes[start..]).ok_or(Unsupported)?;
        let mut end = line_end;
        if let Some(hash) = memchr::memmem::find(&self.bytes[start..line_end], b" #") {
            end = start + hash;
        }
        while end > start && self.bytes[end - 1] == b' ' {
            end -= 1;
        }
        if self.bytes[end - 1] == b':' {
            return Err(Unsupported);
        }
        self.at = end;
        Ok((start, end))
    }

    /// A block sequence whose dashes are indented `indent`, the cursor on
    /// the first; `start` is where its event says it starts. An
    /// `indentless` one (written at its key's indentation) ends at the
    /// next key.
    fn sequence(&mut self, indent: usize, start: usize, indentless: bool) -> Step<Next> {
        self.open()?;
        self.emit(Event::SequenceStart(0, None), start, start)?;
        loop {
            self.at = self.item_content_start()?;
            let item = self.at - self.line_start;
            if self.at_dash() {
                return Err(Unsupported);
            }
            let plain = !matches!(self.here(), b'[' | b'{' | b'"' | b'\'');
            let next = if plain && self.compact_key() {
                self.mapping(item)?
            } else {
                self.inline_value()?
            };
            match next {
                Next::Line(i) if i == indent && self.at_dash() => continue,
                Next::Line(i) if i > indent || (i == indent && !indentless) => {
                    return Err(Unsupported);
                }
                _ => {
                    self.emit(Event::SequenceEnd, self.at, self.at)?;
                    self.depth -= 1;
                    return Ok(next);
                }
            }
        }
    }

    /// Whether the plain text at the cursor is a key (a mapping written on
    /// the item's line).
    fn compact_key(&self) -> bool {
        let line = &self.bytes[self.at..];
        let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
        line.windows(2).any(|w| w == b": ") || line.ends_with(b":")
    }

    /// A flow collection or quoted scalar on one line, at the cursor.
    fn flow_node(&mut self) -> Step<()> {
        match self.here() {
            b'[' => self.flow_sequence(),
            b'{' => self.flow_mapping(),
            b'"' => self.quoted(b'"', ScalarStyle::DoubleQuoted),
            b'\'' => self.quoted(b'\'', ScalarStyle::SingleQuoted),
            _ => self.flow_plain(),
        }
    }

    fn quoted(&mut self, quote: u8, style: ScalarStyle) -> Step<()> {
        let start = self.at;
        let close = start
            + 1
            + memchr::memchr2(quote, b'\n', &self.bytes[start + 1..]).ok_or(Unsupported)?;
        let content = &self.text[start + 1..close];
        if self.byte(close) != quote
            || (quote == b'"' && content.contains('\\'))
            || (quote == b'\'' && self.byte(close + 1) == b'\'')
        {
            return Err(Unsupported);
        }
        // The parser's span runs on over the spaces after the quote, and a
        // comment after them.
        let mut end = close + 1;
        while self.byte(end) == b' ' {
            end += 1;
        }
        if self.byte(end) == b'#' && end > close + 1 {
            end += memchr::memchr(b'\n', &self.bytes[end..]).ok_or(Unsupported)?;
        }
        self.scalar(content, style, start, end)?;
        self.at = close + 1;
        if self.here() == b':' {
            // A quoted key: the full parser reads those.
            return Err(Unsupported);
        }
        Ok(())
    }

    fn flow_sequence(&mut self) -> Step<()> {
        self.flow_collection(
            Event::SequenceStart(0, None),
            Event::SequenceEnd,
            b']',
            Reader::flow_node,
        )
    }

    fn flow_mapping(&mut self) -> Step<()> {
        self.flow_collection(
            Event::MappingStart(0, None),
            Event::MappingEnd,
            b'}',
            Reader::flow_entry,
        )
    }

    /// A flow collection at the cursor, closed by `close` on the same line,
    /// each of its members read by `member`.
    fn flow_collection(
        &mut self,
        start: Event<'t>,
        end: Event<'t>,
        close: u8,
        member: fn(&mut Self) -> Step<()>,
    ) -> Step<()> {
        self.open()?;
        self.emit(start, self.at, self.at)?;
        self.at += 1;
        self.skip_spaces();
        if self.here() != close {
            loop {
                member(self)?;
                self.skip_spaces();
                match self.here() {
                    b',' => {
                        self.at += 1;
                        self.skip_spaces();
                        if self.here() == close {
                            return Err(Unsupported);
                        }
                    }
                    b if b == close => break,
                    _ => return Err(Unsupported),
                }
            }
        }
        self.emit(end, self.at, self.at)?;
        self.at += 1;
        self.depth -= 1;
        Ok(())
    }

    /// A flow mapping's `key: value`.
    fn flow_entry(&mut self) -> Step<()> {
        self.key()?;
        self.skip_spaces();
        if matches!(self.here(), b',' | b'}') {
            return Err(Unsupported);
        }
        self.flow_node()
    }

    /// A plain scalar inside a flow collection: it ends at a flow
    /// indicator or a `: `.
    fn flow_plain(&mut self) -> Step<()> {
        let start = self.at;
        if !is_plain_start(self.here(), self.byte(start + 1)) {
            return Err(Unsupported);
        }
        let mut end = start + 1;
        loop {
            match self.byte(end) {
                b',' | b']' | b'}' => break,
                b'[' | b'{' | b'\n' => return Err(Unsupported),
                b':' if matches!(self.byte(end + 1), b' ' | b',' | b']' | b'}') => {
                    return Err(Unsupported);
                }
                b'#' if self.byte(end - 1) == b' ' => return Err(Unsupported),
                _ => end += 1,
            }
        }
        let stop = end;
        while self.bytes[end - 1] == b' ' {
            end -= 1;
        }
        self.scalar(&self.text[start..end], ScalarStyle::Plain, start, end)?;
        self.at = stop;
        Ok(())
    }
}

fn is_key_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.' | b'/')
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.' | b'/' | b'-')
}

/// Whether a plain scalar may start with `b` (followed by `then`): not an
/// indicator, except `-`, `?` and `:` before something other than a space.
fn is_plain_start(b: u8, then: u8) -> bool {
    match b {
        b'-' | b'?' | b':' => !matches!(then, b' ' | b'\n' | b',' | b'[' | b']' | b'{' | b'}'),
        b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' | b' ' | b'\n' => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_in_full;
    use super::*;

    fn file() -> Arc<str> {
        Arc::from("t.yaml")
    }

    /// What this reader builds from `text`, held to the full parser's
    /// reading: the same nodes and spans, and nothing where the parser
    /// finds an error. Whether it read the text.
    fn agrees(text: &str) -> bool {
        let Some(simple) = documents(&file(), text) else {
            return false;
        };
        match parse_in_full(&file(), text) {
            Ok(full) => assert_eq!(
                format!("{simple:#?}"),
                format!("{full:#?}"),
                "read differently:\n{text}"
            ),
            Err(d) => panic!("read a text the parser refuses ({}):\n{text}", d.message),
        }
        true
    }

    #[test]
    fn reads_a_spec_as_the_parser_does() {
        let text = "---\napiVersion: cortex.codevald.io/v1\nkind: Agent\n\
            metadata: { name: agent-500, labels: { team: team-0 } }\nspec:\n  extends: team-0   # c\n\
            \x20 replicas: 2\n  env:\n    - { name: MODEL, value: large-m3 }\n    - name: B\n      value: \"q\"\n\
            \x20 subscribe: [topic.t0, 'x']\n\n  config:\n    prompt: \"Agent 500: reply as {{ json }}\"\n\
            \x20   empty:\n# trailing\n---\nkind: B\nlist:\n- a\n- b: 1\n  c: [1, 2.5, true, null, ~]\nend: 1\n";
        assert!(agrees(text), "the reader takes this spec");
    }

    #[test]
    fn leaves_other_shapes_to_the_parser() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !tag 1\n",
            "a: |\n  text\n",
            "a: b\n  continued\n",
            "a: \"two\n  lines\"\n",
            "a: \"esc\\n\"\n",
            "\"quoted key\": 1\n",
            "a:\tb\n",
            "a: caf\u{e9}\n",
            "a: 1",
            "a: 1\r\n",
            "- - nested\n",
            "a: [1,\n  2]\n",
            "a: 1\na: 2\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: b: c\n",
        ] {
            assert!(documents(&file(), text).is_none(), "{text:?}");
        }
    }

    /// Every YAML file of the repository's examples and fixtures.
    #[test]
    fn reads_every_example_and_fixture_as_the_parser_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (mut read, mut files) = (0, 0);
        let mut stack = vec![root.join("examples"), root.join("fixtures")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("a directory") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                    && let Ok(text) = std::fs::read_to_string(&path)
                {
                    files += 1;
                    read += usize::from(agrees(text.strip_prefix('\u{feff}').unwrap_or(&text)));
                }
            }
        }
        assert!(files > 50, "{files} files");
        assert!(read * 3 > files, "read {read} of {files} files");
    }

    /// A small random generator (xorshift), so that the cases are the same
    /// on every run.
    struct Random(u64);

    impl Random {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// Scalars in the shapes the reader takes.
    const SCALARS: &[&str] = &[
        "a",
        "word",
        "1",
        "-1",
        "0x1f",
        "0o7",
        "1.5",
        "1e3",
        ".inf",
        "-.Inf",
        ".nan",
        "true",
        "False",
        "null",
        "~",
        "NULL",
        "y",
        "\"\"",
        "''",
        "'x'",
        "\"a b\"",
        "\"a: b\"",
        "http://x:80/p",
        "-x",
        "?x",
        ":x",
        "a#b",
        "a #c",
        "a  b",
        "x  ",
        "{{ json }}",
        "reply as {{ json }}",
        "[a, b]",
        "[ ]",
        "{}",
        "{a: 1, b: [c, d]}",
        "[a, [b, {c: d}]]",
        "[\"q\", 'r' , 2]",
        "{k: \"v\" }",
        "'a' # c",
        "\"b\"   # c",
    ];

    /// Scalars it leaves to the parser, valid or not.
    const OTHER_SCALARS: &[&str] = &[
        "'it''s'",
        "\"q\\\"x\"",
        "a: b",
        "x:",
        "- x",
        "{a: }",
        "[a,]",
        "{a: b: c}",
        "&a x",
        "*a",
        "!t x",
        "|",
        ">-",
        "@x",
        "[a",
        "{a: 1",
        "'open",
        "\"open",
        "[a: b]",
        "'a'b",
        "\"x\"#c",
    ];

    const KEYS: &[&str] = &[
        "a",
        "b",
        "name",
        "app.kubernetes.io/name",
        "7",
        "x-y",
        "_z",
        "$v",
        "a",
        "b",
        "c",
        "d",
    ];

    const OTHER_KEYS: &[&str] = &["true", "null", "a b", "\"q\"", "<<", "-k", "k:", "? k"];

    fn scalar(r: &mut Random) -> &'static str {
        if r.below(12) == 0 {
            r.pick(OTHER_SCALARS)
        } else {
            r.pick(SCALARS)
        }
    }

    fn key(r: &mut Random) -> &'static str {
        if r.below(16) == 0 {
            r.pick(OTHER_KEYS)
        } else {
            r.pick(KEYS)
        }
    }

    /// A block mapping or sequence at `indent`, written into `out`.
    fn block(r: &mut Random, indent: usize, depth: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        if r.below(3) == 0 {
            for _ in 0..1 + r.below(3) {
                out.push_str(&pad);
                out.push('-');
                item(r, indent, depth, out);
            }
        } else {
            for _ in 0..1 + r.below(4) {
                out.push_str(&pad);
                out.push_str(key(r));
                out.push(':');
                value(r, indent, depth, out);
            }
        }
    }

    fn item(r: &mut Random, indent: usize, depth: usize, out: &mut String) {
        match r.below(6) {
            0 if depth < 4 => {
                // A mapping on the item's line.
                let inner = indent + 2;
                out.push(' ');
                out.push_str(key(r));
                out.push(':');
                value(r, inner, depth + 1, out);
                for _ in 0..r.below(3) {
                    out.push_str(&" ".repeat(inner));
                    out.push_str(key(r));
                    out.push(':');
                    value(r, inner, depth + 1, out);
                }
            }
            1 => out.push('\n'),
            _ => {
                out.push(' ');
                out.push_str(scalar(r));
                out.push('\n');
            }
        }
        filler(r, out);
    }

    fn value(r: &mut Random, indent: usize, depth: usize, out: &mut String) {
        match r.below(7) {
            0 | 1 if depth < 5 => {
                if r.below(3) == 0 {
                    out.push_str("   # about it");
                }
                out.push('\n');
                filler(r, out);
                let deeper = [indent + 2, indent + 4, indent + 1, indent][r.below(4)];
                block(r, deeper, depth + 1, out);
            }
            2 => out.push('\n'),
            _ => {
                out.push_str(&" ".repeat(1 + r.below(2)));
                out.push_str(scalar(r));
                if r.below(4) == 0 {
                    out.push_str(" # note");
                }
                out.push('\n');
            }
        }
        filler(r, out);
    }

    /// Sometimes a blank or comment line.
    fn filler(r: &mut Random, out: &mut String) {
        match r.below(8) {
            0 => out.push('\n'),
            1 => out.push_str(&format!("{}# a comment\n", " ".repeat(r.below(5)))),
            _ => {}
        }
    }

    /// Generated documents, valid and not, some with a byte changed: the
    /// reader reads many of them, each as the parser does.
    #[test]
    fn reads_generated_documents_as_the_parser_does() {
        let mut r = Random(0x9e37_79b9_7f4a_7c15);
        let (mut read, mut valid, cases) = (0, 0, 4000);
        for _ in 0..cases {
            let mut text = String::new();
            for doc in 0..1 + r.below(3) {
                if doc > 0 || r.below(2) == 0 {
                    text.push_str("---\n");
                }
                filler(&mut r, &mut text);
                block(&mut r, 0, 0, &mut text);
            }
            if r.below(6) == 0 {
                let at = r.below(text.len());
                let byte = [" ", "-", ":", "#", "\n", "'", "{", "]", ","][r.below(9)];
                if text.is_char_boundary(at) {
                    text.insert_str(at, byte);
                }
            }
            read += usize::from(agrees(&text));
            valid += usize::from(parse_in_full(&file(), &text).is_ok());
        }
        assert!(
            read * 2 > valid,
            "read {read} of {valid} valid texts ({cases} in all)"
        );
    }
}
