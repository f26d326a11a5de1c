//! Merged, validated sections → compiled runtime policy ([`crate::policy`]):
//! references are resolved here (Secrets and ConfigMaps in the declaring
//! policy's namespace, the external authorization Service through the
//! ReferenceGrant rules), key material is parsed, and state that outlives
//! reloads is taken from the policy state store. A security section that
//! cannot be built makes the route fail closed.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use super::merge::{Contribution, Effective, IpLevel, SectionKind};
use crate::{
    config::{
        policy::{
            ApiKeySection, BasicAuthSection, ExtAuthSection, JwksSpec, JwtSection, PolicySections,
        },
        Config, ConfigMap, ObjectRef, Secret, SluicePolicy,
    },
    control::{backends::BackendResolver, refgrant::Kind},
    policy::{
        api_key::ApiKeyAuth,
        authz::Authorization,
        basic_auth::{parse_htpasswd, BasicAuth, VERIFIED_CAPACITY},
        cache::VerifiedCache,
        cors::CorsPolicy,
        ext_auth::{ExtAuth, ExtAuthConfig},
        ip::IpFilter,
        jwt::{JwtAuth, JwtConfig, KeySource, ProviderConfig},
        limits::Limits,
        ratelimit::{self, RateLimit},
        state::{fingerprint, Compile, StateKey},
        transform::Transform,
        Authenticator, Broken, PolicyId, PolicyMetrics, Reason, RoutePolicy, SectionMeta,
    },
    snapshot::BackendTarget,
};

/// A compiled section of any kind.
#[derive(Debug, Clone)]
enum Built {
    Ip(Arc<IpFilter>),
    Limits(Arc<Limits>),
    Cors(Arc<CorsPolicy>),
    Authn(Authenticator),
    Authz(Arc<Authorization>),
    RateLimit(Arc<ratelimit::Bound>),
    Transform(Arc<Transform>),
    /// `authentication.require`: nothing to compile.
    Require,
}

/// Builds runtime sections, each combination of contributions once per
/// compile, so that rules with the same effective policy share it.
pub(super) struct SectionBuilder<'a> {
    by_id: HashMap<&'a ObjectRef, &'a SluicePolicy>,
    secrets: HashMap<&'a ObjectRef, &'a Secret>,
    config_maps: HashMap<&'a ObjectRef, &'a ConfigMap>,
    resolver: &'a BackendResolver<'a>,
    metrics: &'a PolicyMetrics,
    state: &'a Compile<'a>,
    built: HashMap<(SectionKind, Vec<Contribution>), Result<Built, String>>,
    /// Problems found while building, per policy (status `Invalid`).
    pub errors: BTreeMap<ObjectRef, Vec<String>>,
    /// Warnings per policy (e.g. weak `{SHA}` passwords).
    pub warnings: BTreeMap<ObjectRef, Vec<String>>,
}

impl<'a> SectionBuilder<'a> {
    pub(super) fn new(
        config: &'a Config,
        resolver: &'a BackendResolver<'a>,
        metrics: &'a PolicyMetrics,
        state: &'a Compile<'a>,
    ) -> Self {
        Self {
            by_id: config.policies.iter().map(|p| (&p.id, p)).collect(),
            secrets: config.secrets.iter().map(|s| (&s.id, s)).collect(),
            config_maps: config.config_maps.iter().map(|m| (&m.id, m)).collect(),
            resolver,
            metrics,
            state,
            built: HashMap::new(),
            errors: BTreeMap::new(),
            warnings: BTreeMap::new(),
        }
    }

    pub(super) fn metrics(&self) -> &'a PolicyMetrics {
        self.metrics
    }

    pub(super) fn state(&self) -> &'a Compile<'a> {
        self.state
    }

    fn meta(&self, c: &Contribution, kind: SectionKind) -> Arc<SectionMeta> {
        let id = PolicyId::new("SluicePolicy", &c.policy.namespace, &c.policy.name);
        Arc::new(self.metrics.section(&id, kind.name()))
    }

    /// The runtime policy of merged sections.
    pub(super) fn route_policy(&mut self, eff: &Effective) -> RoutePolicy {
        let mut rp = RoutePolicy::default();
        if let Some((id, why)) = eff.invalid.first() {
            let meta = Arc::new(self.metrics.section(
                &PolicyId::new("SluicePolicy", &id.namespace, &id.name),
                "spec",
            ));
            rp.broken = Some(Broken {
                reason: Reason::PolicyInvalid,
                message: format!("SluicePolicy {id} cannot be applied: {why}"),
                section: meta,
            });
            return rp;
        }
        let mut failures = Vec::new();
        // One filter per level (its ipAllow and ipDeny together).
        for level in &eff.ip {
            rp.ip.push(self.ip_filter(level));
        }
        for kind in SectionKind::ALL {
            // Connection settings belong to the Gateway's sockets, not to
            // requests (see `Policies::connection`).
            if matches!(
                kind,
                SectionKind::IpAllow | SectionKind::IpDeny | SectionKind::Connection
            ) {
                continue;
            }
            let key = match eff.sources.get(&kind) {
                Some(s) => s.clone(),
                None => continue,
            };
            let built = match self.built.get(&(kind, key.clone())) {
                Some(b) => b.clone(),
                None => {
                    let b = self.build(kind, &key, &eff.sections);
                    if let Err(e) = &b {
                        let owner = key.last().expect("non-empty").policy.clone();
                        // Sorted, so that the order does not depend on which
                        // route happened to build the section first.
                        let list = self.errors.entry(owner).or_default();
                        if let Err(i) = list.binary_search(e) {
                            list.insert(i, e.clone());
                        }
                    }
                    self.built.insert((kind, key.clone()), b.clone());
                    b
                }
            };
            match built {
                Ok(Built::Ip(f)) => rp.ip.push(f),
                Ok(Built::Limits(l)) => rp.limits = Some(l),
                Ok(Built::Cors(c)) => rp.cors = Some(c),
                Ok(Built::Authn(a)) => rp.authn.push(a),
                Ok(Built::Authz(a)) => rp.authz = Some(a),
                Ok(Built::RateLimit(r)) => rp.rate_limit = Some(r),
                Ok(Built::Transform(t)) => rp.transform = Some(t),
                Ok(Built::Require) => {}
                Err(e) => failures.push((key.last().expect("non-empty").clone(), kind, e)),
            }
        }
        if let Some(r) = eff.sections.authentication {
            rp.require = r;
        }
        if let Some((c, kind, e)) = failures.into_iter().next() {
            rp.broken = Some(Broken {
                reason: Reason::PolicyInvalid,
                message: format!(
                    "SluicePolicy {} section {} cannot be applied: {e}",
                    c.policy,
                    kind.name()
                ),
                section: self.meta(&c, kind),
            });
        }
        rp
    }

    fn build(
        &mut self,
        kind: SectionKind,
        key: &[Contribution],
        s: &PolicySections,
    ) -> Result<Built, String> {
        let last = key.last().expect("non-empty");
        let meta = self.meta(last, kind);
        let ns = last.policy.namespace.clone();
        Ok(match kind {
            SectionKind::IpAllow | SectionKind::IpDeny => {
                let allow = s.ip_allow.clone().unwrap_or_default();
                let deny = s.ip_deny.clone().unwrap_or_default();
                let owner = if s.ip_allow.is_some() {
                    SectionKind::IpAllow
                } else {
                    SectionKind::IpDeny
                };
                Built::Ip(Arc::new(IpFilter::new(
                    &allow,
                    &deny,
                    self.meta(last, owner),
                )))
            }
            SectionKind::Limits => {
                let l = s.limits.expect("set");
                Built::Limits(Arc::new(Limits {
                    max_body: l.max_request_body_bytes,
                    max_headers: l.max_request_headers_bytes,
                    meta,
                }))
            }
            SectionKind::Cors => Built::Cors(Arc::new(CorsPolicy {
                cors: s.cors.clone().expect("set"),
                meta: Some(meta),
            })),
            SectionKind::Authentication | SectionKind::Connection => Built::Require,
            SectionKind::Authorization => {
                let a = s.authorization.clone().expect("set");
                Built::Authz(Arc::new(Authorization {
                    default_allow: a.default_allow,
                    rules: a.rules,
                    meta,
                }))
            }
            SectionKind::RateLimit => {
                let r = s.rate_limit.as_ref().expect("set");
                if (!r.cluster.is_empty() || !r.quotas.is_empty())
                    && !self.state.state().rate_limits().cluster.is_configured()
                {
                    let w = "rateLimit: cluster rules and quotas need the cluster store \
                             (agent flag --redis-url); without it they follow their failureMode \
                             (Open: each agent enforces them on its own; Closed: 503)";
                    let list = self.warnings.entry(last.policy.clone()).or_default();
                    if !list.iter().any(|x| x == w) {
                        list.push(w.to_owned());
                    }
                }
                let owner = |rule: &str| -> PolicyId {
                    let c = key
                        .iter()
                        .rev()
                        .find(|c| {
                            self.by_id.get(&c.policy).is_some_and(|p| {
                                let sec = if c.overriding {
                                    &p.overrides
                                } else {
                                    &p.defaults
                                };
                                sec.rate_limit
                                    .as_ref()
                                    .is_some_and(|r| r.names().any(|n| n == rule))
                            })
                        })
                        .unwrap_or(last);
                    PolicyId::new("SluicePolicy", &c.policy.namespace, &c.policy.name)
                };
                let section =
                    RateLimit::compile(r, owner, meta, self.state.state().rate_limits().clone());
                Built::RateLimit(Arc::new(ratelimit::Bound::new(Arc::new(section))))
            }
            SectionKind::Transform => {
                let t = s.transform.clone().expect("set");
                Built::Transform(Arc::new(Transform {
                    request: t.request,
                    response: t.response,
                    meta,
                }))
            }
            SectionKind::ApiKeys => {
                let k = s.api_keys.as_ref().expect("set");
                Built::Authn(Authenticator::ApiKey(Arc::new(
                    self.api_keys(&ns, k, meta)?,
                )))
            }
            SectionKind::BasicAuth => {
                let b = s.basic_auth.as_ref().expect("set");
                Built::Authn(Authenticator::Basic(Arc::new(
                    self.basic_auth(last, b, meta)?,
                )))
            }
            SectionKind::Jwt => {
                let j = s.jwt.as_ref().expect("set");
                Built::Authn(Authenticator::Jwt(Arc::new(self.jwt(key, j, meta)?)))
            }
            SectionKind::ExtAuth => {
                let e = s.ext_auth.as_ref().expect("set");
                let config = self.ext_auth_config(
                    Kind {
                        group: crate::config::policy::SLUICE_GROUP,
                        kind: "SluicePolicy",
                    },
                    &ns,
                    e,
                )?;
                Built::Authn(Authenticator::Ext(Arc::new(ExtAuth::compile(
                    config, meta, self.state,
                ))))
            }
        })
    }

    /// The filter of one level's ipAllow and ipDeny, once per combination.
    fn ip_filter(&mut self, level: &IpLevel) -> Arc<IpFilter> {
        let key: Vec<Contribution> = level
            .allow
            .iter()
            .chain(&level.deny)
            .map(|(c, _)| c.clone())
            .collect();
        let memo = (SectionKind::IpAllow, key);
        if let Some(Ok(Built::Ip(f))) = self.built.get(&memo) {
            return f.clone();
        }
        let (owner, kind) = match (&level.allow, &level.deny) {
            (Some((c, _)), _) => (c, SectionKind::IpAllow),
            (None, Some((c, _))) => (c, SectionKind::IpDeny),
            (None, None) => unreachable!("a level with a source filter"),
        };
        let empty = Vec::new();
        let allow = level.allow.as_ref().map_or(&empty, |(_, v)| v);
        let deny = level.deny.as_ref().map_or(&empty, |(_, v)| v);
        let f = Arc::new(IpFilter::new(allow, deny, self.meta(owner, kind)));
        self.built.insert(memo, Ok(Built::Ip(f.clone())));
        f
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<&'a Secret, String> {
        self.secrets
            .get(&ObjectRef::new(namespace, name))
            .copied()
            .ok_or_else(|| format!("Secret {namespace}/{name} not found"))
    }

    fn api_keys(
        &self,
        ns: &str,
        k: &ApiKeySection,
        meta: Arc<SectionMeta>,
    ) -> Result<ApiKeyAuth, String> {
        let mut keys = Vec::new();
        for name in &k.secrets {
            let secret = self.secret(ns, name)?;
            keys.extend(secret.data.iter().map(|(c, v)| (c.clone(), v.clone())));
        }
        ApiKeyAuth::new(
            keys,
            k.source.clone(),
            k.client_id_header.clone(),
            k.forward_key,
            meta,
        )
        .map_err(|e| format!("apiKeys: {e}"))
    }

    fn basic_auth(
        &mut self,
        owner: &Contribution,
        b: &BasicAuthSection,
        meta: Arc<SectionMeta>,
    ) -> Result<BasicAuth, String> {
        let ns = &owner.policy.namespace;
        let secret = self.secret(ns, &b.secret)?;
        let raw = secret
            .data
            .get(&b.key)
            .ok_or_else(|| format!("Secret {ns}/{} has no key {:?}", b.secret, b.key))?;
        let text = std::str::from_utf8(raw)
            .map_err(|_| format!("Secret {ns}/{} key {:?} is not UTF-8", b.secret, b.key))?;
        let htpasswd = parse_htpasswd(text)
            .map_err(|e| format!("Secret {ns}/{} key {:?}: {e}", b.secret, b.key))?;
        if !htpasswd.weak.is_empty() {
            let w = format!(
                "basicAuth: users {:?} have unsalted {{SHA}} passwords; use bcrypt (htpasswd -B)",
                htpasswd.weak
            );
            let list = self.warnings.entry(owner.policy.clone()).or_default();
            if let Err(i) = list.binary_search(&w) {
                list.insert(i, w);
            }
        }
        // Verified credentials stay valid while the file is unchanged.
        let cache = self.state.get_or_insert(
            StateKey {
                policy: meta.policy.clone(),
                section: "basicAuth",
                item: "verified".into(),
                fingerprint: fingerprint(&(raw, &b.realm)),
            },
            || VerifiedCache::<Arc<str>>::new(VERIFIED_CAPACITY),
        );
        Ok(BasicAuth::new(
            htpasswd,
            &b.realm,
            b.username_header.clone(),
            b.forward_credentials,
            cache,
            meta,
        ))
    }

    /// The namespace a merged provider was declared in: the last
    /// contribution whose own section names it.
    fn provider_namespace(&self, key: &[Contribution], provider: &str) -> Option<String> {
        key.iter().rev().find_map(|c| {
            let p = self.by_id.get(&c.policy)?;
            let s = if c.overriding {
                &p.overrides
            } else {
                &p.defaults
            };
            s.jwt
                .as_ref()?
                .providers
                .iter()
                .any(|x| x.name == provider)
                .then(|| c.policy.namespace.clone())
        })
    }

    fn jwt(
        &self,
        key: &[Contribution],
        j: &JwtSection,
        meta: Arc<SectionMeta>,
    ) -> Result<JwtAuth, String> {
        let mut providers = Vec::new();
        for p in &j.providers {
            let ns = self
                .provider_namespace(key, &p.name)
                .unwrap_or_else(|| key.last().expect("non-empty").policy.namespace.clone());
            let keys = match &p.jwks {
                JwksSpec::Inline(text) => KeySource::Static {
                    jwks: text.clone(),
                    allow_hmac: false,
                },
                JwksSpec::Secret { name, key } => {
                    let secret = self.secret(&ns, name)?;
                    let raw = secret
                        .data
                        .get(key)
                        .ok_or_else(|| format!("Secret {ns}/{name} has no key {key:?}"))?;
                    KeySource::Static {
                        jwks: String::from_utf8(raw.clone())
                            .map_err(|_| format!("Secret {ns}/{name} key {key:?} is not UTF-8"))?,
                        allow_hmac: true,
                    }
                }
                JwksSpec::ConfigMap { name, key } => {
                    let map = self
                        .config_maps
                        .get(&ObjectRef::new(&ns, name))
                        .ok_or_else(|| format!("ConfigMap {ns}/{name} not found"))?;
                    KeySource::Static {
                        jwks: map
                            .data
                            .get(key)
                            .ok_or_else(|| format!("ConfigMap {ns}/{name} has no key {key:?}"))?
                            .clone(),
                        allow_hmac: false,
                    }
                }
                JwksSpec::Remote(r) => {
                    let mut pem = Vec::new();
                    for (name, key) in &r.ca_refs {
                        let map = self
                            .config_maps
                            .get(&ObjectRef::new(&ns, name))
                            .ok_or_else(|| format!("ConfigMap {ns}/{name} not found"))?;
                        let text = map
                            .data
                            .get(key)
                            .ok_or_else(|| format!("ConfigMap {ns}/{name} has no key {key:?}"))?;
                        pem.extend_from_slice(text.as_bytes());
                        pem.push(b'\n');
                    }
                    KeySource::Remote {
                        uri: r.uri.clone(),
                        ca_pem: (!pem.is_empty()).then_some(pem),
                        cache_duration: r.cache_duration,
                        timeout: r.timeout,
                    }
                }
            };
            providers.push(ProviderConfig {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                audiences: p.audiences.clone(),
                algorithms: p.algorithms.clone(),
                clock_skew: p.clock_skew,
                keys,
                claim_to_headers: p.claim_to_headers.clone(),
            });
        }
        let config = JwtConfig {
            mode: j.mode,
            providers,
            sources: j.token_sources.clone(),
            forward_token: j.forward_token,
        };
        let policy = meta.policy.clone();
        JwtAuth::build(config, &policy, self.state, meta).map_err(|e| format!("jwt: {e}"))
    }

    /// The external authorization call of a policy section or an HTTPRoute
    /// filter (`from` says which, for the ReferenceGrant check).
    pub(super) fn ext_auth_config(
        &self,
        from: Kind<'_>,
        from_ns: &str,
        e: &ExtAuthSection,
    ) -> Result<ExtAuthConfig, String> {
        let endpoints = match self.resolver.target_from(from, from_ns, &e.service, e.port) {
            BackendTarget::Endpoints(eps) => eps.to_vec(),
            BackendTarget::Invalid(u) => return Err(format!("extAuth: {}", u.message)),
        };
        Ok(ExtAuthConfig {
            endpoints,
            authority: format!("{}.{}", e.service.name, e.service.namespace),
            path_prefix: e.path_prefix.clone(),
            allowed_headers: e.allowed_headers.clone(),
            allowed_response_headers: e.allowed_response_headers.clone(),
            forward_body: e.forward_body,
            timeout: e.timeout,
            fail_open: e.fail_open,
        })
    }
}
