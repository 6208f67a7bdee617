//! The output of a build: Kubernetes objects, the runtime configuration,
//! and an inventory with a content hash of every object; and the files of
//! `cortex build -o OUT` (chart, manifests.yaml, runtime.json,
//! inventory.json), written as streams into a [`Sink`]. A [`Bundle`] holds
//! whole objects and the runtime config as JSON (plans and diffs compare
//! them); an [`Output`] holds each object as its YAML and hash only, and
//! the runtime config as [`RuntimeText`] (a build). Output is
//! deterministic: sorted keys, stable order.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{Value, json};

use crate::hash::canonical_hash;
use crate::runtime_config::RuntimeConfig;
pub use crate::runtime_shared::{SharedRuntime, Taken};
pub use crate::runtime_text::RuntimeText;
use crate::validate::pools::PoolUsage;
use crate::yaml_out::to_yaml;

/// Largest chart template file cortex writes (Helm's limit is 5 MiB).
pub const CHART_FILE_BYTES: usize = 1024 * 1024;

/// Version of the inventory.json layout.
pub const INVENTORY_FORMAT_VERSION: u32 = 1;

/// One rendered Kubernetes object: who it is, and its body — the whole
/// tree ([`Object`], the default, for plans and diffs) or what the output
/// files carry of it ([`Emitted`], for a build).
#[derive(Clone, Debug, PartialEq)]
pub struct Object<B = Value> {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// The template (or manifest file) that rendered it.
    pub template: String,
    /// The spec it was rendered for (`Agent/triage`), none for project-wide objects.
    pub spec: Option<String>,
    /// The object (keys sorted: JSON maps are ordered in this build), or
    /// its text.
    pub body: B,
}

/// What a build keeps of an object once it is rendered, a small part of
/// the object's tree: its YAML and the hash of its canonical JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Text {
    /// The object as YAML.
    pub yaml: String,
    /// SHA-256 of the object's canonical JSON.
    pub hash: String,
}

impl Text {
    /// What the output files carry of the object `body`.
    pub fn of(body: &Value) -> Text {
        Text {
            yaml: to_yaml(body),
            hash: canonical_hash(body),
        }
    }
}

/// An object as the output files carry it.
pub type Emitted = Object<Text>;

impl<B> Object<B> {
    /// Who the object is.
    pub fn head(&self) -> Head<'_> {
        Head {
            api_version: &self.api_version,
            kind: &self.kind,
            namespace: self.namespace.as_deref(),
            name: &self.name,
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.head().group()
    }

    /// `group/kind/namespace/name`, the identity plans key on.
    pub fn identity(&self) -> String {
        self.head().identity()
    }

    /// The same object with its body made into another form.
    pub fn map_body<C>(self, into: impl FnOnce(B) -> C) -> Object<C> {
        Object {
            api_version: self.api_version,
            kind: self.kind,
            namespace: self.namespace,
            name: self.name,
            template: self.template,
            spec: self.spec,
            body: into(self.body),
        }
    }
}

impl Object {
    /// An object rendered by `template` for `spec`.
    pub fn new(
        api_version: String,
        kind: String,
        name: String,
        template: String,
        spec: Option<String>,
        body: Value,
    ) -> Object {
        Object {
            namespace: body
                .get("metadata")
                .and_then(|metadata| metadata.get("namespace"))
                .and_then(Value::as_str)
                .map(str::to_string),
            api_version,
            kind,
            name,
            template,
            spec,
            body,
        }
    }

    /// The object as the output files carry it: who it is, its YAML and
    /// its hash.
    pub fn to_emitted(&self) -> Emitted {
        Emitted {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            template: self.template.clone(),
            spec: self.spec.clone(),
            body: Text::of(&self.body),
        }
    }
}

/// The identifying fields of an object.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    /// `apiVersion`.
    pub api_version: &'a str,
    /// `kind`.
    pub kind: &'a str,
    /// `metadata.namespace`.
    pub namespace: Option<&'a str>,
    /// `metadata.name`.
    pub name: &'a str,
}

impl<'a> Head<'a> {
    /// The API group (`""` for the core group).
    pub fn group(&self) -> &'a str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// `group/kind/namespace/name`, the identity plans key on.
    pub fn identity(&self) -> String {
        let (group, namespace) = (self.group(), self.namespace.unwrap_or(""));
        let mut identity = String::with_capacity(
            group.len() + self.kind.len() + namespace.len() + self.name.len() + 3,
        );
        for (i, part) in [group, self.kind, namespace, self.name]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                identity.push('/');
            }
            identity.push_str(part);
        }
        identity
    }
}

/// What a [`Bundle`] holds of each object's body: the whole tree
/// ([`Value`], for plans and diffs) or what the output files need
/// ([`Text`], for a build).
pub trait Body: Send + Sized {
    /// The object with this body, made from a checked object (in the worker
    /// that rendered it).
    fn from_object(object: Object) -> Object<Self>;
}

impl Body for Value {
    fn from_object(object: Object) -> Object {
        object
    }
}

impl Body for std::sync::Arc<Value> {
    fn from_object(object: Object) -> Object<Self> {
        object.map_body(std::sync::Arc::new)
    }
}

impl Body for Text {
    /// The tree is dropped with `object`, in the worker that rendered it.
    fn from_object(object: Object) -> Emitted {
        object.map_body(|body| Text::of(&body))
    }
}

/// Project facts every template sees.
#[derive(Clone, Debug, PartialEq)]
pub struct Project {
    /// Project name.
    pub name: String,
    /// Target namespace.
    pub namespace: String,
    /// Selected environment.
    pub environment: Option<String>,
    /// Chart name (defaults to the project name).
    pub chart_name: String,
    /// Chart version (defaults to 0.1.0).
    pub chart_version: String,
    /// Chart description.
    pub chart_description: String,
    /// Broker URL handed to agents in the cluster.
    pub broker_url: String,
}

impl Project {
    /// As the templates see it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "namespace": self.namespace,
            "environment": self.environment,
            "chart": { "name": self.chart_name, "version": self.chart_version, "description": self.chart_description },
            "brokerUrl": self.broker_url,
        })
    }
}

/// Apply order of kinds: what others depend on first.
pub fn kind_rank(kind: &str) -> usize {
    const ORDER: [&str; 12] = [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
    ];
    ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(if kind == "PodDisruptionBudget" {
            12
        } else {
            13
        })
}

/// Everything a build produces: with whole objects for plans and diffs,
/// or as an [`Output`] for the files of a build.
#[derive(Clone, Debug)]
pub struct Bundle<B = Value, R = Value> {
    /// Project facts.
    pub project: Project,
    /// The objects, in apply order (kind rank, then namespace and name).
    pub objects: Vec<Object<B>>,
    /// The runtime configuration (runtime.json): as JSON, or for a build's
    /// files as [`RuntimeText`].
    pub runtime: R,
    /// Pool usage at maximum scale.
    pub pools: Vec<PoolUsage>,
}

/// What a [`Bundle`] holds of the runtime configuration.
pub trait Runtime: Send + Sized {
    /// Whether it can take agents' and workflows' entries from another
    /// render ([`SharedRuntime`] can).
    const TAKES: bool = false;
    /// Made from the typed config.
    fn from_config(config: RuntimeConfig) -> Self;
    /// Made from the typed config and the entries taken from another
    /// render (the config has none of those).
    fn from_config_taking(config: RuntimeConfig, taken: Vec<Taken>) -> Self {
        debug_assert!(taken.is_empty(), "only a form that TAKES takes entries");
        Self::from_config(config)
    }
    /// The entries another render may take.
    fn shared_entries(&self) -> Vec<Taken> {
        Vec::new()
    }
    /// Its shards' compact JSON, each at most `limit` bytes
    /// ([`crate::render::runtime::shards`]).
    fn shards(&self, limit: usize) -> Vec<String>;
}

impl Runtime for SharedRuntime {
    const TAKES: bool = true;

    fn from_config(config: RuntimeConfig) -> SharedRuntime {
        SharedRuntime::from_config(config, Vec::new())
    }

    fn from_config_taking(config: RuntimeConfig, taken: Vec<Taken>) -> SharedRuntime {
        SharedRuntime::from_config(config, taken)
    }

    fn shared_entries(&self) -> Vec<Taken> {
        self.entries()
    }

    fn shards(&self, limit: usize) -> Vec<String> {
        SharedRuntime::shards(self, limit)
    }
}

impl Runtime for Value {
    fn from_config(config: RuntimeConfig) -> Value {
        config.into_value()
    }

    fn shards(&self, limit: usize) -> Vec<String> {
        crate::render::runtime::shards(self, limit)
    }
}

impl Runtime for RuntimeText {
    fn from_config(config: RuntimeConfig) -> RuntimeText {
        RuntimeText::from_config(config)
    }

    fn shards(&self, limit: usize) -> Vec<String> {
        crate::render::runtime::shards_of(self, limit)
    }
}

/// A build's output: the objects as the files carry them.
pub type Output = Bundle<Text, RuntimeText>;

impl<B: Sync, R> Bundle<B, R> {
    /// Sorts the objects into apply order.
    pub fn new(
        project: Project,
        objects: Vec<Object<B>>,
        runtime: R,
        pools: Vec<PoolUsage>,
    ) -> Bundle<B, R> {
        use rayon::prelude::*;
        // Each object's sort key is made once, side by side with the
        // others', not looked up at every comparison; the keys are sorted
        // over both cores, not the objects: an object is moved once.
        // The position given breaks ties, so the order is the same on
        // every run.
        let mut order: Vec<(usize, &str, Option<&str>, &str, usize)> = objects
            .iter()
            .enumerate()
            .map(|(at, o)| {
                let head = o.head();
                (
                    kind_rank(head.kind),
                    head.kind,
                    head.namespace,
                    head.name,
                    at,
                )
            })
            .collect();
        order.par_sort_unstable();
        let order: Vec<usize> = order.into_iter().map(|key| key.4).collect();
        let mut slots: Vec<Option<Object<B>>> = objects.into_iter().map(Some).collect();
        let objects: Vec<Object<B>> = order.iter().filter_map(|&at| slots[at].take()).collect();
        Bundle {
            project,
            objects,
            runtime,
            pools,
        }
    }

    /// Number of objects per kind, in apply order.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for object in &self.objects {
            let kind = object.head().kind;
            match counts.iter_mut().find(|(k, _)| k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind.to_string(), 1)),
            }
        }
        counts
    }
}

impl Bundle {
    /// The output files' view of the bundle (each object's YAML and hash
    /// made over all cores; the bundle is kept).
    pub fn output(&self) -> Output {
        use rayon::prelude::*;
        Bundle {
            project: self.project.clone(),
            objects: self
                .objects
                .par_iter()
                .with_min_len(64)
                .map(Object::to_emitted)
                .collect(),
            runtime: RuntimeText::from_value(&self.runtime),
            pools: self.pools.clone(),
        }
    }

    /// Every output file of `cortex build -o OUT`, by relative path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.output().files()
    }
}

/// Where [`Output::emit`] puts the files of a build.
pub trait Sink: Sync {
    /// Makes the file `path` (relative to the output directory) with what
    /// `fill` writes into it; called once per file, from several threads.
    fn file(
        &self,
        path: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()>;
}

/// Files kept in memory, by path ([`Output::files`]).
#[derive(Default)]
struct InMemory(std::sync::Mutex<BTreeMap<String, Vec<u8>>>);

impl Sink for InMemory {
    fn file(
        &self,
        path: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut bytes = Vec::new();
        fill(&mut bytes)?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_string(), bytes);
        Ok(())
    }
}

/// A file written into a string (the single-file accessors).
fn text_of(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
    let mut bytes = Vec::new();
    // Writing into memory cannot fail, and every writer writes UTF-8.
    let _ = write(&mut bytes);
    String::from_utf8(bytes).unwrap_or_default()
}

/// One line of `inventory.json`'s `objects` (fields in sorted order, as
/// every JSON map cortex writes). It is written by [`pretty_line`]; its
/// `Serialize` is the reference a test holds that writing to.
#[derive(serde::Serialize)]
struct InventoryObject<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    hash: &'a str,
    identity: String,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
    spec: Option<&'a str>,
    template: &'a str,
}

impl InventoryObject<'_> {
    /// Its members, in the order serde writes them.
    fn members(&self) -> [(&str, Option<&str>); 8] {
        [
            ("apiVersion", Some(self.api_version)),
            ("hash", Some(self.hash)),
            ("identity", Some(&self.identity)),
            ("kind", Some(self.kind)),
            ("name", Some(self.name)),
            ("namespace", self.namespace),
            ("spec", self.spec),
            ("template", Some(self.template)),
        ]
    }
}

/// One line of `inventory.json`'s `runtimeObjects`.
#[derive(serde::Serialize)]
struct InventoryRuntimeObject<'a> {
    hash: String,
    identity: String,
    kind: &'a str,
    name: &'a str,
}

impl InventoryRuntimeObject<'_> {
    /// Its members, in the order serde writes them.
    fn members(&self) -> [(&str, Option<&str>); 4] {
        [
            ("hash", Some(&self.hash)),
            ("identity", Some(&self.identity)),
            ("kind", Some(self.kind)),
            ("name", Some(self.name)),
        ]
    }
}

/// An inventory line as `serde_json::to_writer_pretty` writes it two
/// levels deep: its members (strings, or null) one per line.
fn pretty_line(members: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut text = Vec::with_capacity(members.len() * 80);
    text.extend_from_slice(b"    {");
    for (i, (key, value)) in members.iter().enumerate() {
        text.extend_from_slice(if i == 0 { b"\n      " } else { b",\n      " });
        crate::hash::write_string(&mut text, key);
        text.extend_from_slice(b": ");
        match value {
            Some(value) => crate::hash::write_string(&mut text, value),
            None => text.extend_from_slice(b"null"),
        }
    }
    text.extend_from_slice(b"\n    }");
    text
}

/// `inventory.json`.
#[derive(serde::Serialize)]
struct Inventory<'a> {
    environment: Option<&'a str>,
    format_version: u32,
    namespace: &'a str,
    objects: Vec<InventoryObject<'a>>,
    project: &'a str,
    #[serde(rename = "runtimeObjects")]
    runtime_objects: Vec<InventoryRuntimeObject<'a>>,
}

/// `inventory` as `serde_json::to_writer_pretty` writes it, and a line
/// break: each object's lines made on their own ([`pretty_line`]), over
/// every core (one serializer over the whole list was one core's work
/// while the others had finished theirs).
fn write_inventory_pretty(inventory: &Inventory<'_>, out: &mut dyn Write) -> io::Result<()> {
    use crate::pretty_json::{member_key, write_members};
    use rayon::prelude::*;
    /// Each line of `list`, made from its members.
    fn lines<'a, T: Sync, const N: usize>(
        list: &'a [T],
        members: impl Fn(&'a T) -> [(&'a str, Option<&'a str>); N] + Sync,
    ) -> Vec<Vec<u8>> {
        list.par_iter()
            .with_min_len(256)
            .map(|item| pretty_line(&members(item)))
            .collect()
    }
    let (objects, runtime_objects) = rayon::join(
        || lines(&inventory.objects, InventoryObject::members),
        || lines(&inventory.runtime_objects, InventoryRuntimeObject::members),
    );
    fn scalar<T: serde::Serialize>(out: &mut dyn Write, key: &str, value: &T) -> io::Result<()> {
        member_key(out, key, 1)?;
        Ok(serde_json::to_writer(out, value)?)
    }
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    out.write_all(b"{\n")?;
    scalar(&mut out, "environment", &inventory.environment)?;
    out.write_all(b",\n")?;
    scalar(&mut out, "format_version", &inventory.format_version)?;
    out.write_all(b",\n")?;
    scalar(&mut out, "namespace", &inventory.namespace)?;
    out.write_all(b",\n")?;
    member_key(&mut out, "objects", 1)?;
    write_members(&mut out, *b"[]", &objects, 1)?;
    out.write_all(b",\n")?;
    scalar(&mut out, "project", &inventory.project)?;
    out.write_all(b",\n")?;
    member_key(&mut out, "runtimeObjects", 1)?;
    write_members(&mut out, *b"[]", &runtime_objects, 1)?;
    out.write_all(b"\n}\n")?;
    out.flush()
}

impl Output {
    /// `manifests.yaml`: every object as multi-document YAML.
    pub fn write_manifests(&self, out: &mut dyn Write) -> io::Result<()> {
        for object in &self.objects {
            out.write_all(b"---\n")?;
            out.write_all(object.body.yaml.as_bytes())?;
        }
        Ok(())
    }

    /// [`Output::write_manifests`] as a string.
    pub fn manifests_yaml(&self) -> String {
        text_of(|out| self.write_manifests(out))
    }

    /// `runtime.json`.
    pub fn write_runtime(&self, out: &mut dyn Write) -> io::Result<()> {
        self.runtime.write_pretty(out)?;
        out.write_all(b"\n")
    }

    /// [`Output::write_runtime`] as a string.
    pub fn runtime_json(&self) -> String {
        text_of(|out| self.write_runtime(out))
    }

    /// `inventory.json`: identity and content hash of every object,
    /// Kubernetes objects and runtime objects alike.
    pub fn write_inventory(&self, out: &mut dyn Write) -> io::Result<()> {
        let objects = self
            .objects
            .iter()
            .map(|o| InventoryObject {
                api_version: &o.api_version,
                hash: &o.body.hash,
                identity: o.identity(),
                kind: &o.kind,
                name: &o.name,
                namespace: o.namespace.as_deref(),
                spec: o.spec.as_deref(),
                template: &o.template,
            })
            .collect();
        let mut runtime_objects: Vec<InventoryRuntimeObject> = Vec::new();
        for (section, kind) in crate::runtime_config::SECTIONS {
            runtime_objects.extend(
                self.runtime
                    .hashes(section)
                    .into_iter()
                    .map(|(name, hash)| InventoryRuntimeObject {
                        hash,
                        identity: format!("{kind}/{name}"),
                        kind,
                        name,
                    }),
            );
        }
        runtime_objects.sort_by(|a, b| a.identity.cmp(&b.identity));
        let inventory = Inventory {
            environment: self.project.environment.as_deref(),
            format_version: INVENTORY_FORMAT_VERSION,
            namespace: &self.project.namespace,
            objects,
            project: &self.project.name,
            runtime_objects,
        };
        write_inventory_pretty(&inventory, out)
    }

    /// [`Output::write_inventory`] as a string.
    pub fn inventory_json(&self) -> String {
        text_of(|out| self.write_inventory(out))
    }

    /// The Helm chart: `Chart.yaml`, `values.yaml` and the objects in
    /// `templates/objects-NNN.yaml` (apply order, at most 1 MiB per file),
    /// each escaped so that Helm prints it exactly as cortex rendered it.
    fn write_chart(&self, sink: &dyn Sink) -> io::Result<()> {
        let chart = json!({
            "apiVersion": "v2",
            "name": self.project.chart_name,
            "version": self.project.chart_version,
            "description": self.project.chart_description,
            "type": "application",
            "annotations": { "cortex.codevald.io/project": self.project.name },
        });
        sink.file("chart/Chart.yaml", &mut |out| {
            out.write_all(to_yaml(&chart).as_bytes())
        })?;
        sink.file("chart/values.yaml", &mut |out| {
            out.write_all(b"# Rendered by cortex: every object in templates/ is complete, so the chart\n# takes no values. Change the specs and run `cortex build` again.\n{}\n")
        })?;
        for (index, chunk) in self.chart_chunks().into_iter().enumerate() {
            sink.file(
                &format!("chart/templates/objects-{index:03}.yaml"),
                &mut |out| {
                    for object in &self.objects[chunk.clone()] {
                        out.write_all(b"---\n")?;
                        write_escaped_for_helm(&object.body.yaml, out)?;
                    }
                    Ok(())
                },
            )?;
        }
        Ok(())
    }

    /// The objects (by position, in apply order) of each of the chart's
    /// template files: at most [`CHART_FILE_BYTES`] of YAML escaped for Helm
    /// each (Helm refuses template files over 5 MiB; few files keep writes
    /// fast), a larger object alone in its file. Nothing is copied: each
    /// object is escaped as its file is written.
    fn chart_chunks(&self) -> Vec<std::ops::Range<usize>> {
        let mut chunks: Vec<std::ops::Range<usize>> = Vec::new();
        let mut size = 0;
        for (index, object) in self.objects.iter().enumerate() {
            let len = escaped_len_for_helm(&object.body.yaml) + 4;
            match chunks.last_mut() {
                Some(chunk) if size + len <= CHART_FILE_BYTES + 4 => chunk.end = index + 1,
                _ => {
                    chunks.push(index..index + 1);
                    size = 0;
                }
            }
            size += len;
        }
        chunks
    }

    /// Every output file of `cortex build -o OUT`, by relative path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let files = InMemory::default();
        // Keeping files in memory cannot fail.
        let kept = self.emit(&files);
        debug_assert!(kept.is_ok());
        files.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands every output file to `sink`, each written as it is made (the
    /// whole output is never in memory at once). The chart, runtime.json,
    /// manifests.yaml and inventory.json are made concurrently; the chart
    /// stops at its first failed file, and the first error is returned.
    pub fn emit(&self, sink: &dyn Sink) -> io::Result<()> {
        let chart = || self.write_chart(sink);
        let runtime = || sink.file("runtime.json", &mut |out| self.write_runtime(out));
        let manifests = || sink.file("manifests.yaml", &mut |out| self.write_manifests(out));
        let inventory = || sink.file("inventory.json", &mut |out| self.write_inventory(out));
        let ((a, b), (c, d)) = rayon::join(
            || rayon::join(chart, runtime),
            || rayon::join(manifests, inventory),
        );
        a.and(b).and(c).and(d)
    }
}

/// Escapes what Helm's template engine would interpret. Every maximal run
/// of brace characters that contains `{{` or `}}` becomes one action that
/// prints the run literally (`{}}` → ``{{`{}}`}}``). Escaping whole runs
/// matters: escaping only the `}}` of `{}}` would leave `{` right before
/// the inserted `{{`, and Go's template lexer would read `{{{`.
pub fn escape_for_helm(text: &str) -> std::borrow::Cow<'_, str> {
    if !has_double_brace(text.as_bytes()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 64);
    let done: Result<(), std::convert::Infallible> = escape_in_pieces(text, |piece| {
        out.push_str(piece);
        Ok(())
    });
    let Ok(()) = done;
    std::borrow::Cow::Owned(out)
}

/// Writes `text` escaped for Helm ([`escape_for_helm`]) without copying it.
fn write_escaped_for_helm(text: &str, out: &mut dyn Write) -> io::Result<()> {
    escape_in_pieces(text, |piece| out.write_all(piece.as_bytes()))
}

/// The length of `text` escaped for Helm ([`escape_for_helm`]).
fn escaped_len_for_helm(text: &str) -> usize {
    let mut len = 0;
    let done: Result<(), std::convert::Infallible> = escape_in_pieces(text, |piece| {
        len += piece.len();
        Ok(())
    });
    let Ok(()) = done;
    len
}

/// Hands `text` escaped for Helm to `piece`, in order: the text between
/// brace runs as it is, and each run holding `{{` or `}}` (two matching
/// neighbours) wrapped as a literal, ``{{`…`}}``.
fn escape_in_pieces<E>(text: &str, mut piece: impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
    let bytes = text.as_bytes();
    // `text[..copied]` is handed on; braces are searched from `at`.
    let (mut copied, mut at) = (0, 0);
    while let Some(found) = memchr::memchr2(b'{', b'}', &bytes[at..]) {
        let start = at + found;
        let end = bytes[start..]
            .iter()
            .position(|&b| b != b'{' && b != b'}')
            .map_or(bytes.len(), |length| start + length);
        if bytes[start..end].windows(2).any(|pair| pair[0] == pair[1]) {
            piece(&text[copied..start])?;
            piece("{{`")?;
            piece(&text[start..end])?;
            piece("`}}")?;
            copied = end;
        }
        at = end;
    }
    piece(&text[copied..])
}

/// Whether `bytes` holds `{{` or `}}` (one pass over the braces alone).
fn has_double_brace(bytes: &[u8]) -> bool {
    memchr::memchr2_iter(b'{', b'}', bytes).any(|at| bytes.get(at + 1) == Some(&bytes[at]))
}

#[cfg(test)]
mod tests {
    use super::{
        Bundle, Object, Project, escape_for_helm, escaped_len_for_helm, has_double_brace,
        write_escaped_for_helm,
    };

    #[test]
    fn objects_are_put_in_apply_order_and_ties_keep_their_order() {
        let object = |kind: &str, name: &str, template: &str| {
            Object::new(
                "v1".into(),
                kind.into(),
                name.into(),
                template.into(),
                None,
                serde_json::json!({"metadata": {"name": name}}),
            )
        };
        let given = vec![
            object("Service", "b", "1"),
            object("Deployment", "a", "2"),
            object("Service", "a", "3"),
            object("ConfigMap", "z", "4"),
            object("Service", "b", "5"),
            object("Namespace", "n", "6"),
            object("ConfigMap", "z", "7"),
        ];
        let project = Project {
            name: "p".into(),
            namespace: "ns".into(),
            environment: None,
            chart_name: "p".into(),
            chart_version: "0.1.0".into(),
            chart_description: String::new(),
            broker_url: String::new(),
        };
        let bundle = Bundle::new(project, given, (), Vec::new());
        let order: Vec<&str> = bundle.objects.iter().map(|o| o.template.as_str()).collect();
        assert_eq!(order, ["6", "4", "7", "3", "1", "5", "2"]);
    }

    #[test]
    fn double_braces_are_found_wherever_they_are() {
        for text in ["{{", "}}", "a{{", "{}}", "x { y }} z", "{{{"] {
            assert!(has_double_brace(text.as_bytes()), "{text}");
        }
        for text in ["", "{", "{ }", "{}{}", "}{", "a{b}c", "{\n{"] {
            assert!(!has_double_brace(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn the_inventory_is_written_as_serde_jsons_pretty_printer_writes_it() {
        use super::{Inventory, InventoryObject, InventoryRuntimeObject, write_inventory_pretty};
        let object = |i: usize| InventoryObject {
            api_version: "apps/v1",
            hash: "ab12",
            identity: format!("apps/Deployment/ns/a{i}"),
            kind: "Deployment",
            name: if i.is_multiple_of(3) {
                "q\"uote\\d\n"
            } else {
                "plain"
            },
            namespace: i.is_multiple_of(2).then_some("ns"),
            spec: (!i.is_multiple_of(5)).then_some("agent/a"),
            template: "deployment.yaml.j2",
        };
        for (objects, runtime) in [(0, 0), (1, 0), (0, 2), (700, 300)] {
            let inventory = Inventory {
                environment: (objects % 2 == 1).then_some("prod"),
                format_version: 3,
                namespace: "team \"a\"",
                objects: (0..objects).map(object).collect(),
                project: "p",
                runtime_objects: (0..runtime)
                    .map(|i| InventoryRuntimeObject {
                        hash: format!("{i:x}"),
                        identity: format!("agent/a{i}"),
                        kind: "agent",
                        name: "a",
                    })
                    .collect(),
            };
            let mut ours = Vec::new();
            write_inventory_pretty(&inventory, &mut ours).expect("written");
            let mut theirs = serde_json::to_vec_pretty(&inventory).expect("serialized");
            theirs.push(b'\n');
            assert_eq!(
                String::from_utf8(ours),
                String::from_utf8(theirs),
                "{objects} {runtime}"
            );
        }
    }

    /// The escaping as first written, by characters: the reference.
    fn escape_by_chars(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find(['{', '}']) {
            out.push_str(&rest[..start]);
            let run_len = rest[start..]
                .find(|c| c != '{' && c != '}')
                .unwrap_or(rest.len() - start);
            let run = &rest[start..start + run_len];
            if run.contains("{{") || run.contains("}}") {
                out.push_str("{{`");
                out.push_str(run);
                out.push_str("`}}");
            } else {
                out.push_str(run);
            }
            rest = &rest[start + run_len..];
        }
        out.push_str(rest);
        out
    }

    proptest::proptest! {
        #[test]
        fn helm_escaping_is_the_reference_one(text in "[{}a é`\n]{0,24}") {
            let reference = escape_by_chars(&text);
            let escaped = escape_for_helm(&text);
            proptest::prop_assert_eq!(escaped.as_ref(), reference.as_str());
            // The chart's files are written, and sized, without the copy.
            let mut written = Vec::new();
            write_escaped_for_helm(&text, &mut written).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(written).unwrap(), reference.as_str());
            proptest::prop_assert_eq!(escaped_len_for_helm(&text), reference.len());
        }
    }

    #[test]
    fn helm_escaping_covers_both_delimiters() {
        assert_eq!(escape_for_helm("a {{ b }} c"), "a {{`{{`}} b {{`}}`}} c");
        assert_eq!(escape_for_helm("}} {{"), "{{`}}`}} {{`{{`}}");
        assert_eq!(escape_for_helm("no braces { } {}"), "no braces { } {}");
        assert_eq!(escape_for_helm("{{{"), "{{`{{{`}}");
        assert_eq!(escape_for_helm(r#"{"a":{}}"#), r#"{"a":{{`{}}`}}"#);
    }
}
