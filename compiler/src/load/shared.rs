//! Parsed files handed from one compile to another of the same project.
//!
//! `cortex diff` compiles two revisions that mostly hold the same files. A
//! file parses to documents that depend on nothing but its path (which the
//! spans name) and its text, so the second compile takes the first's
//! documents for every file whose path and text are the same, and parses
//! only the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rayon::prelude::*;

use crate::diagnostic::Diagnostic;
use crate::node::Node;

/// A file read for a compile: its path and its text.
pub(super) type FileText = (Arc<str>, Arc<str>);

/// What parsing one file gave.
pub(super) type ParseResult = Result<Vec<Node>, Box<Diagnostic>>;

/// Files one compile parsed, by path: the text and the documents of each.
#[derive(Default)]
pub struct ParsedFiles(HashMap<Arc<str>, (Arc<str>, Vec<Node>)>);

/// What a compile does with its parsed files.
#[derive(Default)]
pub enum Sharing {
    /// Parses every file and keeps the documents to itself.
    #[default]
    Alone,
    /// Parses every file and hands a copy of each file's documents to the
    /// compile holding the other end.
    Offer(SyncSender<ParsedFiles>),
    /// Waits for the files the other compile offers (none if it stops
    /// before parsing), takes those with the same text and parses the rest.
    Take(Receiver<ParsedFiles>),
}

impl Sharing {
    /// The two ends: the first compile offers, the second takes.
    pub fn pair() -> (Sharing, Sharing) {
        let (offer, take) = sync_channel(1);
        (Sharing::Offer(offer), Sharing::Take(take))
    }

    /// Parses `texts` over every core, in order, as this sharing says.
    pub(super) fn parse(self, texts: &[FileText]) -> Vec<ParseResult> {
        match self {
            Sharing::Alone => texts
                .par_iter()
                .map(|(file, text)| super::parse_owned(file, text))
                .collect(),
            Sharing::Offer(offer) => {
                let (parsed, copies): (Vec<ParseResult>, Vec<Option<Vec<Node>>>) = texts
                    .par_iter()
                    .map(|(file, text)| {
                        let result = super::parse_owned(file, text);
                        let copy = result.as_ref().ok().cloned();
                        (result, copy)
                    })
                    .unzip();
                let offered = texts
                    .iter()
                    .zip(copies)
                    .filter_map(|((file, text), copy)| {
                        copy.map(|nodes| (file.clone(), (text.clone(), nodes)))
                    })
                    .collect();
                // The other compile may have stopped already: then nobody
                // takes them.
                let _ = offer.send(ParsedFiles(offered));
                parsed
            }
            Sharing::Take(take) => {
                let mut offered = take.recv().unwrap_or_default();
                let taken: Vec<Option<Vec<Node>>> = texts
                    .iter()
                    .map(|(file, text)| {
                        offered
                            .0
                            .remove(file)
                            .filter(|(offered_text, _)| offered_text == text)
                            .map(|(_, nodes)| nodes)
                    })
                    .collect();
                texts
                    .par_iter()
                    .zip(taken)
                    .map(|((file, text), taken)| match taken {
                        Some(nodes) => Ok(nodes),
                        None => super::parse_owned(file, text),
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> FileText {
        (Arc::from(path), Arc::from(text))
    }

    #[test]
    fn the_taker_gets_what_it_would_have_parsed_and_parses_changed_files_itself() {
        let first = vec![
            file("a.yaml", "a: 1\n"),
            file("b.yaml", "b: 1\n"),
            file("gone.yaml", "g: 1\n"),
        ];
        let second = vec![
            file("a.yaml", "a: 1\n"),
            file("b.yaml", "b: 2\n"),
            file("new.yaml", "n: [\n"),
        ];
        let (offer, take) = Sharing::pair();
        let offered = offer.parse(&first);
        let taken = take.parse(&second);
        let alone = Sharing::Alone.parse(&second);
        assert_eq!(offered.len(), 3);
        assert_eq!(taken.len(), alone.len());
        for (taken, alone) in taken.iter().zip(&alone) {
            match (taken, alone) {
                (Ok(t), Ok(a)) => assert_eq!(t, a),
                (Err(t), Err(a)) => assert_eq!(t.message, a.message),
                other => panic!("differ: {other:?}"),
            }
        }
        assert!(taken[2].is_err(), "the new file's syntax error is its own");
    }

    #[test]
    fn a_taker_whose_offerer_stopped_parses_everything() {
        let (offer, take) = Sharing::pair();
        drop(offer);
        let texts = vec![file("a.yaml", "a: 1\n")];
        let taken = take.parse(&texts);
        assert!(matches!(&taken[..], [Ok(nodes)] if nodes.len() == 1));
    }
}
