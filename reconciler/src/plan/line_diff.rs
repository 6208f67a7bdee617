//! Unified line diffs of long texts that differ in a few lines.
//!
//! A changed runtime shard is 40,000 lines of YAML on each side, of which a
//! handful differ. The lines both texts start and end with are found by
//! comparing bytes; only the lines between them, with margins around
//! them, go to the diff algorithm (`similar`'s Myers, which would
//! strip the same lines itself, after splitting and comparing all of them
//! line by line), and its hunk headers are moved down by the lines left
//! out. The result is what `similar` makes of the whole texts.

use std::collections::HashSet;

use similar::TextDiff;

/// How long `similar` may look for the shortest diff before it settles for
/// a longer one.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The unified diff of `old` and `new` with `context` lines around each
/// change, under the header `--- old_name` / `+++ new_name`.
pub fn unified(old: &str, new: &str, context: usize, names: (&str, &str)) -> String {
    let (skipped, old_part, new_part) = middle(old, new, context);
    let text = TextDiff::configure()
        .timeout(DEADLINE)
        .diff_lines(old_part, new_part)
        .unified_diff()
        .context_radius(context)
        .header(names.0, names.1)
        .to_string();
    if skipped == 0 {
        text
    } else {
        shift_hunks(&text, skipped)
    }
}

/// The texts without the lines both share at their start and at their end,
/// except for the margins kept around what changed ([`Margin`]): on until
/// a line that is none of the changed lines, and `context` lines from it.
/// (After finding a diff, `similar` slides each change over the lines
/// equal to its own; such a line stops it, so the diff of the middle is the
/// diff of the whole.) Returns how many lines were cut from the start, and the two
/// middles. Cuts fall after a newline; the end is kept whole when a text
/// does not end with one (`similar` marks that line).
fn middle<'t>(old: &'t str, new: &'t str, context: usize) -> (usize, &'t str, &'t str) {
    let (a, b) = (old.as_bytes(), new.as_bytes());
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    // Only whole lines are shared: back to the last newline in the run.
    let prefix_end = a[..same]
        .iter()
        .rposition(|c| *c == b'\n')
        .map_or(0, |i| i + 1);
    let suffix_len = if old.ends_with('\n') && new.ends_with('\n') {
        shared_end(&a[prefix_end..], &b[prefix_end..])
    } else {
        0
    };
    let changed: HashSet<&[u8]> = lines(&a[prefix_end..a.len() - suffix_len])
        .chain(lines(&b[prefix_end..b.len() - suffix_len]))
        .collect();
    let stops = |line: &[u8]| !changed.contains(line);
    // The margin before: whole lines back from the shared start's end.
    let prefix = &a[..prefix_end];
    let mut start = prefix_end;
    let mut margin = Margin::new(context, &stops);
    while start > 0 {
        let line_start = prefix[..start - 1]
            .iter()
            .rposition(|c| *c == b'\n')
            .map_or(0, |i| i + 1);
        let line = &prefix[line_start..start];
        start = line_start;
        if margin.keeps_after(line) {
            break;
        }
    }
    let skipped = count_lines(&prefix[..start]);
    // The margin after: whole lines on from the shared end's start.
    let suffix = &a[a.len() - suffix_len..];
    let mut end = 0;
    let mut margin = Margin::new(context, &stops);
    while end < suffix.len() {
        let line_end = suffix[end..]
            .iter()
            .position(|c| *c == b'\n')
            .map_or(suffix.len(), |i| end + i + 1);
        let line = &suffix[end..line_end];
        end = line_end;
        if margin.keeps_after(line) {
            break;
        }
    }
    let cut = suffix_len - end;
    (
        skipped,
        &old[start..old.len() - cut],
        &new[start..new.len() - cut],
    )
}

/// A margin being taken, line by line, away from the changed lines: up
/// to the first line that stops a change from sliding, then `context`
/// lines counting it (a change slid up to it still gets its context).
struct Margin<'f> {
    context: usize,
    stops: &'f dyn Fn(&[u8]) -> bool,
    /// Lines taken since the first that stops a change, counting it.
    since_stop: Option<usize>,
}

impl<'f> Margin<'f> {
    fn new(context: usize, stops: &'f dyn Fn(&[u8]) -> bool) -> Margin<'f> {
        Margin {
            context,
            stops,
            since_stop: None,
        }
    }

    /// Takes `line`; whether the margin is complete with it.
    fn keeps_after(&mut self, line: &[u8]) -> bool {
        self.since_stop = match self.since_stop {
            Some(n) => Some(n + 1),
            None => (self.stops)(line).then_some(1),
        };
        self.since_stop.is_some_and(|n| n >= self.context)
    }
}

/// How many bytes both texts end with as whole lines; each starts at a
/// line's start.
fn shared_end(a: &[u8], b: &[u8]) -> usize {
    let same_end = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    // The shared end counts from a line's start in both texts: the start
    // of the text, or just after a newline.
    let starts_line =
        |text: &[u8]| same_end == text.len() || text[text.len() - same_end - 1] == b'\n';
    if starts_line(a) && starts_line(b) {
        return same_end;
    }
    let tail = &a[a.len() - same_end..];
    tail.iter()
        .position(|c| *c == b'\n')
        .map_or(0, |i| same_end - (i + 1))
}

/// The lines of a text, each with its newline.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|c| *c == b'\n')
}

/// Lines of a text of whole lines.
fn count_lines(text: &[u8]) -> usize {
    text.iter().filter(|c| **c == b'\n').count()
}

/// `text` with the line numbers of each `@@ -a,b +c,d @@` header raised
/// by `by`. Headers are the only lines that start with `@@` (every line of
/// a hunk starts with a space, `-`, `+` or `\`).
fn shift_hunks(text: &str, by: usize) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        match shifted_header(line, by) {
            Some(header) => out.push_str(&header),
            None => out.push_str(line),
        }
    }
    out
}

/// A hunk header with its two start lines raised by `by`.
fn shifted_header(line: &str, by: usize) -> Option<String> {
    let rest = line.strip_prefix("@@ -")?;
    let (old_range, rest) = rest.split_once(" +")?;
    let (new_range, end) = rest.split_once(" @@")?;
    let shift = |range: &str| -> Option<String> {
        let (start, len) = match range.split_once(',') {
            Some((start, len)) => (start, Some(len)),
            None => (range, None),
        };
        let start: usize = start.parse().ok()?;
        Some(match len {
            Some(len) => format!("{},{len}", start + by),
            None => (start + by).to_string(),
        })
    };
    Some(format!(
        "@@ -{} +{} @@{end}",
        shift(old_range)?,
        shift(new_range)?
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn whole(old: &str, new: &str, context: usize) -> String {
        TextDiff::configure()
            .timeout(DEADLINE)
            .diff_lines(old, new)
            .unified_diff()
            .context_radius(context)
            .header("a", "b")
            .to_string()
    }

    #[test]
    fn a_change_deep_in_a_long_text_is_numbered_as_in_the_whole_text() {
        let old: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 500\n", "line five hundred\n");
        let diff = unified(&old, &new, 3, ("a", "b"));
        assert_eq!(diff, whole(&old, &new, 3));
        assert!(diff.contains("@@ -498,7 +498,7 @@"), "{diff}");
    }

    /// Texts made of a few distinct lines, so that runs repeat and cuts
    /// fall in every place: at the start, the end, inside repeated lines,
    /// with and without a final newline, one text the other's start.
    /// Up to 160 lines: `similar` reads texts over 100 lines another way.
    fn text() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "", "a b"]), 0..160),
            any::<bool>(),
        )
            .prop_map(|(lines, newline_at_end)| {
                let mut text = lines.join("\n");
                if newline_at_end && !lines.is_empty() {
                    text.push('\n');
                }
                text
            })
    }

    proptest! {
        #[test]
        fn the_diff_of_the_middle_is_the_diff_of_the_whole(
            old in text(),
            new in text(),
            context in 0usize..5,
        ) {
            prop_assert_eq!(unified(&old, &new, context, ("a", "b")), whole(&old, &new, context));
        }

        #[test]
        fn a_text_and_its_edit_diff_as_a_whole(
            old in text(),
            at in 0usize..40,
            insert in text(),
            context in 0usize..5,
        ) {
            let cut = old.char_indices().map(|(i, _)| i).nth(at).unwrap_or(old.len());
            let new = format!("{}{insert}{}", &old[..cut], &old[cut..]);
            prop_assert_eq!(unified(&old, &new, context, ("a", "b")), whole(&old, &new, context));
        }
    }
}
