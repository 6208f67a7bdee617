//! An in-process Kubernetes API server for tests and benchmarks.
//!
//! It speaks the part of the API cortex uses, over real HTTP on 127.0.0.1:
//! discovery (`/api`, `/apis`, resource lists), LIST with label selectors,
//! GET, server-side apply `PATCH` (field managers, conflicts → 409 with the
//! manager and fields, `force`, `dryRun=All`), POST, PUT with
//! resourceVersion preconditions, DELETE with preconditions, resourceVersion
//! and generation bookkeeping, a defaulting step (the fields a real server
//! adds to Deployments, Services and Namespaces), CustomResourceDefinitions
//! that register their kind once Established, Leases, a Deployment
//! "controller" that rolls out (or never does), and injectable faults.
//!
//! Simplifications, on purpose: lists of objects with a `name` are merged
//! by name and every other list is atomic (the real server uses per-field
//! merge keys); no admission, no watch, no garbage collection.

mod defaults;
pub mod fields;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

pub use axum::http::Method;

use self::fields::{FieldPath, applied_fields};

/// One kind the server knows.
#[derive(Clone, Debug)]
struct ResourceType {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
    /// When a CRD-defined kind becomes servable.
    ready_at: Option<Instant>,
}

impl ResourceType {
    fn api_version(&self) -> String {
        match self.group.as_str() {
            "" => self.version.clone(),
            g => format!("{g}/{}", self.version),
        }
    }
}

const BUILT_IN: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("apps", "v1", "Deployment", "deployments", true),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
];

/// How Deployments roll out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Available as soon as they are applied.
    Immediate,
    /// Available this long after their last change.
    After(Duration),
    /// Never available (no nodes): `Available=False`.
    Stuck,
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this HTTP status and a `Status` body.
    Status(u16),
    /// Answer normally after this delay.
    Delay(Duration),
    /// Start a response and drop the connection.
    Drop,
}

/// A fault injected into the next matching requests.
#[derive(Clone, Debug)]
pub struct Fault {
    /// HTTP method to match (`None`: any).
    pub method: Option<Method>,
    /// Text the path and query must contain (`""`: any).
    pub contains: String,
    /// What happens.
    pub kind: FaultKind,
    /// How many requests it hits.
    pub times: usize,
}

impl Fault {
    /// A fault on `times` requests of `method` whose path contains `contains`.
    pub fn new(method: Method, contains: &str, kind: FaultKind, times: usize) -> Fault {
        Fault {
            method: Some(method),
            contains: contains.to_string(),
            kind,
            times,
        }
    }
}

/// Requests served, by what they did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// Discovery documents.
    pub discovery: usize,
    /// LISTs.
    pub list: usize,
    /// GETs of one object.
    pub get: usize,
    /// Server-side apply PATCHes that wrote.
    pub apply: usize,
    /// Server-side apply PATCHes with `dryRun=All`.
    pub dry_run: usize,
    /// POSTs.
    pub create: usize,
    /// PUTs.
    pub update: usize,
    /// DELETEs.
    pub delete: usize,
    /// Requests answered by an injected fault.
    pub faulted: usize,
}

impl Requests {
    /// Every request.
    pub fn total(&self) -> usize {
        self.discovery
            + self.list
            + self.get
            + self.apply
            + self.dry_run
            + self.create
            + self.update
            + self.delete
    }

    /// Requests that change something.
    pub fn writes(&self) -> usize {
        self.apply + self.create + self.update + self.delete
    }
}

#[derive(Clone, Debug)]
struct Manager {
    operation: &'static str,
    api_version: String,
    fields: BTreeSet<FieldPath>,
}

#[derive(Clone, Debug)]
struct Stored {
    body: Value,
    managers: BTreeMap<String, Manager>,
    changed_at: Instant,
}

type Key = (String, String, String, String); // group, plural, namespace, name

#[derive(Debug)]
struct State {
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Stored>,
    revision: u64,
    requests: Requests,
    faults: VecDeque<Fault>,
    rollout: Rollout,
    crd_delay: Duration,
    token: Option<String>,
    next_ip: u32,
}

/// The running server. Dropping it stops it.
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 on a thread of its own (callable from
    /// sync and async code alike).
    pub fn start() -> std::io::Result<FakeApiServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let types = BUILT_IN
            .iter()
            .map(|(g, v, k, p, n)| ResourceType {
                group: g.to_string(),
                version: v.to_string(),
                kind: k.to_string(),
                plural: p.to_string(),
                namespaced: *n,
                ready_at: None,
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            types,
            objects: BTreeMap::new(),
            revision: 1000,
            requests: Requests::default(),
            faults: VecDeque::new(),
            rollout: Rollout::Immediate,
            crd_delay: Duration::from_millis(200),
            token: None,
            next_ip: 10,
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let app = Router::new().fallback(
                        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                            let state = shared.clone();
                            async move { handle(state, method, uri, headers, body).await }
                        },
                    );
                    // Stopping drops every connection at once (a graceful
                    // shutdown would wait for clients' idle keep-alives).
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                })
            })?;
        Ok(FakeApiServer {
            state,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requires `Authorization: Bearer TOKEN` on every request.
    pub fn require_token(&self, token: &str) {
        self.lock().token = Some(token.to_string());
    }

    /// Writes a kubeconfig with one context, `fake`, pointing at this
    /// server, and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let token = self.lock().token.clone().unwrap_or_else(|| "fake".into());
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\nusers:\n- name: fake\n  user:\n    token: {token}\n",
                self.url()
            ),
        )?;
        Ok(path)
    }

    /// Writes a kubeconfig for this server into `dir` and connects through
    /// it, as cortex connects to any cluster.
    pub async fn connect(
        &self,
        dir: &Path,
    ) -> Result<
        cortex_reconciler::target::kubernetes::Cluster,
        cortex_reconciler::target::kubernetes::KubeError,
    > {
        let kubeconfig = self
            .write_kubeconfig(dir)
            .map_err(|e| cortex_reconciler::target::kubernetes::KubeError::Config(e.to_string()))?;
        cortex_reconciler::target::kubernetes::Cluster::connect(
            &cortex_reconciler::target::kubernetes::ConnectOptions {
                kubeconfig: Some(kubeconfig),
                context: None,
            },
        )
        .await
    }

    /// Requests served so far.
    pub fn requests(&self) -> Requests {
        self.lock().requests
    }

    /// Zeroes the request counts.
    pub fn reset_requests(&self) {
        self.lock().requests = Requests::default();
    }

    /// Injects a fault into the next matching requests.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// How Deployments roll out from now on.
    pub fn set_rollout(&self, rollout: Rollout) {
        self.lock().rollout = rollout;
    }

    /// How long a CRD takes to become Established.
    pub fn set_crd_delay(&self, delay: Duration) {
        self.lock().crd_delay = delay;
    }

    /// Creates a namespace, as an administrator would.
    pub fn create_namespace(&self, name: &str) {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let mut state = self.lock();
        let _ = state.apply(
            &ty("", "Namespace"),
            None,
            body,
            "kubectl",
            ApplyMode::Update,
        );
    }

    /// Creates an object as another client would (a `kubectl create` by
    /// `manager`); `false` when its kind is unknown or it is refused.
    pub fn create(&self, body: Value, manager: &str) -> bool {
        let mut state = self.lock();
        let kind = body["kind"].as_str().unwrap_or_default().to_string();
        let namespace = body["metadata"]["namespace"].as_str().map(str::to_string);
        let Some(ty) = state.types.iter().find(|t| t.kind == kind).cloned() else {
            return false;
        };
        state
            .apply(&ty, namespace.as_deref(), body, manager, ApplyMode::Update)
            .is_ok()
    }

    /// One stored object (`kind` as in `Deployment`), as a GET returns it.
    pub fn object(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let mut state = self.lock();
        let ty = state.types.iter().find(|t| t.kind == kind)?.clone();
        let key = key_of(&ty, namespace, name);
        state.read(&ty, &key)
    }

    /// Names of the stored objects of one kind in a namespace.
    pub fn names(&self, kind: &str, namespace: Option<&str>) -> Vec<String> {
        let state = self.lock();
        let Some(ty) = state.types.iter().find(|t| t.kind == kind) else {
            return Vec::new();
        };
        let ns = ns_of(ty, namespace);
        state
            .objects
            .keys()
            .filter(|(g, p, n, _)| *g == ty.group && *p == ty.plural && *n == ns)
            .map(|k| k.3.clone())
            .collect()
    }

    /// Changes an object as another client would with an update (a
    /// `kubectl edit`): `manager` takes ownership of the fields it changed.
    pub fn edit(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        manager: &str,
        change: impl FnOnce(&mut Value),
    ) -> bool {
        let mut state = self.lock();
        let Some(ty) = state.types.iter().find(|t| t.kind == kind).cloned() else {
            return false;
        };
        let key = key_of(&ty, namespace, name);
        let Some(mut body) = state.objects.get(&key).map(|s| s.body.clone()) else {
            return false;
        };
        change(&mut body);
        state
            .apply(&ty, namespace, body, manager, ApplyMode::Update)
            .is_ok()
    }

    /// Deletes an object directly.
    pub fn remove(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let mut state = self.lock();
        let Some(ty) = state.types.iter().find(|t| t.kind == kind).cloned() else {
            return false;
        };
        let key = key_of(&ty, namespace, name);
        state.objects.remove(&key).is_some()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ty(group: &str, kind: &str) -> ResourceType {
    BUILT_IN
        .iter()
        .find(|(g, _, k, _, _)| *g == group && *k == kind)
        .map(|(g, v, k, p, n)| ResourceType {
            group: g.to_string(),
            version: v.to_string(),
            kind: k.to_string(),
            plural: p.to_string(),
            namespaced: *n,
            ready_at: None,
        })
        .expect("a built-in kind")
}

fn key_of(ty: &ResourceType, namespace: Option<&str>, name: &str) -> Key {
    (
        ty.group.clone(),
        ty.plural.clone(),
        ns_of(ty, namespace),
        name.to_string(),
    )
}

/// `deployments.apps "x" not found`, as the real server words it.
fn not_found_error(ty: &ResourceType, name: &str) -> ApiError {
    let resource = match ty.group.as_str() {
        "" => ty.plural.clone(),
        group => format!("{}.{group}", ty.plural),
    };
    ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
}

fn ns_of(ty: &ResourceType, namespace: Option<&str>) -> String {
    match ty.namespaced {
        true => namespace.unwrap_or("default").to_string(),
        false => String::new(),
    }
}

/// How a write treats field ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApplyMode {
    /// Server-side apply.
    Apply { force: bool, dry_run: bool },
    /// An update (PUT, or an edit): the manager takes the fields it changed.
    Update,
}

/// An API error: HTTP status, reason, message and conflict causes.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    causes: Vec<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            causes: Vec::new(),
        }
    }
}

fn reason_of(code: u16) -> &'static str {
    match code {
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "BadRequest",
    }
}

fn status_response(e: ApiError) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": e.message, "reason": e.reason,
        "details": { "causes": e.causes }, "code": e.code,
    });
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

impl State {
    fn bump(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// The served type for a group/version/plural, once it is ready.
    fn type_of(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .filter(|t| t.ready_at.is_none_or(|at| Instant::now() >= at))
            .cloned()
    }

    /// An object as reads return it: status filled in for the kinds that
    /// have controllers.
    fn read(&mut self, ty: &ResourceType, key: &Key) -> Option<Value> {
        let stored = self.objects.get(key)?;
        let mut body = stored.body.clone();
        let managed: Vec<Value> = stored
            .managers
            .iter()
            .map(|(name, m)| {
                json!({"manager": name, "operation": m.operation, "apiVersion": m.api_version,
                       "fieldsType": "FieldsV1", "fieldsV1": fields::fields_v1(&m.fields)})
            })
            .collect();
        body["metadata"]["managedFields"] = Value::Array(managed);
        match ty.kind.as_str() {
            "Deployment" => {
                let available = match self.rollout {
                    Rollout::Immediate => true,
                    Rollout::After(d) => stored.changed_at.elapsed() >= d,
                    Rollout::Stuck => false,
                };
                let wanted = body["spec"]["replicas"].as_i64().unwrap_or(1);
                let ready = if available { wanted } else { 0 };
                let generation = body["metadata"]["generation"].clone();
                let condition = if available {
                    json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."})
                } else {
                    json!({"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."})
                };
                body["status"] = json!({
                    "observedGeneration": generation, "replicas": wanted,
                    "updatedReplicas": wanted, "readyReplicas": ready,
                    "availableReplicas": ready, "conditions": [condition],
                });
            }
            "CustomResourceDefinition" => {
                let established = self
                    .types
                    .iter()
                    .find(|t| {
                        Some(t.plural.as_str())
                            == body.pointer("/spec/names/plural").and_then(Value::as_str)
                            && Some(t.group.as_str())
                                == body.pointer("/spec/group").and_then(Value::as_str)
                    })
                    .is_some_and(|t| t.ready_at.is_none_or(|at| Instant::now() >= at));
                body["status"] = json!({"conditions": [
                    {"type": "Established", "status": if established { "True" } else { "False" },
                     "reason": if established { "InitialNamesAccepted" } else { "Installing" }}
                ]});
            }
            "Namespace" => body["status"] = json!({"phase": "Active"}),
            _ => {}
        }
        Some(body)
    }

    /// Server-side apply (or an update) of `body`.
    fn apply(
        &mut self,
        ty: &ResourceType,
        namespace: Option<&str>,
        mut body: Value,
        manager: &str,
        mode: ApplyMode,
    ) -> Result<Value, ApiError> {
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "metadata.name: Required value".into(),
            ));
        }
        let ns = ns_of(ty, namespace.or(body["metadata"]["namespace"].as_str()));
        if ty.namespaced
            && !self.objects.contains_key(&(
                String::new(),
                "namespaces".into(),
                String::new(),
                ns.clone(),
            ))
        {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
            ));
        }
        let key = key_of(ty, Some(&ns), &name);
        let existing = self.objects.get(&key).cloned();
        let live = existing.as_ref().map(|s| s.body.clone());
        let mut managers = existing
            .as_ref()
            .map(|s| s.managers.clone())
            .unwrap_or_default();
        let mut merged = match mode {
            ApplyMode::Update => {
                let before = live.clone().unwrap_or(Value::Null);
                let changed: BTreeSet<FieldPath> = applied_fields(&body)
                    .into_iter()
                    .filter(|p| fields::get(&before, p) != fields::get(&body, p))
                    .collect();
                for m in managers.values_mut() {
                    m.fields.retain(|p| !changed.contains(p));
                }
                let entry = managers.entry(manager.to_string()).or_insert(Manager {
                    operation: "Update",
                    api_version: ty.api_version(),
                    fields: BTreeSet::new(),
                });
                entry.fields.extend(changed);
                if let Some(status) = live.as_ref().and_then(|l| l.get("status")) {
                    body["status"] = status.clone();
                }
                body
            }
            ApplyMode::Apply { force, .. } => {
                let applied = applied_fields(&body);
                let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
                let current = live.clone().unwrap_or(Value::Null);
                for (other, owned) in managers.iter().filter(|(n, _)| *n != manager) {
                    for path in applied.intersection(&owned.fields) {
                        if fields::get(&current, path) != fields::get(&body, path) {
                            conflicts.push((other.clone(), path.clone()));
                        }
                    }
                }
                if !conflicts.is_empty() && !force {
                    return Err(conflict_error(ty, &conflicts));
                }
                let mut merged = live.clone().unwrap_or_else(|| {
                    json!({"apiVersion": ty.api_version(), "kind": ty.kind, "metadata": {"name": name}})
                });
                let previously = managers
                    .get(manager)
                    .map(|m| m.fields.clone())
                    .unwrap_or_default();
                for path in previously.difference(&applied) {
                    let shared = managers
                        .iter()
                        .any(|(n, m)| n != manager && m.fields.contains(path));
                    if !shared {
                        fields::remove(&mut merged, path);
                    }
                }
                fields::merge(&mut merged, &body);
                if force {
                    for (other, path) in &conflicts {
                        if let Some(m) = managers.get_mut(other) {
                            m.fields.remove(path);
                        }
                    }
                }
                managers.retain(|_, m| !m.fields.is_empty());
                managers.insert(
                    manager.to_string(),
                    Manager {
                        operation: "Apply",
                        api_version: ty.api_version(),
                        fields: applied,
                    },
                );
                merged
            }
        };
        // Identity and bookkeeping the server owns.
        merged["apiVersion"] = json!(ty.api_version());
        merged["kind"] = json!(ty.kind);
        merged["metadata"]["name"] = json!(name);
        if ty.namespaced {
            merged["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = merged["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if let Some(m) = merged["metadata"].as_object_mut() {
            m.remove("managedFields");
            m.remove("resourceVersion");
        }
        let next_ip = &mut self.next_ip;
        defaults::apply_defaults(&ty.kind, &mut merged, || {
            *next_ip += 1;
            format!("10.96.{}.{}", *next_ip / 250, *next_ip % 250 + 1)
        });
        let dry_run = matches!(mode, ApplyMode::Apply { dry_run: true, .. });
        let unchanged = existing.as_ref().is_some_and(|s| {
            without_bookkeeping(&s.body) == without_bookkeeping(&merged)
                && manager_fields(&s.managers) == manager_fields(&managers)
        });
        if let Some(existing) = &existing {
            let meta = &existing.body["metadata"];
            for k in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                merged["metadata"][k] = meta[k].clone();
            }
            if unchanged {
                let mut body = merged;
                body["metadata"]["resourceVersion"] = meta["resourceVersion"].clone();
                if let Some(status) = existing.body.get("status") {
                    body["status"] = status.clone();
                }
                return Ok(body);
            }
            let spec_changed = strip(&existing.body, &["metadata", "status"])
                != strip(&merged, &["metadata", "status"]);
            if spec_changed {
                let g = meta["generation"].as_i64().unwrap_or(1) + 1;
                merged["metadata"]["generation"] = json!(g);
            }
        } else {
            merged["metadata"]["uid"] =
                json!(format!("00000000-0000-4000-8000-{:012}", self.revision));
            merged["metadata"]["creationTimestamp"] = json!(now_rfc3339());
            merged["metadata"]["generation"] = json!(1);
        }
        if dry_run {
            return Ok(merged);
        }
        merged["metadata"]["resourceVersion"] = json!(self.bump());
        if ty.kind == "CustomResourceDefinition" && existing.is_none() {
            self.register_crd(&merged);
        }
        self.objects.insert(
            key,
            Stored {
                body: merged.clone(),
                managers,
                changed_at: Instant::now(),
            },
        );
        Ok(merged)
    }

    fn register_crd(&mut self, crd: &Value) {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = crd
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
        let ready_at = Some(Instant::now() + self.crd_delay);
        for version in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
        {
            self.types.push(ResourceType {
                group: group.to_string(),
                version: version.to_string(),
                kind: kind.to_string(),
                plural: plural.to_string(),
                namespaced,
                ready_at,
            });
        }
    }
}

fn conflict_error(ty: &ResourceType, conflicts: &[(String, FieldPath)]) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, p)| {
            format!(
                "conflict with \"{m}\" using {}: {}",
                ty.api_version(),
                fields::display(p)
            )
        })
        .collect();
    let message = format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        lines.join("\n")
    );
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        causes: conflicts
            .iter()
            .map(|(m, p)| {
                json!({"reason": "FieldManagerConflict",
                       "message": format!("conflict with \"{m}\" using {}", ty.api_version()),
                       "field": fields::display(p)})
            })
            .collect(),
    }
}

fn manager_fields(managers: &BTreeMap<String, Manager>) -> BTreeMap<&str, &BTreeSet<FieldPath>> {
    managers
        .iter()
        .map(|(n, m)| (n.as_str(), &m.fields))
        .collect()
}

fn strip(body: &Value, keys: &[&str]) -> Value {
    let mut body = body.clone();
    if let Some(m) = body.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    body
}

fn without_bookkeeping(body: &Value) -> Value {
    let mut body = strip(body, &["status"]);
    if let Some(m) = body["metadata"].as_object_mut() {
        for k in [
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    body
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A request body as JSON, or a 400.
fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid request body: {e}")))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().expect("made an object above");
    for (k, v) in map {
        if v.is_null() {
            object.remove(k);
        } else {
            merge_patch(object.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// A parsed request path.
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => {
            (Some(ns.to_string()), [&[*plural][..], rest].concat())
        }
        other => (None, other.to_vec()),
    };
    Some(Target {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        plural: rest.first().map(|s| s.to_string()),
        name: rest.get(1).map(|s| s.to_string()),
    })
}

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `labels` match a selector of `k=v`, `k==v`, `k!=v` and `k` terms.
fn selects(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels.get(k).and_then(Value::as_str) != Some(v)
        } else if let Some((k, v)) = term.split_once('=') {
            labels.get(k).and_then(Value::as_str) == Some(v.trim_start_matches('='))
        } else {
            labels.get(term).is_some()
        }
    })
}

async fn handle(
    state: Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    // Faults first.
    let fault = {
        let mut s = lock();
        let found = s.faults.iter().position(|f| {
            f.method.as_ref().is_none_or(|m| *m == method) && path_and_query.contains(&f.contains)
        });
        let kind = found.map(|i| {
            let f = &mut s.faults[i];
            f.times -= 1;
            let kind = f.kind.clone();
            if f.times == 0 {
                s.faults.remove(i);
            }
            kind
        });
        if matches!(kind, Some(FaultKind::Status(_) | FaultKind::Drop)) {
            s.requests.faulted += 1;
        }
        kind
    };
    match fault {
        Some(FaultKind::Status(code)) => {
            let message = format!("injected fault: {code}");
            return status_response(ApiError::new(code, reason_of(code), message));
        }
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Drop) => {
            let broken = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by fault"))
            });
            return Response::new(Body::from_stream(broken));
        }
        None => {}
    }
    let mut s = lock();
    if let Some(token) = &s.token {
        let sent = headers.get("authorization").and_then(|h| h.to_str().ok());
        if sent != Some(&format!("Bearer {token}")) {
            return status_response(ApiError::new(401, "Unauthorized", "Unauthorized".into()));
        }
    }
    let content_type = headers
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match serve(&mut s, &method, &uri, &content_type, &body) {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => status_response(e),
    }
}

fn serve(
    s: &mut State,
    method: &Method,
    uri: &Uri,
    content_type: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let path = uri.path();
    if path == "/version" {
        s.requests.discovery += 1;
        return Ok(
            json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0-cortex-fake", "platform": "linux/amd64"}),
        );
    }
    if path == "/api" {
        s.requests.discovery += 1;
        return Ok(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        );
    }
    if path == "/apis" {
        s.requests.discovery += 1;
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in s.types.iter().filter(|t| !t.group.is_empty()) {
            let versions = groups.entry(&t.group).or_default();
            if !versions.contains(&t.version.as_str()) {
                versions.push(&t.version);
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                    .collect();
                json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
            })
            .collect();
        return Ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}));
    }
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let target = parse_path(path).ok_or_else(not_found)?;
    let Some(plural) = &target.plural else {
        s.requests.discovery += 1;
        let gv = match target.group.as_str() {
            "" => target.version.clone(),
            g => format!("{g}/{}", target.version),
        };
        let resources: Vec<Value> = s
            .types
            .iter()
            .filter(|t| t.group == target.group && t.version == target.version)
            .filter(|t| t.ready_at.is_none_or(|at| Instant::now() >= at))
            .map(|t| json!({"name": t.plural, "singularName": t.kind.to_lowercase(), "namespaced": t.namespaced, "kind": t.kind,
                            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}))
            .collect();
        if resources.is_empty() {
            return Err(not_found());
        }
        return Ok(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        );
    };
    let ty = s
        .type_of(&target.group, &target.version, plural)
        .ok_or_else(not_found)?;
    let query = query_map(uri);
    let ns = target.namespace.as_deref();
    // Updates (POST, PUT, merge patch) name their manager or are "unknown".
    let update_manager = query
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    match (method.clone(), &target.name) {
        (Method::GET, None) => {
            s.requests.list += 1;
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            let keys: Vec<Key> = s
                .objects
                .iter()
                .filter(|((g, p, n, _), _)| {
                    *g == ty.group && *p == ty.plural && (ns.is_none() || Some(n.as_str()) == ns)
                })
                .filter(|(_, o)| selects(&selector, &o.body["metadata"]["labels"]))
                .map(|(k, _)| k.clone())
                .collect();
            let items: Vec<Value> = keys
                .iter()
                .filter_map(|k| s.read(&ty, k))
                .map(|mut item| {
                    // Items of a list carry no apiVersion/kind.
                    if let Some(m) = item.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    item
                })
                .collect();
            Ok(
                json!({"kind": format!("{}List", ty.kind), "apiVersion": ty.api_version(),
                      "metadata": {"resourceVersion": s.revision.to_string()}, "items": items}),
            )
        }
        (Method::GET, Some(name)) => {
            s.requests.get += 1;
            let key = key_of(&ty, ns, name);
            s.read(&ty, &key).ok_or_else(|| not_found_error(&ty, name))
        }
        (Method::PATCH, Some(name)) if content_type.starts_with("application/merge-patch+json") => {
            s.requests.update += 1;
            let patch = json_body(body)?;
            let key = key_of(&ty, ns, name);
            let mut current = s
                .objects
                .get(&key)
                .map(|o| o.body.clone())
                .ok_or_else(|| not_found_error(&ty, name))?;
            merge_patch(&mut current, &patch);
            s.apply(&ty, ns, current, &update_manager, ApplyMode::Update)
        }
        (Method::PATCH, Some(name)) => {
            let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
            match dry_run {
                true => s.requests.dry_run += 1,
                false => s.requests.apply += 1,
            }
            let manager = query.get("fieldManager").cloned().ok_or_else(|| {
                ApiError::new(
                    400,
                    "BadRequest",
                    "PATCH with apply requires fieldManager".into(),
                )
            })?;
            let body = json_body(body)?;
            if body["metadata"]["name"].as_str() != Some(name) {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL".into(),
                ));
            }
            let force = query.get("force").is_some_and(|v| v == "true");
            let result = s.apply(&ty, ns, body, &manager, ApplyMode::Apply { force, dry_run })?;
            Ok(result)
        }
        (Method::POST, None) => {
            s.requests.create += 1;
            let body = json_body(body)?;
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let key = key_of(&ty, ns, &name);
            if s.objects.contains_key(&key) {
                return Err(ApiError::new(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", ty.plural),
                ));
            }
            s.apply(&ty, ns, body, &update_manager, ApplyMode::Update)
        }
        (Method::PUT, Some(name)) => {
            s.requests.update += 1;
            let body = json_body(body)?;
            let key = key_of(&ty, ns, name);
            let current = s
                .objects
                .get(&key)
                .ok_or_else(|| not_found_error(&ty, name))?;
            let sent = body["metadata"]["resourceVersion"].as_str();
            if sent
                .is_some_and(|rv| Some(rv) != current.body["metadata"]["resourceVersion"].as_str())
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        ty.plural, ty.group
                    ),
                ));
            }
            s.apply(&ty, ns, body, &update_manager, ApplyMode::Update)
        }
        (Method::DELETE, Some(name)) => {
            s.requests.delete += 1;
            let key = key_of(&ty, ns, name);
            let current = s
                .objects
                .get(&key)
                .ok_or_else(|| not_found_error(&ty, name))?;
            let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if let Some(rv) = options
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                && Some(rv) != current.body["metadata"]["resourceVersion"].as_str()
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record",
                        ty.plural
                    ),
                ));
            }
            let removed = s
                .objects
                .remove(&key)
                .map(|o| o.body)
                .unwrap_or(Value::Null);
            s.bump();
            Ok(removed)
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    }
}
