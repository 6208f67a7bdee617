//! The spanned value tree every spec is held in between loading and rendering.
//!
//! Each [`Node`] carries its [`Provenance`], so any later stage can point a
//! diagnostic at the exact text, and `cortex explain` can say which file and
//! which spec in the inheritance chain set a value.

use crate::span::{Provenance, Span};

mod de;

pub use de::from_node;

/// A value with its provenance.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it came from.
    pub prov: Provenance,
}

/// A YAML value (core schema) whose children are [`Node`]s.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    #[default]
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in document order.
    Map(Map),
}

/// One key of a [`Map`] with the position of the key itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Where the key is written (diagnostics about the key point here).
    pub key_span: Span,
    /// The value.
    pub value: Node,
}

/// A mapping that keeps document order. Specs have few keys per level, so
/// a small map looks keys up in its vector; from [`INDEX_FROM`] keys on it
/// also keeps a hash index, so a mapping with many keys (a file of 100,000
/// annotations) is built and read in linear time, not quadratic.
#[derive(Clone, Debug, Default)]
pub struct Map {
    entries: Vec<Entry>,
    /// Key → position in `entries`, once there are [`INDEX_FROM`] entries.
    index: KeyIndex,
}

/// Entries from which a [`Map`] keeps a hash index: below it a linear
/// scan of short keys is as fast as hashing.
pub const INDEX_FROM: usize = 16;

/// Key → position among a map's entries, kept from [`INDEX_FROM`] entries
/// on (the YAML builder keeps one the same way while it reads a mapping).
/// Boxed: most maps have none, and a map's size is every node's: eight
/// bytes here instead of the forty-eight of a `HashMap`.
#[allow(clippy::box_collection)]
pub(crate) type KeyIndex = Option<Box<std::collections::HashMap<String, usize>>>;

/// Where `key` is among `entries`: through `index` when there is one,
/// else by a scan.
pub(crate) fn find_key(entries: &[Entry], index: &KeyIndex, key: &str) -> Option<usize> {
    match index {
        Some(index) => index.get(key).copied(),
        None => entries.iter().position(|e| e.key == key),
    }
}

/// Notes in `index` the last of `entries`, just pushed, building the index
/// once the entries reach [`INDEX_FROM`].
pub(crate) fn index_last(entries: &[Entry], index: &mut KeyIndex) {
    let Some(last) = entries.len().checked_sub(1) else {
        return;
    };
    match index {
        Some(index) => {
            index.insert(entries[last].key.clone(), last);
        }
        None if entries.len() >= INDEX_FROM => *index = Some(Box::new(build_index(entries))),
        None => {}
    }
}

fn build_index(entries: &[Entry]) -> std::collections::HashMap<String, usize> {
    entries
        .iter()
        .enumerate()
        .map(|(at, e)| (e.key.clone(), at))
        .collect()
}

impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        self.entries == other.entries
    }
}

impl Map {
    /// An empty map.
    pub fn new() -> Map {
        Map::default()
    }

    fn position(&self, key: &str) -> Option<usize> {
        find_key(&self.entries, &self.index, key)
    }

    /// Builds the index again from the entries (after a removal), or drops
    /// it when the map is small again.
    fn reindex(&mut self) {
        self.index =
            (self.entries.len() >= INDEX_FROM).then(|| Box::new(build_index(&self.entries)));
    }

    /// The entry for `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.position(key).map(|at| &self.entries[at])
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// The value for `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        let at = self.position(key)?;
        Some(&mut self.entries[at].value)
    }

    /// Sets `key`, keeping its position when it exists, appending otherwise.
    pub fn insert(&mut self, entry: Entry) {
        match self.position(&entry.key) {
            Some(at) => self.entries[at] = entry,
            None => self.append(entry),
        }
    }

    /// Appends an entry whose key is not in the map.
    fn append(&mut self, entry: Entry) {
        self.entries.push(entry);
        index_last(&self.entries, &mut self.index);
    }

    /// A map of `entries`, whose keys are all different, with the `index`
    /// [`index_last`] kept of them.
    pub(crate) fn from_unique_entries(entries: Vec<Entry>, index: KeyIndex) -> Map {
        Map { entries, index }
    }

    /// Removes `key` and returns its entry.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let at = self.position(key)?;
        let removed = self.entries.remove(at);
        if self.index.is_some() {
            self.reindex();
        }
        Some(removed)
    }

    /// Entries in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    /// The values in order, mutably (keys cannot change in place).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        self.entries.iter_mut().map(|e| &mut e.value)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The map with each value replaced by `f(key, value)`; keys and their
    /// order stay as they are.
    pub fn map_values(self, mut f: impl FnMut(&str, Node) -> Node) -> Map {
        let entries = self
            .entries
            .into_iter()
            .map(
                |Entry {
                     key,
                     key_span,
                     value,
                 }| {
                    let value = f(&key, value);
                    Entry {
                        key,
                        key_span,
                        value,
                    }
                },
            )
            .collect();
        Map {
            entries,
            index: self.index,
        }
    }

    /// Keeps only the entries for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&Entry) -> bool) {
        let before = self.entries.len();
        self.entries.retain(keep);
        if self.entries.len() != before && self.index.is_some() {
            self.reindex();
        }
    }
}

impl IntoIterator for Map {
    type Item = Entry;
    type IntoIter = std::vec::IntoIter<Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = &'a Entry;
    type IntoIter = std::slice::Iter<'a, Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl Node {
    /// A node with the given value and provenance.
    pub fn new(value: Value, prov: Provenance) -> Node {
        Node { value, prov }
    }

    /// The span of this node.
    pub fn span(&self) -> &Span {
        &self.prov.span
    }

    /// The map, when this node is one.
    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The sequence, when this node is one.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The string, when this node is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, when this node is one.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The child at `key` when this node is a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.get(key)
    }

    /// Follows a path of map keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The string at a path of map keys.
    pub fn str_at(&self, keys: &[&str]) -> Option<&str> {
        self.path(keys)?.as_str()
    }

    /// Resolves an RFC 6901 JSON pointer (`/spec/env/0/name`).
    pub fn pointer(&self, pointer: &str) -> Option<&Node> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut node = self;
        for raw in pointer.strip_prefix('/')?.split('/') {
            let token = raw.replace("~1", "/").replace("~0", "~");
            node = match &node.value {
                Value::Map(m) => m.get(&token)?,
                Value::Seq(s) => s.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The map entry a pointer ends in (its key span is what a diagnostic about
    /// the key itself should underline).
    pub fn pointer_entry(&self, pointer: &str) -> Option<&Entry> {
        let (parent, last) = pointer.rsplit_once('/')?;
        let key = last.replace("~1", "/").replace("~0", "~");
        self.pointer(parent)?.as_map()?.entry(&key)
    }

    /// A short name for the value's type, as a diagnostic would say it.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Converts to JSON (for schema validation and templating contexts).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a node tree from JSON, giving every node the same provenance
    /// (used for values computed by a template expression).
    pub fn from_json(value: &serde_json::Value, prov: &Provenance) -> Node {
        use serde_json::Value as J;
        let value = match value {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Seq(items.iter().map(|v| Node::from_json(v, prov)).collect()),
            J::Object(obj) => {
                let mut map = Map::new();
                for (k, v) in obj {
                    map.insert(Entry {
                        key: k.clone(),
                        key_span: prov.span.clone(),
                        value: Node::from_json(v, prov),
                    });
                }
                Value::Map(map)
            }
        };
        Node::new(value, prov.clone())
    }

    /// Whether two nodes hold the same value, wherever they came from
    /// (provenance and key order ignored).
    pub fn same_value(&self, other: &Node) -> bool {
        match (&self.value, &other.value) {
            // Keys are mostly in the same order: a key found in the same
            // place needs no lookup.
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b.iter()).all(|(e, in_place)| {
                        if e.key == in_place.key {
                            e.value.same_value(&in_place.value)
                        } else {
                            b.get(&e.key).is_some_and(|other| e.value.same_value(other))
                        }
                    })
            }
            (Value::Seq(a), Value::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_value(y))
            }
            (a, b) => a == b,
        }
    }

    /// The nodes under this one (and itself) that `wanted` picks, each
    /// with its JSON pointer, in document order. The way down is kept as
    /// keys and positions; a pointer is written out only for a node picked
    /// (a walk of a whole spec for its templates picks few).
    pub fn nodes_where(&self, wanted: &dyn Fn(&Node) -> bool) -> Vec<(String, &Node)> {
        enum Step<'n> {
            Key(&'n str),
            At(usize),
        }
        fn visit<'n>(
            node: &'n Node,
            path: &mut Vec<Step<'n>>,
            wanted: &dyn Fn(&Node) -> bool,
            found: &mut Vec<(String, &'n Node)>,
        ) {
            if wanted(node) {
                let mut pointer = String::new();
                for step in path.iter() {
                    match step {
                        Step::Key(key) => push_pointer_token(&mut pointer, key),
                        Step::At(at) => {
                            use std::fmt::Write;
                            // Writing into a string cannot fail.
                            let _ = write!(pointer, "/{at}");
                        }
                    }
                }
                found.push((pointer, node));
            }
            match &node.value {
                Value::Map(m) => {
                    for e in m {
                        path.push(Step::Key(&e.key));
                        visit(&e.value, path, wanted, found);
                        path.pop();
                    }
                }
                Value::Seq(items) => {
                    for (at, item) in items.iter().enumerate() {
                        path.push(Step::At(at));
                        visit(item, path, wanted, found);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        visit(self, &mut Vec::new(), wanted, &mut found);
        found
    }
}

/// Escapes one JSON-pointer token.
pub fn pointer_token(key: &str) -> String {
    let mut token = String::with_capacity(key.len());
    push_escaped(&mut token, key);
    token
}

/// Appends `/` and `key` as a JSON-pointer token to `pointer`, without
/// making a string for the token.
pub fn push_pointer_token(pointer: &mut String, key: &str) {
    pointer.push('/');
    push_escaped(pointer, key);
}

fn push_escaped(out: &mut String, key: &str) {
    if !key.contains(['~', '/']) {
        out.push_str(key);
        return;
    }
    for c in key.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    fn node(file: &str, text: &str) -> super::Node {
        let file: Arc<str> = Arc::from(file);
        crate::yaml::parse(&file, text).expect("parses").remove(0)
    }

    #[test]
    fn nodes_where_gives_the_picked_nodes_with_their_pointers_in_document_order() {
        let root = node(
            "f.yaml",
            "a/b: {x: \"{{ one }}\", n: 1}\nlist: [plain, \"{{ two }}\", [\"{{ three }}\"]]\n\"t~\": \"{{ four }}\"\n",
        );
        let found: Vec<(String, String)> = root
            .nodes_where(&|n| n.as_str().is_some_and(|s| s.contains("{{")))
            .into_iter()
            .map(|(pointer, n)| (pointer, n.as_str().unwrap_or_default().to_string()))
            .collect();
        let expected = [
            ("/a~1b/x", "{{ one }}"),
            ("/list/1", "{{ two }}"),
            ("/list/2/0", "{{ three }}"),
            ("/t~0", "{{ four }}"),
        ];
        assert_eq!(
            found,
            expected
                .map(|(p, v)| (p.to_string(), v.to_string()))
                .to_vec()
        );
        assert_eq!(
            root.nodes_where(&|_| true)[0].0,
            "",
            "the root is picked with the empty pointer"
        );
    }

    #[test]
    fn pointer_tokens_escape_tilde_before_slash() {
        assert_eq!(super::pointer_token("a/b~c"), "a~1b~0c");
        assert_eq!(super::pointer_token("~1"), "~01");
        assert_eq!(super::pointer_token("plain"), "plain");
        let mut pointer = String::from("/spec");
        super::push_pointer_token(&mut pointer, "x/y");
        super::push_pointer_token(&mut pointer, "");
        assert_eq!(pointer, "/spec/x~1y/");
    }

    #[test]
    fn same_value_ignores_where_values_came_from_and_key_order() {
        let a = node("a.yaml", "x: 1\ny: {p: [1, 2], q: s}\nz: null\n");
        let moved = node("b.yaml", "\n\nx: 1\nz: null\ny: {q: s, p: [1, 2]}\n");
        assert!(a.same_value(&moved) && moved.same_value(&a));
    }

    #[test]
    fn same_value_sees_a_changed_value_in_place_or_out_of_place() {
        let a = node("a.yaml", "x: 1\ny: {p: [1, 2], q: s}\n");
        for other in [
            "x: 1\ny: {p: [1, 3], q: s}\n",
            "y: {q: s, p: [1, 3]}\nx: 1\n",
            "x: 1\ny: {p: [1, 2], r: s}\n",
            "x: 1\ny: {p: [1, 2]}\n",
        ] {
            assert!(!a.same_value(&node("b.yaml", other)), "{other}");
        }
    }
}
