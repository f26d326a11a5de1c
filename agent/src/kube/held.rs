//! Only the Secrets and ConfigMaps that the configuration references are
//! held in memory.
//!
//! One watch per kind sees every change, but keeps an object only when a
//! reference names it at that moment; the data of any other object is dropped
//! as soon as it arrives. Secrets, in two watches narrowed by type (field
//! selectors; service-account tokens, registry credentials and other types
//! are never even sent to the agent): `kubernetes.io/tls` ones named by a
//! listener's `certificateRefs` or a Gateway's
//! `spec.tls.backend.clientCertificateRef`, and `Opaque` ones named by a
//! SluicePolicy in their namespace (API keys, htpasswd, JWKS; see
//! [`crate::config::policy::references`]). ConfigMaps: CA bundles named by a
//! BackendTLSPolicy's `validation.caCertificateRefs`, a Gateway's
//! `spec.tls.frontend` `caCertificateRefs` or a SluicePolicy's remote JWKS
//! `caCertificateRefs`, and JWKS named by a SluicePolicy's
//! `jwks.configMapRef`. When a reference appears for an
//! object the watch has passed over, it is fetched by name (`get`) before the
//! configuration is applied, so a new HTTPS listener starts with its
//! certificate and a new policy with its CA.
//!
//! RBAC consequence: `get`, `list` and `watch` on `secrets` and `configmaps`
//! stay necessary (cluster-wide, or in the watched namespace with
//! `--watch-namespace`); RBAC cannot narrow them to referenced names, the
//! agent does. A referenced Secret of another type is not fetched: the
//! reference reports as not resolvable.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use ::kube::{
    api::{Api, DynamicObject},
    runtime::{
        watcher::{self, Event},
        WatchStreamExt,
    },
    Client,
};
use futures::StreamExt;
use tokio::{
    sync::{mpsc, watch as signal},
    task::JoinHandle,
};

use super::{
    convert::object_ref,
    watch::{unavailable_kind, Kind, WatchBackoff, UNAVAILABLE_RETRY},
};
use crate::{
    admin::SourceHealth,
    config::{
        policy::references, BackendTlsPolicy, Config, Gateway, ObjectRef, SluicePolicy,
        SECRET_TYPE_TLS,
    },
};

/// The Secret type of policy credentials (API keys, htpasswd, JWKS).
const SECRET_TYPE_OPAQUE: &str = "Opaque";

/// What is held of one kind, and how its objects are told apart.
#[derive(Debug, Clone, Copy)]
pub struct HeldKind {
    pub kind: Kind,
    /// Field selector of the watch (narrows what the API server sends).
    fields: Option<&'static str>,
    /// Whether an object fetched by name qualifies (the field selector's
    /// check, which a `get` does not apply).
    accept: fn(&DynamicObject) -> bool,
}

impl HeldKind {
    /// `kubernetes.io/tls` Secrets.
    pub const SECRETS: HeldKind = HeldKind {
        kind: Kind::Secret,
        fields: Some("type=kubernetes.io/tls"),
        accept: |o| o.data.get("type").and_then(|t| t.as_str()) == Some(SECRET_TYPE_TLS),
    };
    /// `Opaque` Secrets (SluicePolicy credentials). A Secret without a type
    /// is Opaque (the API server defaults it; a `get` may still show none).
    pub const OPAQUE_SECRETS: HeldKind = HeldKind {
        kind: Kind::Secret,
        fields: Some("type=Opaque"),
        accept: |o| {
            o.data
                .get("type")
                .and_then(|t| t.as_str())
                .is_none_or(|t| t == SECRET_TYPE_OPAQUE)
        },
    };
    /// ConfigMaps (CA bundles, JWKS).
    pub const CONFIG_MAPS: HeldKind = HeldKind {
        kind: Kind::ConfigMap,
        fields: None,
        accept: |_| true,
    };
}

/// The referenced objects of one kind, kept current by one watch.
#[derive(Clone)]
pub struct HeldStore {
    client: Client,
    what: HeldKind,
    /// `--watch-namespace`: objects elsewhere cannot be read.
    namespace: Option<String>,
    state: Arc<Mutex<State>>,
    listed: signal::Receiver<bool>,
}

#[derive(Default)]
struct State {
    wanted: BTreeSet<ObjectRef>,
    held: BTreeMap<ObjectRef, DynamicObject>,
    /// Being re-listed after a (re)connect; replaces `held` when complete.
    relist: Option<BTreeMap<ObjectRef, DynamicObject>>,
}

impl State {
    /// Keeps `obj` if it is referenced. Returns whether `held` changed.
    fn offer(&mut self, mut obj: DynamicObject) -> bool {
        let key = object_ref(&obj);
        if !self.wanted.contains(&key) {
            return self.held.remove(&key).is_some();
        }
        obj.metadata.managed_fields = None;
        self.held.insert(key, obj);
        true
    }
}

/// How long a fetch of one referenced object may take.
const GET_TIMEOUT: Duration = Duration::from_secs(5);

impl HeldStore {
    /// Starts the watch. `changed` is poked when a held object changes.
    pub fn start(
        client: Client,
        what: HeldKind,
        namespace: Option<String>,
        changed: mpsc::Sender<()>,
        health: Arc<SourceHealth>,
    ) -> (Self, JoinHandle<()>) {
        let kind = what.kind;
        let ar = kind.resource();
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let mut config = watcher::Config::default();
        if let Some(fields) = what.fields {
            config = config.fields(fields);
        }
        let state = Arc::new(Mutex::new(State::default()));
        let (listed_tx, listed) = signal::channel(false);
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                let stream = watcher::watcher(api, config).backoff(WatchBackoff::default());
                let mut stream = std::pin::pin!(stream);
                let mut unavailable = false;
                while let Some(event) = stream.next().await {
                    let mut pause = false;
                    let poke = {
                        let mut st = state.lock().expect("held lock");
                        match event {
                            Ok(Event::Apply(o)) => st.offer(o),
                            Ok(Event::Delete(o)) => st.held.remove(&object_ref(&o)).is_some(),
                            Ok(Event::Init) => {
                                st.relist = Some(BTreeMap::new());
                                false
                            }
                            Ok(Event::InitApply(o)) => {
                                let key = object_ref(&o);
                                if st.wanted.contains(&key) {
                                    let mut o = o;
                                    o.metadata.managed_fields = None;
                                    if let Some(r) = st.relist.as_mut() {
                                        r.insert(key, o);
                                    }
                                }
                                false
                            }
                            Ok(Event::InitDone) => {
                                if let Some(r) = st.relist.take() {
                                    st.held = r;
                                }
                                unavailable = false;
                                listed_tx.send_replace(true);
                                true
                            }
                            Err(e) if kind.optional() && unavailable_kind(&e) => {
                                // Serve without (nothing held) and keep trying,
                                // at a calm pace (see `watch::UNAVAILABLE_RETRY`).
                                pause = true;
                                st.relist = None;
                                listed_tx.send_replace(true);
                                if unavailable {
                                    false
                                } else {
                                    unavailable = true;
                                    tracing::warn!(?kind, error = %e, "Kubernetes kind not available (no RBAC permission?); serving without it and retrying");
                                    st.held.clear();
                                    true
                                }
                            }
                            Err(e) => {
                                tracing::warn!(?kind, error = %e, "Kubernetes watch failed; retrying");
                                health.failed();
                                false
                            }
                        }
                    };
                    if poke {
                        let _ = changed.try_send(());
                    }
                    if pause {
                        tokio::time::sleep(UNAVAILABLE_RETRY).await;
                    }
                }
            })
        };
        (
            Self {
                client,
                what,
                namespace,
                state,
                listed,
            },
            task,
        )
    }

    /// Waits for the first complete list.
    pub async fn synced(&self) {
        let mut listed = self.listed.clone();
        let _ = listed.wait_for(|l| *l).await;
    }

    /// The held objects.
    pub fn held(&self) -> Vec<DynamicObject> {
        let st = self.state.lock().expect("held lock");
        st.held.values().cloned().collect()
    }

    /// `namespace/name` of each held object.
    pub fn held_names(&self) -> Vec<String> {
        let st = self.state.lock().expect("held lock");
        st.held.keys().map(ToString::to_string).collect()
    }

    /// Sets the referenced objects: drops the ones no longer referenced and
    /// fetches the referenced ones not held yet. Returns whether the held
    /// set changed.
    pub async fn want(&self, wanted: BTreeSet<ObjectRef>) -> bool {
        let (missing, mut changed) = {
            let mut st = self.state.lock().expect("held lock");
            let before = st.held.len();
            st.held.retain(|k, _| wanted.contains(k));
            let changed = st.held.len() != before;
            let missing: Vec<ObjectRef> = wanted
                .iter()
                .filter(|k| !st.held.contains_key(*k))
                .filter(|k| self.namespace.as_ref().is_none_or(|ns| *ns == k.namespace))
                .cloned()
                .collect();
            // Before fetching: a watch event from now on is kept.
            st.wanted = wanted;
            (missing, changed)
        };
        let kind = self.what.kind;
        let ar = kind.resource();
        let fetches = missing.into_iter().map(|key| {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &key.namespace, &ar);
            async move {
                let got = tokio::time::timeout(GET_TIMEOUT, api.get_opt(&key.name)).await;
                (key, got)
            }
        });
        for (key, got) in futures::future::join_all(fetches).await {
            match got {
                Ok(Ok(Some(obj))) if (self.what.accept)(&obj) => {
                    let mut st = self.state.lock().expect("held lock");
                    // A watch event may have brought a newer version meanwhile.
                    if !st.held.contains_key(&key) {
                        changed |= st.offer(obj);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(?kind, object = %key, error = %e, "fetching a referenced object")
                }
                Err(_) => {
                    tracing::warn!(?kind, object = %key, "fetching a referenced object timed out")
                }
            }
        }
        changed
    }
}

/// The Secrets named by the listeners' `certificateRefs` and the backend
/// client certificate of `gateways`.
pub fn referenced_secrets<'a>(
    gateways: impl IntoIterator<Item = &'a Gateway>,
) -> BTreeSet<ObjectRef> {
    gateways
        .into_iter()
        .flat_map(|g| {
            g.listeners
                .iter()
                .filter_map(|l| l.tls.as_ref())
                .flat_map(|t| &t.certificate_refs)
                .chain(&g.backend_client_certificate)
        })
        .filter(|r| r.group.is_empty() && r.kind == "Secret")
        .map(|r| r.object.clone())
        .collect()
}

/// The Secrets named by the listeners' `certificateRefs` of ListenerSets
/// whose parent is one of `gateways` (whether or not it admits them yet:
/// admission can change without the set changing, and an admitted set must
/// find its certificate held), in the set's own namespace or granted to
/// ListenerSets of its namespace by a ReferenceGrant. Any namespace may
/// create a ListenerSet: it must not make the agent read other namespaces'
/// Secrets.
pub fn referenced_listener_set_secrets<'a>(
    config: &Config,
    gateways: impl IntoIterator<Item = &'a Gateway>,
) -> BTreeSet<ObjectRef> {
    use crate::control::refgrant::{Kind, ReferenceGrants};
    let ours: BTreeSet<&ObjectRef> = gateways.into_iter().map(|g| &g.id).collect();
    let grants = ReferenceGrants::new(config);
    let mut out = BTreeSet::new();
    for set in config
        .listener_sets
        .iter()
        .filter(|s| ours.contains(&s.parent))
    {
        let refs = set
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| &t.certificate_refs)
            .filter(|r| r.group.is_empty() && r.kind == "Secret");
        for r in refs {
            if r.object.namespace == set.id.namespace
                || grants.allows(
                    Kind::LISTENER_SET,
                    &set.id.namespace,
                    Kind::SECRET,
                    &r.object,
                )
            {
                out.insert(r.object.clone());
            }
        }
    }
    out
}

/// The Secrets named by `policies` (always in the policy's own namespace:
/// a SluicePolicy's references are local by construction).
pub fn referenced_policy_secrets(policies: &[SluicePolicy]) -> BTreeSet<ObjectRef> {
    policies
        .iter()
        .flat_map(|p| {
            references(p)
                .0
                .into_iter()
                .map(|r| ObjectRef::new(&p.id.namespace, &r.name))
        })
        .collect()
}

/// The ConfigMaps named by the frontend client-certificate validation of
/// `gateways`, by the `caCertificateRefs` of `policies`, and by the JWKS
/// (`configMapRef`, remote `caCertificateRefs`) of `sluice_policies`.
pub fn referenced_config_maps<'a>(
    gateways: impl IntoIterator<Item = &'a Gateway>,
    policies: &[BackendTlsPolicy],
    sluice_policies: &[SluicePolicy],
) -> BTreeSet<ObjectRef> {
    let frontend = gateways.into_iter().flat_map(|g| {
        let f = &g.frontend_validation;
        f.default
            .iter()
            .chain(f.per_port.values().flatten())
            .flat_map(|v| &v.ca_refs)
            .filter(|r| r.group.is_empty() && r.kind == "ConfigMap")
            .map(|r| r.object.clone())
    });
    let backend = policies.iter().flat_map(|p| {
        p.ca_refs
            .iter()
            .filter(|r| r.group.is_empty() && r.kind == "ConfigMap")
            .map(|r| ObjectRef::new(&p.id.namespace, &r.name))
    });
    let sluice = sluice_policies.iter().flat_map(|p| {
        references(p)
            .1
            .into_iter()
            .map(|r| ObjectRef::new(&p.id.namespace, &r.name))
    });
    frontend.chain(backend).chain(sluice).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(ns: &str, name: &str) -> DynamicObject {
        let mut o = DynamicObject::new(name, &Kind::Secret.resource())
            .data(serde_json::json!({"type": SECRET_TYPE_TLS, "data": {}}));
        o.metadata.namespace = Some(ns.into());
        o
    }

    #[test]
    fn only_wanted_objects_are_kept() {
        let mut st = State {
            wanted: [ObjectRef::new("a", "cert")].into(),
            ..State::default()
        };
        assert!(st.offer(secret("a", "cert")));
        assert!(!st.offer(secret("a", "other")), "unreferenced: not kept");
        assert_eq!(
            st.held.keys().collect::<Vec<_>>(),
            [&ObjectRef::new("a", "cert")]
        );
        st.wanted.clear();
        assert!(
            st.offer(secret("a", "cert")),
            "no longer referenced: dropped"
        );
        assert!(st.held.is_empty());
    }

    #[test]
    fn references_come_from_listener_certificate_refs() {
        let cfg = crate::config::parse_documents([(
            std::path::Path::new("t.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: n}\n\
             spec:\n  gatewayClassName: c\n  listeners:\n  - {name: h, port: 80, protocol: HTTP}\n  \
             - {name: s, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}, {name: other, namespace: certs}]}}\n",
        )])
        .unwrap();
        assert_eq!(
            referenced_secrets(&cfg.gateways),
            [
                ObjectRef::new("certs", "other"),
                ObjectRef::new("n", "cert")
            ]
            .into()
        );
    }

    /// A ListenerSet's certificates are held only for a set on one of our
    /// Gateways, and in another namespace only with a ReferenceGrant.
    #[test]
    fn listener_set_references_need_our_gateway_and_a_grant_across_namespaces() {
        let set = |name: &str, ns: &str, parent: &str, cert_ns: &str| {
            format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\n\
                 metadata: {{name: {name}, namespace: {ns}}}\n\
                 spec:\n  parentRef: {{name: {parent}, namespace: n}}\n  listeners:\n  \
                 - {{name: s, port: 443, protocol: HTTPS, hostname: {name}.example.com, \
                 tls: {{certificateRefs: [{{name: c-{name}, namespace: {cert_ns}}}]}}}}\n"
            )
        };
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: g, namespace: n}}\n\
             spec:\n  gatewayClassName: c\n  listeners:\n  - {{name: h, port: 80, protocol: HTTP}}\n{}{}{}{}\
             ---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {{name: ok, namespace: shared}}\nspec:\n  \
             from: [{{group: gateway.networking.k8s.io, kind: ListenerSet, namespace: granted}}]\n  \
             to: [{{group: \"\", kind: Secret}}]\n",
            set("own", "team", "g", "team"),
            set("other-gw", "team", "elsewhere", "team"),
            set("steal", "thief", "g", "victim"),
            set("granted", "granted", "g", "shared"),
        );
        let cfg = crate::config::parse_documents([(std::path::Path::new("t.yaml"), text.as_str())])
            .unwrap();
        assert_eq!(
            referenced_listener_set_secrets(&cfg, &cfg.gateways),
            [
                ObjectRef::new("shared", "c-granted"),
                ObjectRef::new("team", "c-own"),
            ]
            .into()
        );
    }

    #[test]
    fn config_map_references_come_from_policies_and_frontend_validation() {
        let cfg = crate::config::parse_documents([(
            std::path::Path::new("t.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: n}\n\
             spec:\n  gatewayClassName: c\n  listeners:\n  - {name: h, port: 80, protocol: HTTP}\n  \
             tls:\n    frontend:\n      default: {validation: {caCertificateRefs: [{name: client-ca}]}}\n      \
             perPort: [{port: 8443, tls: {validation: {caCertificateRefs: [{name: other, namespace: cas}]}}}]\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p, namespace: b}\n\
             spec:\n  targetRefs: [{group: \"\", kind: Service, name: svc}]\n  \
             validation: {hostname: x.internal, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}, {group: \"\", kind: Secret, name: not-a-map}]}\n",
        )])
        .unwrap();
        assert_eq!(
            referenced_config_maps(&cfg.gateways, &cfg.backend_tls_policies, &[]),
            [
                ObjectRef::new("b", "backend-ca"),
                ObjectRef::new("cas", "other"),
                ObjectRef::new("n", "client-ca"),
            ]
            .into()
        );
    }

    #[test]
    fn sluice_policies_reference_secrets_and_config_maps_in_their_namespace() {
        let cfg = crate::config::parse_documents([(
            std::path::Path::new("t.yaml"),
            "apiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {name: p, namespace: team}\n\
             spec:\n  targetRefs: [{kind: HTTPRoute, name: r}]\n  \
             apiKeys: {secretRefs: [{name: keys}, {name: more-keys}]}\n  \
             jwt:\n    providers:\n    \
             - {name: a, issuer: a, jwks: {configMapRef: {name: jwks}}}\n    \
             - {name: b, issuer: b, algorithms: [HS256], jwks: {secretRef: {name: hmac}}}\n    \
             - {name: c, issuer: c, jwks: {remote: {uri: \"https://idp.example\", caCertificateRefs: [{name: idp-ca}]}}}\n  \
             override:\n    basicAuth: {secretRef: {name: htpasswd}}\n",
        )])
        .unwrap();
        assert_eq!(
            referenced_policy_secrets(&cfg.policies),
            [
                ObjectRef::new("team", "hmac"),
                ObjectRef::new("team", "htpasswd"),
                ObjectRef::new("team", "keys"),
                ObjectRef::new("team", "more-keys"),
            ]
            .into()
        );
        assert_eq!(
            referenced_config_maps(&cfg.gateways, &cfg.backend_tls_policies, &cfg.policies),
            [
                ObjectRef::new("team", "idp-ca"),
                ObjectRef::new("team", "jwks")
            ]
            .into()
        );
    }

    #[test]
    fn opaque_secrets_are_told_apart_from_other_types() {
        let typed = |t: Option<&str>| {
            let mut o = secret("a", "s");
            match t {
                Some(t) => o.data["type"] = t.into(),
                None => {
                    o.data.as_object_mut().unwrap().remove("type");
                }
            }
            o
        };
        let opaque = HeldKind::OPAQUE_SECRETS.accept;
        assert!(opaque(&typed(Some("Opaque"))));
        assert!(opaque(&typed(None)), "no type is Opaque");
        assert!(!opaque(&typed(Some(SECRET_TYPE_TLS))));
        assert!(!opaque(&typed(Some("kubernetes.io/service-account-token"))));
        assert!(!(HeldKind::SECRETS.accept)(&typed(Some("Opaque"))));
    }
}
