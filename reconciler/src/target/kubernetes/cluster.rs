//! A connection to a cluster: the kube client made from the usual
//! kubeconfig, and discovery of the kinds it serves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kube::api::DynamicObject;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client, Config};

use crate::target::kubernetes::error::KubeError;
use crate::target::kubernetes::retry::{RetryPolicy, retry};

/// The field manager cortex applies as.
pub const FIELD_MANAGER: &str = "cortex";

/// Where to find the cluster.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// A kubeconfig file (default: `$KUBECONFIG`, then `~/.kube/config`,
    /// then the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig (default: its current context).
    pub context: Option<String>,
}

/// A served kind.
#[derive(Clone, Debug)]
pub struct Kind {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
}

/// A cluster cortex talks to.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// The API server's URL.
    pub server: String,
    /// The kubeconfig context, when one was used.
    pub context: Option<String>,
    /// How requests are retried.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("context", &self.context)
            .finish()
    }
}

impl Cluster {
    /// Connects as `kubectl` would: `--kubeconfig`, else `$KUBECONFIG` or
    /// `~/.kube/config`, else the in-cluster service account; `--context`
    /// picks a context.
    pub async fn connect(options: &ConnectOptions) -> Result<Cluster, KubeError> {
        let kube_options = KubeConfigOptions {
            context: options.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match &options.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(file, &kube_options)
                    .await
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
            }
            None if options.context.is_some() => Config::from_kubeconfig(&kube_options)
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?,
            None => Config::infer()
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?,
        };
        // cortex retries itself (bounded, with jitter, 409/5xx/connections
        // too); kube's own retry layer would multiply the attempts.
        config.default_retry = false;
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        Ok(Cluster {
            client,
            server,
            context: options.context.clone(),
            retry: RetryPolicy::default(),
        })
    }

    /// The kube client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Maps a kube error for `what`.
    pub fn error(&self, what: &str, e: kube::Error) -> KubeError {
        KubeError::from_kube(what, &self.server, e)
    }

    /// An API handle for one kind, namespaced when it is.
    pub fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        match (kind.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &kind.resource),
            _ => Api::all_with(self.client.clone(), &kind.resource),
        }
    }

    /// Discovers the kinds of these `apiVersion`s: one request per version.
    /// Versions the cluster does not serve are left out.
    pub async fn discover(&self, api_versions: &BTreeSet<String>) -> Result<Discovery, KubeError> {
        let lookups = api_versions.iter().map(|av| async move {
            let client = &self.client;
            let listed = retry(self.retry, false, || async move {
                match av.split_once('/') {
                    None => client.list_core_api_resources(av).await,
                    Some(_) => client.list_api_group_resources(av).await,
                }
            })
            .await;
            match listed {
                Ok(list) => Ok((av.clone(), list.resources)),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok((av.clone(), Vec::new())),
                Err(e) => Err(self.error(&format!("discover {av}"), e)),
            }
        });
        let mut kinds = BTreeMap::new();
        for found in futures::future::join_all(lookups).await {
            let (api_version, resources) = found?;
            let (group, version) = match api_version.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), api_version.clone()),
            };
            for r in resources.into_iter().filter(|r| !r.name.contains('/')) {
                let gvk = GroupVersionKind::gvk(&group, &version, &r.kind);
                kinds.insert(
                    (api_version.clone(), r.kind.clone()),
                    Kind {
                        resource: ApiResource::from_gvk_with_plural(&gvk, &r.name),
                        namespaced: r.namespaced,
                    },
                );
            }
        }
        Ok(Discovery { kinds })
    }
}

/// The kinds a cluster serves, by `(apiVersion, kind)`.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    kinds: BTreeMap<(String, String), Kind>,
}

impl Discovery {
    /// The kind of `apiVersion`/`kind`, when served.
    pub fn get(&self, api_version: &str, kind: &str) -> Option<&Kind> {
        self.kinds.get(&(api_version.to_string(), kind.to_string()))
    }

    /// Adds what another discovery found.
    pub fn extend(&mut self, other: Discovery) {
        self.kinds.extend(other.kinds);
    }
}
