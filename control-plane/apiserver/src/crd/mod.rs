//! CustomResourceDefinitions and the custom resources they define.
//!
//! # The dynamic registry
//!
//! The built-in kinds stay a static table ([`registry::RESOURCES`]); custom kinds are looked up
//! beside it in a [`Snapshot`]: every served version of every established CRD, indexed by
//! group, version and plural, rebuilt from the store after each CRD write and swapped whole
//! behind an `Arc` (readers keep the snapshot they started with).
//!
//! Everything downstream of routing takes a `&'static Resource`. A custom version gets one
//! too: its descriptor (names, scope, subresources, versions; a few hundred bytes) is
//! *interned*: leaked once per distinct content and reused for every later snapshot, so the
//! memory it holds grows with the number of different CRD shapes this process has served,
//! not with requests or rebuilds. What is large or per-CRD (the compiled schema, printer
//! columns, scale paths) is not leaked: it lives in the snapshot's [`Served`], which routing
//! puts on the request's `Target` (`custom`) for the write paths and Tables to use.
//!
//! Custom resources are stored under `/registry/<group>/<plural>/` in the storage version;
//! a request on another served version gets `apiVersion` rewritten (`None` conversion) or
//! goes through the CRD's conversion webhook ([`convert`]).
//!
//! [`registry::RESOURCES`]: crate::registry::RESOURCES

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, LazyLock, Mutex, RwLock, Weak},
};

use keelson_api::crd::Structural;
use keelson_api::managed_fields::{self, SchemaRef};
use keelson_store::{ListOptions, Store};
use serde_json::Value;

use crate::{
    ApiError,
    object::{decode_kv, meta_str},
    openapi::{CustomKind, OpenApi, ServedKind},
    registry::{self, Resource, UnknownFields},
};

mod admit;
pub(crate) mod columns;
pub(crate) mod convert;
mod delete;
mod status;

pub(crate) use admit::{
    admit, bump_generation, refuse_strategic_merge, scale_view, set_replicas, validate,
};
pub(crate) use columns::PrinterColumn;
pub(crate) use delete::{delete, delete_collection};
pub(crate) use status::reconcile;

/// The CustomResourceDefinition resource.
pub(crate) fn definitions() -> Result<&'static Resource, ApiError> {
    registry::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(ApiError::no_route)
}

/// Whether `resource` is the CustomResourceDefinition resource.
pub(crate) fn is_definitions(resource: &Resource) -> bool {
    resource.group == "apiextensions.k8s.io" && resource.plural == "customresourcedefinitions"
}

/// `scale` of a custom resource: where its replica counts and selector live.
#[derive(Debug, Clone)]
pub(crate) struct ScalePaths {
    pub(crate) spec_replicas: String,
    pub(crate) status_replicas: String,
    pub(crate) label_selector: Option<String>,
}

/// One served version of a CRD: what requests on it need beyond its [`Resource`].
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) resource: &'static Resource,
    /// The version's compiled schema.
    pub(crate) schema: Option<Structural>,
    pub(crate) columns: Vec<PrinterColumn>,
    pub(crate) scale: Option<ScalePaths>,
    /// The CRD is being deleted: no new objects.
    pub(crate) terminating: bool,
    /// The CRD's conversion webhook (`spec.conversion.strategy: Webhook`), shared by its
    /// versions: objects in another version than the one wanted go through it.
    pub(crate) webhook: Option<Arc<convert::Webhook>>,
    /// The version's `openAPIV3Schema` as written, for the OpenAPI documents.
    pub(crate) openapi_schema: Option<Value>,
    /// The version's schema as server-side apply walks objects (keyed and set lists, atomic
    /// maps), compiled once per snapshot; `None` without a schema.
    pub(crate) field_shapes: Option<managed_fields::Schema>,
}

impl Served {
    /// The schema server-side apply and `managedFields` walk this version's objects by.
    pub(crate) fn field_schema(&self) -> SchemaRef<'_> {
        match &self.field_shapes {
            Some(shapes) => shapes.root(),
            None => SchemaRef::deduced(),
        }
    }
}

/// Every served custom version at one moment.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Which build this is (0 for the empty snapshot before the first load): the OpenAPI
    /// documents follow it.
    generation: u64,
    served: HashMap<(String, String, String), Arc<Served>>,
    /// Each custom group with its served versions, preferred first; groups sorted by name.
    groups: Vec<(String, Vec<String>)>,
}

impl Snapshot {
    /// The custom version serving `plural` in `group`/`version`.
    pub(crate) fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<Served>> {
        self.served
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
    }

    /// Whether `group`/`version` is served by some CRD.
    pub(crate) fn serves(&self, group: &str, version: &str) -> bool {
        self.versions(group)
            .is_some_and(|v| v.iter().any(|v| v == version))
    }

    /// The versions of custom group `group`, preferred first.
    pub(crate) fn versions(&self, group: &str) -> Option<&[String]> {
        self.groups
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, v)| v.as_slice())
    }

    /// The custom groups with their versions (preferred first).
    pub(crate) fn groups(&self) -> &[(String, Vec<String>)] {
        &self.groups
    }

    /// Points the OpenAPI documents at this snapshot's kinds, unless they already are.
    pub(crate) fn publish(&self, openapi: &OpenApi) {
        openapi.follow(self.generation, || {
            let mut kinds: Vec<CustomKind> = self
                .served
                .values()
                .map(|s| {
                    let r = s.resource;
                    CustomKind {
                        served: ServedKind::custom(
                            r.group,
                            r.version,
                            r.kind,
                            r.plural,
                            r.namespaced,
                            r.status,
                            r.scale,
                        ),
                        schema: s
                            .openapi_schema
                            .clone()
                            .unwrap_or_else(|| serde_json::json!({"type": "object"})),
                    }
                })
                .collect();
            kinds.sort_by(|a, b| {
                (&a.served.group, &a.served.version, &a.served.plural).cmp(&(
                    &b.served.group,
                    &b.served.version,
                    &b.served.plural,
                ))
            });
            kinds
        });
    }

    /// The resources served in `group`/`version`, sorted by plural.
    pub(crate) fn in_group_version(&self, group: &str, version: &str) -> Vec<&'static Resource> {
        let mut out: Vec<&'static Resource> = self
            .served
            .values()
            .map(|s| s.resource)
            .filter(|r| r.group == group && r.version == version)
            .collect();
        out.sort_by_key(|r| r.plural);
        out
    }

    /// Builds the snapshot of the established CRDs in `crds`.
    pub(crate) fn build(crds: &[Value]) -> Self {
        let mut served = HashMap::new();
        let mut groups: HashMap<String, HashSet<String>> = HashMap::new();
        for crd in crds {
            for s in served_versions(crd) {
                let r = s.resource;
                groups
                    .entry(r.group.to_owned())
                    .or_default()
                    .insert(r.version.to_owned());
                served.insert(
                    (
                        r.group.to_owned(),
                        r.version.to_owned(),
                        r.plural.to_owned(),
                    ),
                    Arc::new(s),
                );
            }
        }
        let mut groups: Vec<(String, Vec<String>)> = groups
            .into_iter()
            .map(|(g, v)| {
                let mut v: Vec<String> = v.into_iter().collect();
                v.sort_by(|a, b| version_order(a, b));
                (g, v)
            })
            .collect();
        groups.sort();
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let generation = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            generation,
            served,
            groups,
        }
    }
}

/// Whether a CRD's condition `kind` is `True`.
pub(crate) fn condition_true(crd: &Value, kind: &str) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The served versions of one CRD, when it is established.
fn served_versions(crd: &Value) -> Vec<Served> {
    if !condition_true(crd, "Established") {
        return Vec::new();
    }
    let names = crd
        .pointer("/status/acceptedNames")
        .cloned()
        .unwrap_or(Value::Null);
    let group = text(crd, "/spec/group");
    let (plural, kind) = (text(&names, "/plural"), text(&names, "/kind"));
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let storage = versions
        .iter()
        .find(|v| v["storage"] == true)
        .map(|v| text(v, "/name"))
        .unwrap_or_default();
    let strings = |pointer: &str| -> Vec<String> {
        names
            .pointer(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let singular = match text(&names, "/singular") {
        "" => kind.to_ascii_lowercase(),
        s => s.to_owned(),
    };
    let terminating = meta_str(crd, "deletionTimestamp").is_some();
    let webhook = convert::Webhook::of(crd).map(Arc::new);
    versions
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| {
            let version = text(v, "/name");
            let subresources = v.get("subresources").cloned().unwrap_or(Value::Null);
            let has = |name: &str| subresources.get(name).is_some_and(|s| !s.is_null());
            let shape = Shape {
                group: group.to_owned(),
                version: version.to_owned(),
                plural: plural.to_owned(),
                singular: singular.clone(),
                kind: kind.to_owned(),
                namespaced: text(crd, "/spec/scope") != "Cluster",
                short_names: strings("/shortNames"),
                categories: strings("/categories"),
                status: has("status"),
                scale: has("scale"),
                storage_version: storage.to_owned(),
                field_selectors: v
                    .get("selectableFields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.get("jsonPath")?.as_str())
                    .map(|p| p.trim_start_matches('.').to_owned())
                    .collect(),
            };
            let openapi_schema = v.pointer("/schema/openAPIV3Schema").cloned();
            let schema = openapi_schema
                .as_ref()
                .and_then(|s| Structural::compile(s, "").ok());
            let scale = subresources
                .get("scale")
                .filter(|s| !s.is_null())
                .map(|s| ScalePaths {
                    spec_replicas: text(s, "/specReplicasPath").to_owned(),
                    status_replicas: text(s, "/statusReplicasPath").to_owned(),
                    label_selector: s
                        .get("labelSelectorPath")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
            let field_shapes = openapi_schema.as_ref().map(managed_fields::Schema::custom);
            Served {
                resource: intern(shape),
                schema,
                field_shapes,
                columns: columns::of_version(v),
                scale,
                terminating,
                webhook: webhook.clone(),
                openapi_schema,
            }
        })
        .collect()
}

/// What a custom version's [`Resource`] is made of: the interning key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    group: String,
    version: String,
    plural: String,
    singular: String,
    kind: String,
    namespaced: bool,
    short_names: Vec<String>,
    categories: Vec<String>,
    status: bool,
    scale: bool,
    storage_version: String,
    /// `selectableFields`, as field-selector paths (`spec.color`).
    field_selectors: Vec<String>,
}

/// Interned descriptors and strings (see the module documentation).
static INTERNED: LazyLock<Mutex<Interned>> = LazyLock::new(Mutex::default);

#[derive(Default)]
struct Interned {
    resources: HashMap<Shape, &'static Resource>,
    strings: HashSet<&'static str>,
    lists: HashMap<Vec<String>, &'static [&'static str]>,
}

impl Interned {
    fn str(&mut self, s: &str) -> &'static str {
        if let Some(found) = self.strings.get(s) {
            return found;
        }
        let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
        self.strings.insert(leaked);
        leaked
    }

    fn list(&mut self, items: &[String]) -> &'static [&'static str] {
        if let Some(found) = self.lists.get(items) {
            return found;
        }
        let leaked: Vec<&'static str> = items.iter().map(|s| self.str(s)).collect();
        let leaked: &'static [&'static str] = Box::leak(leaked.into_boxed_slice());
        self.lists.insert(items.to_vec(), leaked);
        leaked
    }
}

/// Custom resources are decoded against their schema (`admit`), not a k8s-openapi type.
fn no_typed_fields(_: &Value) -> Result<UnknownFields, serde_json::Error> {
    Ok(Vec::new())
}

/// The one `&'static Resource` of `shape`.
fn intern(shape: Shape) -> &'static Resource {
    let mut interned = INTERNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = interned.resources.get(&shape) {
        return found;
    }
    let resource = Resource {
        group: interned.str(&shape.group),
        version: interned.str(&shape.version),
        plural: interned.str(&shape.plural),
        singular: interned.str(&shape.singular),
        kind: interned.str(&shape.kind),
        namespaced: shape.namespaced,
        short_names: interned.list(&shape.short_names),
        categories: interned.list(&shape.categories),
        status: shape.status,
        scale: shape.scale,
        has_spec: true,
        field_selectors: interned.list(&shape.field_selectors),
        decode: no_typed_fields,
        conversion: None,
        extra_subresources: &[],
        storage_version: interned.str(&shape.storage_version),
        note: None,
        custom: true,
    };
    let leaked: &'static Resource = Box::leak(Box::new(resource));
    interned.resources.insert(shape, leaked);
    leaked
}

/// kube's version priority (`version.CompareKubeAwareVersionStrings`): GA before beta before
/// alpha, higher numbers first; versions not of that form after them, alphabetically.
pub(crate) fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let rest = &rest[digits..];
        if rest.is_empty() {
            return Some((2, major, 0));
        }
        let (stage, minor) = if let Some(m) = rest.strip_prefix("beta") {
            (1, m)
        } else if let Some(m) = rest.strip_prefix("alpha") {
            (0, m)
        } else {
            return None;
        };
        Some((stage, major, minor.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// The served custom kinds of one API server, rebuilt on CRD writes.
#[derive(Debug, Default)]
pub struct Registry {
    current: RwLock<Arc<Snapshot>>,
    loaded: tokio::sync::OnceCell<()>,
    /// One rebuild at a time, so an older listing never replaces a newer one.
    rebuilding: tokio::sync::Mutex<()>,
}

impl Registry {
    /// The current snapshot. The first call loads it from `store` and starts following the
    /// CRDs there, so CRDs written through another API server (or by a restore) are served
    /// here too.
    pub(crate) async fn snapshot(self: &Arc<Self>, store: &Arc<dyn Store>) -> Arc<Snapshot> {
        self.loaded
            .get_or_init(|| async {
                let revision = match self.rebuild(store.as_ref()).await {
                    Ok(revision) => revision,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "loading CustomResourceDefinitions");
                        0
                    }
                };
                tokio::spawn(follow(Arc::downgrade(self), Arc::clone(store), revision));
            })
            .await;
        self.current()
    }

    fn current(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Brings every CRD's status up to date (names, conditions, stored versions) and serves
    /// what is established. Returns the revision of the CRDs it listed.
    pub(crate) async fn rebuild(&self, store: &dyn Store) -> Result<i64, ApiError> {
        let _one = self.rebuilding.lock().await;
        let definitions = definitions()?;
        let listed = store
            .list(&definitions.prefix(), ListOptions::default())
            .await
            .map_err(|e| ApiError::from_store(e, definitions, ""))?;
        let mut crds = Vec::with_capacity(listed.items.len());
        for kv in &listed.items {
            crds.push((kv.key.clone(), decode_kv(kv)?));
        }
        let crds = reconcile(store, crds).await;
        let snapshot = Snapshot::build(&crds);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(snapshot);
        Ok(listed.revision)
    }
}

/// How long the follower waits before watching again after its watch failed.
const FOLLOW_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Rebuilds `registry` whenever a CRD changes in `store` (after `revision`). Runs as long as
/// the registry (its API server) exists and the store serves watches: it ends when the
/// registry is dropped or the store ends the watch stream for good.
async fn follow(registry: Weak<Registry>, store: Arc<dyn Store>, mut revision: i64) {
    use futures_util::StreamExt as _;
    let Ok(definitions) = definitions() else {
        return;
    };
    loop {
        let mut events = match store.watch(&definitions.prefix(), revision).await {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(error = %e, "watching CustomResourceDefinitions");
                tokio::time::sleep(FOLLOW_RETRY).await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                revision = registry.rebuild(store.as_ref()).await.unwrap_or(revision);
                continue;
            }
        };
        loop {
            let event = events.next().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            match event {
                Some(Ok(event)) => {
                    // Status writes of the rebuild itself come back here once; the next
                    // rebuild then finds nothing to write.
                    revision = revision.max(event.mod_revision);
                    if let Err(e) = registry.rebuild(store.as_ref()).await {
                        tracing::warn!(error = %e.message, "rebuilding custom resources");
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "CustomResourceDefinition watch ended");
                    tokio::time::sleep(FOLLOW_RETRY).await;
                    revision = registry.rebuild(store.as_ref()).await.unwrap_or(revision);
                    break;
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
