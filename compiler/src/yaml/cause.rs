//! Where a YAML syntax error really is. The scanner reports where it
//! stopped, which is often not the character at fault: a tab used as
//! indentation is reported at the end of the line before it, a `[` never
//! closed at the next `:` it trips over. This finds the character itself:
//! the tab, or the bracket that is never closed.

/// The character a syntax error is about, and what to say there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Its character offset in the text.
    pub index: usize,
    /// The label under it.
    pub label: String,
    /// How to fix it.
    pub help: String,
}

/// The cause of the scanner error `info` reported at character `at` of
/// `text`, when it is somewhere else; `None` when the report stands.
pub fn locate(text: &str, at: usize, info: &str) -> Option<Cause> {
    if info.contains("tab") {
        return tab(text, at);
    }
    let (opener, index) = unclosed_before(text, at)?;
    let closer = if opener == '[' { ']' } else { '}' };
    Some(Cause {
        index,
        label: format!("this `{opener}` is never closed"),
        help: format!("close it with `{closer}`; the parser stopped further on ({info})"),
    })
}

/// The first tab in the indentation of the error's line or a later one.
fn tab(text: &str, at: usize) -> Option<Cause> {
    let chars: Vec<char> = text.chars().collect();
    let mut line_start = at.min(chars.len());
    while line_start > 0 && chars[line_start - 1] != '\n' {
        line_start -= 1;
    }
    let mut in_indentation = true;
    for (index, &c) in chars.iter().enumerate().skip(line_start) {
        match c {
            '\n' => in_indentation = true,
            '\t' if in_indentation => {
                return Some(Cause {
                    index,
                    label: "a tab in the indentation".into(),
                    help: "YAML indents with spaces, never tabs: replace the tab with spaces"
                        .into(),
                });
            }
            ' ' | '\t' => {}
            _ => in_indentation = false,
        }
    }
    None
}

/// The last `[` or `{` before character `at` that is never closed in the
/// whole text, skipping quoted strings, comments and block scalars.
fn unclosed_before(text: &str, at: usize) -> Option<(char, usize)> {
    let mut scan = Scan::default();
    // A block scalar's content: lines indented past this many spaces.
    let mut block_indent: Option<usize> = None;
    let mut line_indent = 0usize;
    let mut at_line_start = true;
    let mut chars = text.chars().enumerate().peekable();
    while let Some((mut index, mut c)) = chars.next() {
        if at_line_start {
            at_line_start = false;
            // Measure the line's indentation; inside a block scalar, skip it.
            line_indent = 0;
            while c == ' ' {
                line_indent += 1;
                match chars.next() {
                    Some((i, next)) => (index, c) = (i, next),
                    None => break,
                }
            }
            if let Some(block) = block_indent {
                if c == '\n' || line_indent > block {
                    // Content (or a blank line) of the block scalar.
                    if c != '\n' {
                        for (_, next) in chars.by_ref() {
                            if next == '\n' {
                                break;
                            }
                        }
                    }
                    at_line_start = true;
                    scan.previous = '\n';
                    continue;
                }
                block_indent = None;
            }
        }
        if !scan.step(index, c, &mut chars) {
            at_line_start = true;
            continue;
        }
        // `|` or `>` starting a value, with only indicators after it: the
        // following more-indented lines are text.
        if scan.quote.is_none()
            && (c == '|' || c == '>')
            && scan.open.is_empty()
            && rest_is_block_header(&mut chars)
        {
            block_indent = Some(line_indent);
            at_line_start = true;
            scan.previous = '\n';
        }
    }
    let Scan {
        open,
        mut never_closed,
        ..
    } = scan;
    never_closed.extend(open);
    never_closed
        .into_iter()
        .filter(|&(_, index)| index < at)
        .max_by_key(|&(_, index)| index)
}

/// What the bracket scan knows outside block scalars.
struct Scan {
    /// The character before the current one.
    previous: char,
    /// The quote a string is open with.
    quote: Option<char>,
    /// Brackets open, innermost last, with their positions.
    open: Vec<(char, usize)>,
    /// Brackets that were still open when an outer one closed.
    never_closed: Vec<(char, usize)>,
}

impl Default for Scan {
    fn default() -> Scan {
        Scan {
            previous: '\n',
            quote: None,
            open: Vec::new(),
            never_closed: Vec::new(),
        }
    }
}

impl Scan {
    /// Takes one character; `false` at the end of a line.
    fn step(
        &mut self,
        index: usize,
        c: char,
        chars: &mut std::iter::Peekable<impl Iterator<Item = (usize, char)>>,
    ) -> bool {
        let before = std::mem::replace(&mut self.previous, c);
        if c == '\n' {
            // A quote left open at the end of a line may span lines; the
            // scanner reports those itself.
            return false;
        }
        match self.quote {
            Some('"') => {
                if c == '\\' {
                    chars.next();
                    self.previous = ' ';
                } else if c == '"' {
                    self.quote = None;
                }
                return true;
            }
            Some(_) => {
                if c == '\'' {
                    if chars.peek().map(|&(_, n)| n) == Some('\'') {
                        chars.next();
                    } else {
                        self.quote = None;
                    }
                }
                return true;
            }
            None => {}
        }
        let token_start = matches!(
            before,
            ' ' | '\t' | '\n' | '[' | '{' | ',' | ':' | '-' | '?'
        );
        match c {
            '#' if matches!(before, ' ' | '\t' | '\n') => {
                for (_, next) in chars.by_ref() {
                    if next == '\n' {
                        self.previous = '\n';
                        return false;
                    }
                }
                false
            }
            '"' | '\'' if token_start => {
                self.quote = Some(c);
                true
            }
            '[' | '{' => {
                self.open.push((c, index));
                true
            }
            ']' | '}' => {
                let wanted = if c == ']' { '[' } else { '{' };
                if let Some(at) = self.open.iter().rposition(|&(o, _)| o == wanted) {
                    // Openers inside it that were never closed stay unclosed.
                    self.never_closed.extend(self.open.drain(at + 1..));
                    self.open.pop();
                }
                true
            }
            _ => true,
        }
    }
}

/// Whether the rest of the line after `|` or `>` holds only block scalar
/// indicators (chomping, indentation) and perhaps a comment; consumes it.
fn rest_is_block_header(
    chars: &mut std::iter::Peekable<impl Iterator<Item = (usize, char)>>,
) -> bool {
    let mut header = String::new();
    while let Some(&(_, c)) = chars.peek() {
        if c == '\n' {
            chars.next();
            break;
        }
        header.push(c);
        chars.next();
    }
    let header = header.split(" #").next().unwrap_or_default().trim();
    header.chars().all(|c| matches!(c, '+' | '-' | '1'..='9'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(text: &str, line: usize, col: usize) -> usize {
        let mut index = 0;
        for (n, l) in text.split('\n').enumerate() {
            if n + 1 == line {
                return index + col - 1;
            }
            index += l.chars().count() + 1;
        }
        panic!("no line {line}");
    }

    #[test]
    fn a_tab_in_the_indentation_is_found_on_a_later_line() {
        let text = "spec:\n  retention: 3d\n\tordering: none\n";
        let cause = locate(text, index_of(text, 2, 14), "found a tab").unwrap();
        assert_eq!(cause.index, index_of(text, 3, 1));
        assert!(cause.help.contains("spaces"));
    }

    #[test]
    fn an_unclosed_bracket_is_found_and_a_closed_one_is_not() {
        let text =
            "spec:\n  subscribe: [tickets.created\n  publish: [tickets.triaged]\n  x: [a, b]\n";
        let cause = locate(
            text,
            index_of(text, 3, 10),
            "illegal placement of ':' indicator",
        )
        .unwrap();
        assert_eq!(cause.index, index_of(text, 2, 14));
        assert!(cause.label.contains("`[`"));
        let closed = "a: [x, y]\nb: {c: d}\nc: : e\n";
        assert_eq!(
            locate(closed, index_of(closed, 3, 4), "illegal placement of ':'"),
            None
        );
    }

    #[test]
    fn brackets_in_quotes_comments_and_block_scalars_do_not_count() {
        let text =
            "a: \"[not\" # {nor this\nb: '{x'' y'\nc: |\n  { text [\n  more\nd: {e: f\ng: h\n";
        let cause = locate(
            text,
            index_of(text, 7, 2),
            "did not find expected ',' or '}'",
        )
        .unwrap();
        assert_eq!(cause.index, index_of(text, 6, 4));
    }
}
