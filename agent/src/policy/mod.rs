//! API policy at run time: compiled policy sections and the phases every
//! request goes through.
//!
//! This module holds the *compiled* form of policy (parsed JWKS, hashed API
//! keys, compiled matchers and templates) and knows nothing of YAML, the
//! Kubernetes API or the config model: [`crate::control`] converts validated
//! config into these types, merges what is attached at each level (GEP-713
//! defaults and overrides) and hands each route rule one [`RoutePolicy`].
//!
//! # Phases
//!
//! A request runs through these phases, in this order, once per request
//! (never once per retry or mirror):
//!
//! 1. **connection** — accept, TLS (SNI), per-shard connection limits
//!    ([`crate::gateway`]); in eBPF mode XDP has already dropped sources a
//!    whole-Gateway `ipAllow`/`ipDeny` refuses.
//! 2. **pre-route** — [`RoutePolicy::pre_route`]: client address allow/deny
//!    ([`ip`]), request header size ([`limits`]), and fail-closed policies
//!    (an attached security policy that cannot be applied answers 500/503).
//!    The checks use the effective policy of the route the request matches
//!    (the lookup has no side effects), or the listener's when none does, so
//!    a denied source gets 403 and never learns which routes exist.
//! 3. **route match** — listener by port and Host, then the route table.
//! 4. **CORS preflight** — answered here ([`cors`]), before authentication
//!    (browsers send no credentials on preflights).
//! 5. **authentication** — [`jwt`], [`api_key`], [`basic_auth`], [`ext_auth`]:
//!    every section must authenticate the request, or one of them with
//!    `authentication.require: Any`; a credential that is present but wrong
//!    is rejected in every mode. Identity (claims, client id, user) lands in
//!    the [`RequestCtx`]; credentials are stripped and identity headers set
//!    only after the phase passed, so a client can never inject them.
//! 6. **authorization** — [`authz`]: ordered rules over the request and the
//!    identity, first match wins.
//! 7. **rate limits** — [`ratelimit`]: local (GCRA) rules, cluster rules
//!    and quotas, in that order; 429 with `Retry-After` and the RateLimit
//!    headers, refusals counted towards the penalty box. Authentication
//!    failures count towards penalties that ask for it.
//! 8. **request transform** — [`transform`]: header set/add/remove with
//!    templated values; the request body limit is armed ([`limits`]).
//! 9. **upstream** — HTTPRoute filters, backend choice, retries, mirrors
//!    ([`crate::gateway`]).
//! 10. **response transform** — [`RoutePolicy::response`]: CORS response
//!     headers and response header transforms.
//!
//! Every answer the gateway makes itself is a [`Rejection`] with a
//! [`Reason`]: it decides the response and the metric labels. Policy state
//! that must outlive reloads (JWKS caches, verified-token caches) lives in
//! [`state::PolicyState`], keyed by the policy's identity, not in the
//! snapshot.
pub mod api_key;
pub mod authz;
pub mod basic_auth;
pub mod cache;
pub mod connection;
pub mod context;
pub mod cors;
pub mod credential;
pub mod ext_auth;
pub mod ip;
pub mod jose;
pub mod jwks;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod prefix;
pub mod ratelimit;
pub mod reject;
pub mod state;
pub mod template;
pub mod transform;

use std::{fmt, sync::Arc};

use bytes::Bytes;
use http::{request::Parts, HeaderMap, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

pub use context::{Identity, RequestCtx};
pub use metrics::{PolicyMetrics, SectionMeta};
pub use reject::{Reason, Rejection};

/// Error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of responses the gateway makes (same as [`crate::gateway::Body`]).
pub type Body = BoxBody<Bytes, BoxError>;

/// A small generated body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Starts the background work of policy state (remote JWKS fetches) and
/// waits, at most `within`, for the first load of state that never loaded;
/// returns what is still not loaded.
pub use jwks::warm_up;

/// Identity of a policy: what metrics, logs and state keys name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    /// `SluicePolicy`, or `HTTPRoute` for a route's own CORS / ExternalAuth filters.
    pub kind: &'static str,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl PolicyId {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: Arc::from(namespace),
            name: Arc::from(name),
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// How several authentication sections combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Require {
    /// Every section must authenticate the request.
    #[default]
    All,
    /// One authenticating section suffices.
    Any,
}

/// One authentication section.
#[derive(Debug, Clone)]
pub enum Authenticator {
    Jwt(Arc<jwt::JwtAuth>),
    ApiKey(Arc<api_key::ApiKeyAuth>),
    Basic(Arc<basic_auth::BasicAuth>),
    Ext(Arc<ext_auth::ExtAuth>),
}

/// A security policy that is attached but cannot be applied: requests are
/// answered with its rejection (500 invalid, 503 not yet usable) instead of
/// being served unprotected.
#[derive(Debug, Clone)]
pub struct Broken {
    pub reason: Reason,
    pub message: String,
    pub section: Arc<SectionMeta>,
}

/// The effective policy of one route rule through one listener: what every
/// attached policy contributes after precedence and merging. Shared by `Arc`
/// between the entries of the rule.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// Fail closed: set when an attached security section cannot be applied.
    pub broken: Option<Broken>,
    /// Source filters of every level; a request must pass each.
    pub ip: Vec<Arc<ip::IpFilter>>,
    pub limits: Option<Arc<limits::Limits>>,
    pub cors: Option<Arc<cors::CorsPolicy>>,
    pub require: Require,
    /// In evaluation order: JWT, API keys, Basic, external.
    pub authn: Vec<Authenticator>,
    pub authz: Option<Arc<authz::Authorization>>,
    /// Bound to the route and Gateway it governs.
    pub rate_limit: Option<Arc<ratelimit::Bound>>,
    pub transform: Option<Arc<transform::Transform>>,
}

/// What the request phases decided, when the request goes on.
#[derive(Debug)]
pub enum Verdict {
    /// Forward the request.
    Forward,
    /// Answer with this response (a CORS preflight): not a rejection.
    Respond(Response<Body>),
}

impl RoutePolicy {
    /// Whether nothing is attached (the data path skips every phase).
    pub fn is_empty(&self) -> bool {
        self.broken.is_none()
            && self.ip.is_empty()
            && self.limits.is_none()
            && self.cors.is_none()
            && self.authn.is_empty()
            && self.authz.is_none()
            && self.rate_limit.is_none()
            && self.transform.is_none()
    }

    /// The sections in effect, each with the policy it comes from (for the
    /// admin page: which policies govern a route).
    pub fn sections(&self) -> Vec<&SectionMeta> {
        let mut out: Vec<&SectionMeta> = Vec::new();
        out.extend(self.broken.iter().map(|b| &*b.section));
        out.extend(self.ip.iter().map(|i| &*i.meta));
        out.extend(self.limits.iter().map(|l| &*l.meta));
        out.extend(self.cors.iter().filter_map(|c| c.meta.as_deref()));
        out.extend(self.authn.iter().map(|a| match a {
            Authenticator::Jwt(j) => &*j.meta,
            Authenticator::ApiKey(k) => &*k.meta,
            Authenticator::Basic(b) => &*b.meta,
            Authenticator::Ext(e) => &*e.meta,
        }));
        out.extend(self.authz.iter().map(|a| &*a.meta));
        out.extend(self.rate_limit.iter().map(|r| &*r.section.meta));
        out.extend(self.transform.iter().map(|t| &*t.meta));
        out
    }

    /// Pre-route checks: fail-closed, source address, header size.
    pub fn pre_route(&self, ctx: &RequestCtx, parts: &Parts) -> Result<(), Rejection> {
        for ip in &self.ip {
            ip.check(ctx.client_ip)?;
        }
        if let Some(limits) = &self.limits {
            limits.check_head(parts)?;
        }
        if let Some(b) = &self.broken {
            b.section.denied(b.reason);
            return Err(Rejection::new(b.reason, b.message.clone()).by(&b.section));
        }
        Ok(())
    }

    /// CORS preflight, authentication, authorization and request transform.
    /// On `Forward`, `parts` is ready to go upstream (credentials stripped,
    /// identity headers set, transforms applied) and `ctx` holds the identity.
    pub async fn request(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &mut Parts,
        body: &mut Body,
    ) -> Result<Verdict, Rejection> {
        if let Some(c) = &self.cors {
            if let Some(resp) = c.preflight(&parts.method, &parts.headers) {
                return Ok(Verdict::Respond(resp));
            }
        }
        if !self.authn.is_empty() {
            if let Err(r) = self.authenticate(ctx, parts, body).await {
                if let Some(rl) = &self.rate_limit {
                    if r.status == http::StatusCode::UNAUTHORIZED {
                        rl.auth_failed(ctx);
                    }
                }
                return Err(r);
            }
        }
        if let Some(a) = &self.authz {
            a.check(ctx, parts)?;
        }
        if let Some(rl) = &self.rate_limit {
            ctx.rate_limit = Some(Box::new(rl.check(ctx, parts).await?));
        }
        if let Some(t) = &self.transform {
            t.request(ctx, parts);
        }
        Ok(Verdict::Forward)
    }

    async fn authenticate(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &mut Parts,
        body: &mut Body,
    ) -> Result<(), Rejection> {
        let mut edits = context::Edits::default();
        let mut passed = 0usize;
        let mut missing: Option<Rejection> = None;
        for a in &self.authn {
            let outcome = match a {
                Authenticator::Jwt(j) => j.authenticate(ctx, parts, &mut edits).await,
                Authenticator::ApiKey(k) => k.authenticate(ctx, parts, &mut edits),
                Authenticator::Basic(b) => b.authenticate(ctx, parts, &mut edits).await,
                Authenticator::Ext(e) => {
                    // An external call only when the request can still pass.
                    if self.require == Require::All && missing.is_some() {
                        continue;
                    }
                    e.authenticate(ctx, parts, body, &mut edits).await
                }
            };
            match outcome {
                context::AuthnOutcome::Authenticated => passed += 1,
                // Allowed without a credential: satisfies `All`, never `Any` alone.
                context::AuthnOutcome::Anonymous => {}
                // A credential that is present but wrong: rejected in every mode.
                context::AuthnOutcome::Failed(r) => return Err(r),
                context::AuthnOutcome::Missing(r) => {
                    missing = Some(match missing {
                        // Every challenge goes back, so the client can pick a scheme.
                        Some(mut m) => {
                            for v in r.headers().get_all(http::header::WWW_AUTHENTICATE) {
                                m.headers_mut()
                                    .append(http::header::WWW_AUTHENTICATE, v.clone());
                            }
                            m
                        }
                        None => r,
                    })
                }
            }
        }
        let ok = match self.require {
            Require::All => missing.is_none(),
            // One section authenticated, or every section let the request
            // pass anonymously (none asked for a missing credential).
            Require::Any => passed > 0 || missing.is_none(),
        };
        match (ok, missing) {
            (false, Some(r)) => Err(r),
            (false, None) => Err(Rejection::new(Reason::Forbidden, "not authenticated")),
            (true, _) => {
                edits.apply(&mut parts.headers, &mut parts.uri);
                Ok(())
            }
        }
    }

    /// Arms the body limit, if any: a body larger than the limit ends in an
    /// error that [`limits::BodyLimitHit`] reports as 413.
    pub fn limit_body(&self, body: Body) -> (Body, Option<limits::BodyLimitHit>) {
        match self.limits.as_ref().and_then(|l| l.max_body) {
            Some(max) => {
                let (b, hit) = limits::limit(body, max);
                (b, Some(hit))
            }
            None => (body, None),
        }
    }

    /// Response phase: CORS headers, rate-limit headers and response transforms.
    pub fn response(&self, ctx: &RequestCtx, headers: &mut HeaderMap) {
        if let Some(c) = &self.cors {
            c.annotate(ctx.origin.as_ref(), headers);
        }
        if let Some(r) = &ctx.rate_limit {
            r.apply(headers);
        }
        if let Some(t) = &self.transform {
            t.response(ctx, headers);
        }
    }
}
