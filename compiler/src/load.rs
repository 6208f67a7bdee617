//! Stage 1: read `cortex.yaml`, expand `include` globs, parse every document
//! of every file into spanned [`Document`]s.

use std::collections::BTreeSet;
use std::sync::Arc;

use globset::GlobBuilder;

use crate::diagnostic::{Diagnostic, Diagnostics, codes, did_you_mean};
use crate::document::{API_VERSION, Document, Kind};
use crate::node::Node;
use crate::source::{Source, SourceError, check_relative};
use crate::span::{SourceMap, Span};
use crate::yaml;

pub mod shared;

pub use shared::Sharing;

/// The project file at the root of every project.
pub const PROJECT_FILE: &str = "cortex.yaml";

/// Everything loaded from a project: the output of stage 1.
#[derive(Clone, Debug)]
pub struct Documents {
    /// The `Project` document of `cortex.yaml`.
    pub project: Document,
    /// Every other document of the included files, in file order.
    pub specs: Vec<Document>,
    /// Environment documents, from `spec.environments` files and includes.
    pub environments: Vec<Document>,
    /// The text of every file read.
    pub files: SourceMap,
    /// Whether some file could not be read or parsed: its specs are
    /// missing, so checks of references between specs are skipped rather
    /// than reporting every reference to them.
    pub incomplete: bool,
}

/// Loads a project. Returns `None` when `cortex.yaml` itself is unusable;
/// every problem found is pushed to `diags`.
pub fn load(source: &dyn Source, diags: &mut Diagnostics) -> Option<Documents> {
    load_sharing(source, diags, Sharing::Alone)
}

/// [`load`], sharing parsed files with another compile as `sharing` says
/// ([`shared`]).
pub fn load_sharing(
    source: &dyn Source,
    diags: &mut Diagnostics,
    sharing: Sharing,
) -> Option<Documents> {
    let mut loader = Loader {
        source,
        diags,
        files: SourceMap::new(),
        failed: false,
    };
    let project = loader.project()?;
    let mut specs = Vec::new();
    let mut environments = Vec::new();
    // Read the included files in order, parse them in parallel (parsing is
    // pure and most of the cost), then check them in order again.
    let texts: Vec<(Arc<str>, Arc<str>)> = loader
        .included_files(&project)
        .into_iter()
        .filter_map(|(file, referrer)| {
            loader
                .read_text(&file, Some(&referrer))
                .map(|text| (file, text))
        })
        .collect();
    let parsed = sharing.parse(&texts);
    for ((file, _), result) in texts.iter().zip(parsed) {
        let nodes = loader.parsed(result).unwrap_or_default();
        let docs: Vec<Document> = nodes
            .into_iter()
            .filter_map(|n| loader.document(n, file))
            .collect();
        for doc in docs {
            match doc.kind {
                Kind::Environment => environments.push(doc),
                Kind::Project => loader.diags.push(
                    Diagnostic::error(codes::BAD_PROJECT, "a second Project document")
                        .at(&doc.name_span)
                        .label("only cortex.yaml may hold the Project")
                        .help("remove this document, or exclude the file from `include`"),
                ),
                _ => specs.push(doc),
            }
        }
    }
    environments.extend(loader.environment_files(&project));
    Some(Documents {
        project,
        specs,
        environments,
        files: loader.files,
        incomplete: loader.failed,
    })
}

struct Loader<'a> {
    source: &'a dyn Source,
    diags: &'a mut Diagnostics,
    files: SourceMap,
    failed: bool,
}

impl Loader<'_> {
    fn project(&mut self) -> Option<Document> {
        let file: Arc<str> = Arc::from(PROJECT_FILE);
        let nodes = self.parse_file(&file, None)?;
        let count = nodes.len();
        let mut docs: Vec<Document> = nodes
            .into_iter()
            .filter_map(|n| self.document(n, &file))
            .collect();
        match docs.iter().position(|d| d.kind == Kind::Project) {
            Some(at) if count == 1 => Some(docs.swap_remove(at)),
            _ => {
                let span = docs
                    .first()
                    .map_or_else(|| Span::file_only(file.clone()), |d| d.name_span.clone());
                self.diags.push(
                    Diagnostic::error(
                        codes::BAD_PROJECT,
                        format!("{PROJECT_FILE} must hold exactly one document of kind Project (found {count} documents)"),
                    )
                    .at(&span)
                    .help("`cortex init` writes a minimal project file"),
                );
                None
            }
        }
    }

    /// Files matched by `spec.include`, each with the span of the first
    /// pattern that matched it.
    fn included_files(&mut self, project: &Document) -> Vec<(Arc<str>, Span)> {
        let mut out: Vec<(Arc<str>, Span)> = Vec::new();
        let mut seen = BTreeSet::new();
        let Some(patterns) = project
            .node
            .path(&["spec", "include"])
            .and_then(Node::as_seq)
        else {
            return out;
        };
        for pattern_node in patterns {
            let Some(pattern) = pattern_node.as_str().map(|p| p.trim_start_matches("./")) else {
                continue;
            };
            let span = pattern_node.span().clone();
            if check_relative(pattern).is_err() {
                self.diags.push(
                    Diagnostic::error(codes::OUTSIDE_ROOT, format!("include pattern `{pattern}` leads outside the project root"))
                        .at(&span)
                        .label("absolute paths and `..` are not allowed")
                        .help("move the files into the project directory and include them by a relative path"),
                );
                continue;
            }
            let glob = match GlobBuilder::new(pattern).literal_separator(true).build() {
                Ok(glob) => glob.compile_matcher(),
                Err(e) => {
                    self.diags.push(
                        Diagnostic::error(
                            codes::BAD_GLOB,
                            format!("invalid include pattern `{pattern}`"),
                        )
                        .at(&span)
                        .label(e.kind().to_string()),
                    );
                    continue;
                }
            };
            let base = literal_prefix(pattern);
            let listed = match self.source.list(&base) {
                Ok(listed) => listed,
                Err(e) => {
                    self.diags.push(source_diagnostic(&e, &span));
                    continue;
                }
            };
            let mut matched = 0;
            for path in listed {
                if path == PROJECT_FILE || !glob.is_match(&path) {
                    continue;
                }
                matched += 1;
                if seen.insert(path.clone()) {
                    out.push((Arc::from(path.as_str()), span.clone()));
                }
            }
            if matched == 0 {
                self.diags.push(
                    Diagnostic::warning(
                        codes::EMPTY_INCLUDE,
                        format!("include pattern `{pattern}` matches no file"),
                    )
                    .at(&span),
                );
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn environment_files(&mut self, project: &Document) -> Vec<Document> {
        let mut out = Vec::new();
        let Some(map) = project
            .node
            .path(&["spec", "environments"])
            .and_then(Node::as_map)
        else {
            return out;
        };
        for entry in map {
            let Some(path) = entry.value.as_str() else {
                continue;
            };
            let span = entry.value.span().clone();
            if check_relative(path).is_err() {
                self.diags.push(
                    Diagnostic::error(
                        codes::OUTSIDE_ROOT,
                        format!("environment file `{path}` is outside the project root"),
                    )
                    .at(&span),
                );
                continue;
            }
            let file: Arc<str> = Arc::from(path.trim_start_matches("./"));
            for doc in self.documents(&file, Some(&span)) {
                if doc.kind != Kind::Environment {
                    self.diags.push(
                        Diagnostic::error(
                            codes::BAD_DOCUMENT,
                            format!("{} in an environment file", doc.id()),
                        )
                        .at(&doc.name_span)
                        .label("environment files hold Environment documents only"),
                    );
                } else if doc.name != entry.key {
                    self.diags.push(
                        Diagnostic::error(
                            codes::ENVIRONMENT_MISMATCH,
                            format!(
                                "Environment `{}` is registered as `{}`",
                                doc.name, entry.key
                            ),
                        )
                        .at(&doc.name_span)
                        .with_label(&entry.key_span, "registered here")
                        .help(format!("rename one of them so both say `{}`", entry.key)),
                    );
                } else {
                    out.push(doc);
                }
            }
        }
        out
    }

    fn documents(&mut self, file: &Arc<str>, referrer: Option<&Span>) -> Vec<Document> {
        let Some(nodes) = self.parse_file(file, referrer) else {
            return Vec::new();
        };
        nodes
            .into_iter()
            .filter_map(|n| self.document(n, file))
            .collect()
    }

    /// Reads a file as UTF-8 text and records it for snippets.
    fn read_text(&mut self, file: &Arc<str>, referrer: Option<&Span>) -> Option<Arc<str>> {
        let at = referrer
            .cloned()
            .unwrap_or_else(|| Span::file_only(file.clone()));
        let bytes = match self.source.read(file) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.diags.push(source_diagnostic(&e, &at));
                self.failed = true;
                return None;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let valid = String::from_utf8_lossy(&e.as_bytes()[..offset]);
                let line = valid.matches('\n').count() + 1;
                let col = valid.chars().rev().take_while(|&c| c != '\n').count() + 1;
                let start = valid.chars().count() as u32;
                // The snippet shows the line, the bad byte as U+FFFD.
                let shown: Arc<str> = Arc::from(String::from_utf8_lossy(e.as_bytes()).as_ref());
                self.files.insert(file.clone(), shown);
                let at = Span {
                    file: file.clone(),
                    line: line as u32,
                    col: col as u32,
                    start,
                    end: start + 1,
                };
                self.diags.push(
                    Diagnostic::error(codes::NOT_UTF8, format!("{file} is not UTF-8 text"))
                        .at(&at)
                        .label(format!("the first invalid byte (offset {offset})"))
                        .help("save the file as UTF-8"),
                );
                self.failed = true;
                return None;
            }
        };
        let text: Arc<str> = Arc::from(text);
        self.files.insert(file.clone(), text.clone());
        Some(text)
    }

    fn parse_file(&mut self, file: &Arc<str>, referrer: Option<&Span>) -> Option<Vec<Node>> {
        let text = self.read_text(file, referrer)?;
        self.parsed(yaml::parse(file, &text))
    }

    fn parsed(&mut self, result: Result<Vec<Node>, Box<Diagnostic>>) -> Option<Vec<Node>> {
        match result {
            Ok(nodes) => Some(nodes),
            Err(d) => {
                self.diags.push(*d);
                self.failed = true;
                None
            }
        }
    }

    /// Checks the document header and wraps the node.
    fn document(&mut self, mut node: Node, file: &Arc<str>) -> Option<Document> {
        let span = node.span().clone();
        let Some(map) = node.as_map() else {
            self.diags.push(
                Diagnostic::error(
                    codes::BAD_DOCUMENT,
                    format!(
                        "expected a mapping with apiVersion and kind, found {}",
                        node.type_name()
                    ),
                )
                .at(&span),
            );
            return None;
        };
        match map.get("apiVersion") {
            Some(v) if v.as_str() == Some(API_VERSION) => {}
            Some(v) => {
                self.diags.push(
                    Diagnostic::error(codes::BAD_API_VERSION, "unknown apiVersion")
                        .at(v.span())
                        .label(format!("expected `{API_VERSION}`")),
                );
                return None;
            }
            None => {
                self.diags.push(
                    Diagnostic::error(codes::BAD_DOCUMENT, "document has no `apiVersion`")
                        .at(&span)
                        .help(format!("add `apiVersion: {API_VERSION}`")),
                );
                return None;
            }
        }
        let kind = match map.get("kind") {
            Some(k) => match k.as_str().and_then(Kind::parse) {
                Some(kind) => kind,
                None => {
                    let written = k.as_str().unwrap_or_default();
                    let names = Kind::ALL.map(Kind::as_str);
                    self.diags.push(
                        Diagnostic::error(codes::UNKNOWN_KIND, format!("unknown kind `{written}`"))
                            .at(k.span())
                            .maybe_help(did_you_mean(written, names)),
                    );
                    return None;
                }
            },
            None => {
                self.diags.push(
                    Diagnostic::error(codes::BAD_DOCUMENT, "document has no `kind`").at(&span),
                );
                return None;
            }
        };
        let Some(name_node) = map.get("metadata").and_then(|m| m.get("name")) else {
            self.diags.push(
                Diagnostic::error(
                    codes::BAD_DOCUMENT,
                    format!("{kind} has no `metadata.name`"),
                )
                .at(map.get("metadata").map_or(&span, |m| m.span()))
                .help("every document needs `metadata: { name: … }`"),
            );
            return None;
        };
        let Some(name) = name_node.as_str().map(str::to_string) else {
            self.diags.push(
                Diagnostic::error(
                    codes::SCHEMA_WRONG_TYPE,
                    format!(
                        "`metadata.name` must be a string, found {}",
                        name_node.type_name()
                    ),
                )
                .at(name_node.span()),
            );
            return None;
        };
        let name_span = name_node.span().clone();
        let owner = owner(kind, &name);
        // Files parsed for the specs have their owners set already, over
        // every core ([`header_owner`]).
        if node.prov.spec != owner {
            yaml::set_owner(&mut node, &owner);
        }
        Some(Document {
            kind,
            name,
            name_span,
            file: file.clone(),
            node,
        })
    }
}

/// The spec that owns the nodes of a document of `kind` named `name` (as
/// provenance names it).
fn owner(kind: Kind, name: &str) -> Arc<str> {
    match kind {
        Kind::Environment => Arc::from(format!("env {name}")),
        Kind::Project => Arc::from("project"),
        _ => Arc::from(name),
    }
}

/// The owner of a document whose header [`Loader::document`] accepts
/// (this `apiVersion`, a known kind, a string name), read from the
/// document alone: set while files are parsed in parallel, so that the
/// documents are not walked again one by one.
fn header_owner(node: &Node) -> Option<Arc<str>> {
    let map = node.as_map()?;
    if map.get("apiVersion")?.as_str()? != API_VERSION {
        return None;
    }
    let kind = Kind::parse(map.get("kind")?.as_str()?)?;
    let name = map.get("metadata")?.get("name")?.as_str()?;
    Some(owner(kind, name))
}

/// Parses `text` and gives each document the owner its header names.
fn parse_owned(file: &Arc<str>, text: &str) -> Result<Vec<Node>, Box<Diagnostic>> {
    let mut nodes = yaml::parse(file, text)?;
    for node in &mut nodes {
        if let Some(owner) = header_owner(node) {
            yaml::set_owner(node, &owner);
        }
    }
    Ok(nodes)
}

/// The directory part of a glob before its first wildcard (`agents/**/*.yaml`
/// → `agents`), so only that directory is listed.
pub(crate) fn literal_prefix(pattern: &str) -> String {
    let mut parts = Vec::new();
    let components: Vec<&str> = pattern.split('/').collect();
    for (i, part) in components.iter().enumerate() {
        if i + 1 == components.len() || part.contains(['*', '?', '[', '{']) {
            break;
        }
        if *part != "." && !part.is_empty() {
            parts.push(*part);
        }
    }
    parts.join("/")
}

/// A diagnostic for a file that could not be read, pointing at what named it.
fn source_diagnostic(err: &SourceError, at: &Span) -> Diagnostic {
    match err {
        SourceError::NotFound(path) => Diagnostic::error(codes::FILE_UNREADABLE, format!("file `{path}` not found")).at(at),
        SourceError::OutsideRoot { path, .. } => Diagnostic::error(codes::OUTSIDE_ROOT, format!("`{path}` leads outside the project root"))
            .at(at)
            .label(format!("`{path}` is (or links to) a file outside the project"))
            .help("cortex reads only files inside the project directory; copy the file in instead of linking to it"),
        SourceError::TooLarge { path, size, limit } => Diagnostic::error(codes::FILE_TOO_LARGE, format!("`{path}` is too large ({size} bytes; the limit is {limit})"))
            .at(at)
            .help("split it into several files"),
        SourceError::Io { .. } => Diagnostic::error(codes::FILE_UNREADABLE, err.to_string()).at(at),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{literal_prefix, parse_owned};
    use crate::node::{Node, Value};

    /// Every owner in the tree of `node`.
    fn owners(node: &Node, into: &mut Vec<String>) {
        into.push(node.prov.spec.to_string());
        match &node.value {
            Value::Seq(items) => items.iter().for_each(|n| owners(n, into)),
            Value::Map(map) => map.iter().for_each(|e| owners(&e.value, into)),
            _ => {}
        }
    }

    #[test]
    fn parsed_documents_are_owned_by_the_spec_their_header_names() {
        let text = "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: { name: triage }\nspec: { env: [ { name: A, value: b } ] }\n---\napiVersion: cortex.codevald.io/v1\nkind: Environment\nmetadata: { name: prod }\nspec: {}\n---\napiVersion: cortex.codevald.io/v1\nkind: Nope\nmetadata: { name: x }\n";
        let file: Arc<str> = Arc::from("agents.yaml");
        let nodes = parse_owned(&file, text).expect("parses");
        let unowned = crate::yaml::parse(&file, text).expect("parses")[2]
            .prov
            .spec
            .to_string();
        for (node, owner) in nodes.iter().zip(["triage", "env prod", unowned.as_str()]) {
            let mut found = Vec::new();
            owners(node, &mut found);
            assert!(found.len() > 3);
            assert!(
                found.iter().all(|o| o == owner),
                "{found:?} against {owner}"
            );
        }
    }

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(literal_prefix("agents/**/*.yaml"), "agents");
        assert_eq!(literal_prefix("topics.yaml"), "");
        assert_eq!(literal_prefix("a/b/c.yaml"), "a/b");
        assert_eq!(literal_prefix("./policies/*.yaml"), "policies");
        assert_eq!(literal_prefix("*/x.yaml"), "");
    }
}
