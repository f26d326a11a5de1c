//! `jwt`: bearer tokens verified against each provider's JWKS.
//!
//! A request's token is taken from the first configured source that has
//! one (default `Authorization: Bearer`). Then:
//!
//! 1. **Size.** Tokens over [`jose::MAX_TOKEN_BYTES`] are refused unparsed.
//! 2. **Verified-token cache.** A token verified before (and not past its
//!    `exp`) is accepted from a bounded cache: no parsing, no signature
//!    check. The cache outlives reloads while the providers are unchanged.
//! 3. **Provider.** The unverified payload's `iss` chooses the providers;
//!    the header's `kid` chooses keys among theirs (a kid present in two
//!    providers' key sets tries both). An `iss` no provider names is a 401,
//!    except in `Permissive` mode, where the token is left for the upstream.
//! 4. **Keys.** A kid no key set knows makes remote key sets refetch, once,
//!    single-flight and rate-limited ([`jwks`]); a key set that never
//!    loaded fails closed (503).
//! 5. **Verification** by `jsonwebtoken` (ring): the signature with a key of
//!    the algorithm's own type (an RSA public key never serves as an HMAC
//!    secret), then `exp` (required), `nbf`, `iss` and `aud` with the
//!    provider's clock skew as leeway. `alg: none`, unknown `crit` header
//!    parameters and HMAC without keys from a Secret are refused before.
//!
//! On success the claims become the request's identity, the token is
//! stripped (unless `forward_token`) and `claimToHeaders` replace the
//! client's headers of those names — a claim that is absent removes the
//! header, so a client can never inject an identity. Failures answer 401
//! with an RFC 6750 `WWW-Authenticate: Bearer` challenge.
use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use http::{header, request::Parts, HeaderName, HeaderValue, Uri};
use jsonwebtoken::{errors::ErrorKind, Algorithm, Validation};
use serde_json::Value;

use super::{
    cache::VerifiedCache,
    context::{AuthnOutcome, Edits, HeaderEdit},
    credential::CredentialSource,
    jose::{self, KeySet, TokenError},
    jwks::{self, RemoteKeySet, RemoteSpec},
    state::{fingerprint, Compile, StateKey},
    PolicyId, Reason, Rejection, RequestCtx, SectionMeta,
};

pub use super::jwks::warm_up;

/// Leeway for `exp` and `nbf` when a provider sets none.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Largest clock skew accepted (beyond it, `exp` would mean little).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(24 * 3600);
/// Verified tokens remembered per section.
pub const TOKEN_CACHE_CAPACITY: usize = 4096;
/// Longest a verified token is remembered, even when its `exp` is later:
/// a key the IdP withdrew stops being trusted within this time.
pub const TOKEN_CACHE_MAX_TTL: Duration = Duration::from_secs(300);
/// Most signature checks one token may cost (a token without `kid` is
/// tried against every key of its providers).
const MAX_VERIFY_ATTEMPTS: usize = 8;

/// Whether a token must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum JwtMode {
    /// A valid token is required.
    #[default]
    Strict,
    /// Requests without a token pass unauthenticated.
    Optional,
    /// Like `Optional`, and tokens whose issuer no provider names pass
    /// unauthenticated too (they are meant for someone else).
    Permissive,
}

/// Where a provider's keys come from, resolved by the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A JWKS document (inline, or read from a Secret or ConfigMap).
    /// HMAC (`oct`) keys are accepted only when `allow_hmac` (keys from a Secret).
    Static { jwks: String, allow_hmac: bool },
    /// Fetched from an HTTPS endpoint (plain HTTP only to loopback).
    Remote {
        uri: Uri,
        /// PEM CA bundle the endpoint must chain to; `None`: platform CAs.
        ca_pem: Option<Vec<u8>>,
        cache_duration: Duration,
        timeout: Duration,
    },
}

/// One issuer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderConfig {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    /// JOSE names (`RS256`, `ES256`, `EdDSA`, `HS256`, ...); empty: every
    /// asymmetric algorithm.
    pub algorithms: Vec<String>,
    /// Leeway for `exp` and `nbf` (whole seconds; [`DEFAULT_CLOCK_SKEW`]).
    pub clock_skew: Duration,
    pub keys: KeySource,
    /// (claim path, header): claims copied into upstream request headers.
    pub claim_to_headers: Vec<(String, HeaderName)>,
}

/// Everything a `jwt` section is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub mode: JwtMode,
    pub providers: Vec<ProviderConfig>,
    /// In order; never empty.
    pub sources: Vec<CredentialSource>,
    pub forward_token: bool,
}

/// A provider's keys.
#[derive(Debug)]
enum Keys {
    Static(Arc<KeySet>),
    Remote(Arc<RemoteKeySet>),
}

impl Keys {
    fn current(&self) -> Option<Arc<KeySet>> {
        match self {
            Keys::Static(s) => Some(s.clone()),
            Keys::Remote(r) => r.keys(),
        }
    }
}

/// A compiled provider.
#[derive(Debug)]
struct Provider {
    issuer: String,
    keys: Keys,
    /// The allowed algorithms, each with its validation (one algorithm per
    /// validation: jsonwebtoken then also checks the key's type against it).
    validations: Vec<(Algorithm, Validation)>,
    claim_to_headers: Vec<(String, HeaderName)>,
    /// Claim headers of the other providers: removed when this one
    /// verified the token, so they cannot be injected either.
    other_headers: Vec<HeaderName>,
}

impl Provider {
    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find_map(|(a, v)| (*a == alg).then_some(v))
    }
}

/// What a verified token yields; cached, and shared by every request that
/// presents the token again.
#[derive(Debug)]
struct VerifiedToken {
    claims: Arc<Value>,
    /// Header edits from `claimToHeaders` (sets and removes).
    edits: Box<[HeaderEdit]>,
}

/// A failure before the response is made: reason and a fixed description
/// (safe in a quoted header parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fail {
    reason: Reason,
    description: &'static str,
}

const fn fail(reason: Reason, description: &'static str) -> Fail {
    Fail {
        reason,
        description,
    }
}

/// A compiled `jwt` section.
#[derive(Debug)]
pub struct JwtAuth {
    pub config: JwtConfig,
    pub meta: Arc<SectionMeta>,
    providers: Vec<Provider>,
    /// Kept across reloads while the providers are unchanged.
    tokens: Arc<VerifiedCache<Arc<VerifiedToken>>>,
    /// Removes every claim header: what a request without identity gets.
    anonymous_edits: Box<[HeaderEdit]>,
}

impl JwtAuth {
    /// Compiles the section. Remote key sets and the verified-token cache
    /// come from `state`, keyed by `policy`, so they survive reloads; with
    /// a runtime in the state, new remote key sets start fetching at once
    /// (see [`warm_up`] to wait for them).
    pub fn build(
        config: JwtConfig,
        policy: &PolicyId,
        state: &Compile,
        meta: Arc<SectionMeta>,
    ) -> Result<Self, String> {
        if config.providers.is_empty() {
            return Err("no providers".into());
        }
        if config.sources.is_empty() {
            return Err("no token sources".into());
        }
        let mut providers: Vec<Provider> = Vec::with_capacity(config.providers.len());
        for (i, p) in config.providers.iter().enumerate() {
            if config.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(format!("provider {:?} appears twice", p.name));
            }
            providers.push(
                build_provider(p, policy, state)
                    .map_err(|e| format!("provider {:?}: {e}", p.name))?,
            );
        }
        let mut all_headers: Vec<HeaderName> = Vec::new();
        for (_, h) in config.providers.iter().flat_map(|p| &p.claim_to_headers) {
            if !all_headers.contains(h) {
                all_headers.push(h.clone());
            }
        }
        for p in &mut providers {
            p.other_headers = all_headers
                .iter()
                .filter(|h| !p.claim_to_headers.iter().any(|(_, own)| own == *h))
                .cloned()
                .collect();
        }
        let anonymous_edits = all_headers.into_iter().map(HeaderEdit::Remove).collect();
        // The cached edits and claims depend on every provider (key material
        // included): any change there is a fresh cache.
        let tokens = state.get_or_insert(
            StateKey {
                policy: policy.clone(),
                section: "jwt",
                item: "tokens".into(),
                fingerprint: fingerprint(&config.providers),
            },
            || VerifiedCache::new(TOKEN_CACHE_CAPACITY),
        );
        Ok(Self {
            config,
            meta,
            providers,
            tokens,
            anonymous_edits,
        })
    }

    /// Remote key sets that never loaded, with the reason (for a status
    /// condition): requests their providers would verify get 503.
    pub fn unavailable(&self) -> Vec<String> {
        self.key_sets()
            .into_iter()
            .filter(|s| !s.is_loaded())
            .map(|s| s.unavailable_reason())
            .collect()
    }

    /// The section's remote key sets.
    pub fn key_sets(&self) -> Vec<Arc<RemoteKeySet>> {
        self.providers
            .iter()
            .filter_map(|p| match &p.keys {
                Keys::Remote(r) => Some(r.clone()),
                Keys::Static(_) => None,
            })
            .collect()
    }

    /// Verified tokens held in the cache (tests, admin).
    pub fn cached_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub async fn authenticate(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
        edits: &mut Edits,
    ) -> AuthnOutcome {
        let found = self
            .config
            .sources
            .iter()
            .find_map(|s| s.extract(parts).map(|t| (s, t)));
        let Some((source, token)) = found else {
            if self.config.mode == JwtMode::Strict {
                // With `require: Any` another section may still let the
                // request through: it must not carry a client-made identity.
                self.remove_claim_headers(edits);
                self.meta.denied(Reason::JwtMissing);
                return AuthnOutcome::Missing(
                    Rejection::new(Reason::JwtMissing, "bearer token required")
                        .with_header(header::WWW_AUTHENTICATE, challenge(ctx.host, None))
                        .by(&self.meta),
                );
            }
            return self.anonymous(edits);
        };
        if token.len() > jose::MAX_TOKEN_BYTES {
            return self.failed(ctx, fail(Reason::JwtMalformed, "token too large"));
        }
        let now = Instant::now();
        if let Some(v) = self.tokens.get(token, now) {
            return self.accept(ctx, edits, source, &v);
        }
        match self.verify(token).await {
            Ok(Some((v, expires))) => {
                if let Some(expires) = expires {
                    self.tokens.insert(token, v.clone(), expires, now);
                }
                self.accept(ctx, edits, source, &v)
            }
            // Permissive: another issuer's token, left for the upstream.
            Ok(None) => self.anonymous(edits),
            Err(f) => self.failed(ctx, f),
        }
    }

    fn accept(
        &self,
        ctx: &mut RequestCtx<'_>,
        edits: &mut Edits,
        source: &CredentialSource,
        v: &VerifiedToken,
    ) -> AuthnOutcome {
        self.meta.allowed();
        if !self.config.forward_token {
            source.strip(edits);
        }
        for e in v.edits.iter() {
            edits.header(e.clone());
        }
        ctx.identity.claims = Some(v.claims.clone());
        AuthnOutcome::Authenticated
    }

    fn anonymous(&self, edits: &mut Edits) -> AuthnOutcome {
        self.meta.allowed();
        self.remove_claim_headers(edits);
        AuthnOutcome::Anonymous
    }

    fn remove_claim_headers(&self, edits: &mut Edits) {
        for e in self.anonymous_edits.iter() {
            edits.header(e.clone());
        }
    }

    fn failed(&self, ctx: &RequestCtx, f: Fail) -> AuthnOutcome {
        self.meta.denied(f.reason);
        let mut r = Rejection::new(f.reason, f.description).by(&self.meta);
        // A 503 is not the client's fault: no challenge to retry with.
        if f.reason != Reason::PolicyUnavailable {
            r = r.with_header(
                header::WWW_AUTHENTICATE,
                challenge(ctx.host, Some(f.description)),
            );
        }
        AuthnOutcome::Failed(r)
    }

    /// Verifies a token not in the cache: `Ok(None)` for a token of an
    /// issuer no provider names in `Permissive` mode.
    async fn verify(
        &self,
        token: &str,
    ) -> Result<Option<(Arc<VerifiedToken>, Option<Instant>)>, Fail> {
        let unverified = jose::read(token).map_err(|e| match e {
            TokenError::AlgNone => fail(Reason::JwtSignature, "unsigned tokens are not accepted"),
            TokenError::Algorithm => fail(Reason::JwtSignature, "algorithm not supported"),
            TokenError::Crit => fail(
                Reason::JwtMalformed,
                "critical header parameters not supported",
            ),
            TokenError::Segments | TokenError::Base64 | TokenError::Header => {
                fail(Reason::JwtMalformed, "malformed token")
            }
            TokenError::Payload => fail(Reason::JwtMalformed, "malformed token claims"),
        })?;
        let alg = unverified.alg;
        let kid = unverified.kid.as_deref();
        let issuer = unverified.issuer();
        let by_issuer: Vec<&Provider> = self
            .providers
            .iter()
            .filter(|p| Some(p.issuer.as_str()) == issuer)
            .collect();
        if by_issuer.is_empty() {
            if self.config.mode == JwtMode::Permissive {
                return Ok(None);
            }
            return Err(fail(Reason::JwtClaims, "issuer not accepted"));
        }
        let candidates: Vec<(&Provider, &Validation)> = by_issuer
            .into_iter()
            .filter_map(|p| p.validation(alg).map(|v| (p, v)))
            .collect();
        if candidates.is_empty() {
            return Err(fail(Reason::JwtSignature, "algorithm not allowed"));
        }
        let mut sets: Vec<Option<Arc<KeySet>>> =
            candidates.iter().map(|(p, _)| p.keys.current()).collect();

        // No key set knows the kid (or, without a kid, has a key for the
        // algorithm): the IdP may have rotated. Remote sets without it
        // refetch — single-flight and rate-limited, so made-up kids cannot
        // turn into a flood of fetches.
        let knows = |s: &KeySet| match kid {
            Some(k) => s.has_kid(k),
            None => s.supports(alg),
        };
        if !sets.iter().flatten().any(|s| knows(s)) {
            let mut refetched = false;
            for ((p, _), set) in candidates.iter().zip(&sets) {
                if let Keys::Remote(r) = &p.keys {
                    if set.as_deref().is_none_or(|s| !knows(s)) {
                        refetched |= r.refetch().await;
                    }
                }
            }
            if refetched {
                sets = candidates.iter().map(|(p, _)| p.keys.current()).collect();
            }
        }

        let mut attempts = 0;
        for ((p, validation), set) in candidates.iter().zip(&sets) {
            let Some(set) = set else { continue };
            for key in set.candidates(kid, alg) {
                if attempts == MAX_VERIFY_ATTEMPTS {
                    break;
                }
                attempts += 1;
                match jsonwebtoken::decode::<Value>(token, key.decoding_key(), validation) {
                    Ok(data) => return verified(p, data.claims).map(Some),
                    Err(e) => {
                        if let Some(f) = claim_failure(e.kind(), &unverified.claims) {
                            return Err(f);
                        }
                        // The signature did not verify with this key: try the next.
                    }
                }
            }
        }
        if attempts > 0 {
            return Err(fail(Reason::JwtSignature, "invalid signature"));
        }
        if sets.iter().any(Option::is_none) {
            return Err(fail(
                Reason::PolicyUnavailable,
                "token signing keys are not available yet",
            ));
        }
        if kid.is_some_and(|k| sets.iter().flatten().any(|s| s.has_kid(k))) {
            return Err(fail(
                Reason::JwtSignature,
                "signing key does not fit the algorithm",
            ));
        }
        Err(fail(Reason::JwtSignature, "unknown signing key"))
    }
}

fn build_provider(
    p: &ProviderConfig,
    policy: &PolicyId,
    state: &Compile,
) -> Result<Provider, String> {
    if p.issuer.is_empty() {
        return Err("issuer is empty".into());
    }
    if p.clock_skew > MAX_CLOCK_SKEW {
        return Err(format!(
            "clockSkew {:?} is over the limit of {:?}",
            p.clock_skew, MAX_CLOCK_SKEW
        ));
    }
    let allow_hmac = matches!(
        p.keys,
        KeySource::Static {
            allow_hmac: true,
            ..
        }
    );
    let mut algorithms: Vec<Algorithm> = Vec::new();
    for name in &p.algorithms {
        let alg = match jose::algorithm(name) {
            Some(a) => a,
            None if name.eq_ignore_ascii_case("none") => {
                return Err("algorithm none is never accepted".into())
            }
            None => {
                return Err(format!(
                    "algorithm {name:?} is not supported (supported: RS256, RS384, RS512, PS256, \
                     PS384, PS512, ES256, ES384, EdDSA, and HS256, HS384, HS512 with keys from a \
                     Secret)"
                ))
            }
        };
        if jose::is_hmac(alg) && !allow_hmac {
            return Err(format!("algorithm {name} needs HMAC keys from a Secret"));
        }
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    if algorithms.is_empty() {
        algorithms = jose::ASYMMETRIC.to_vec();
    }
    let keys = match &p.keys {
        KeySource::Static { jwks, allow_hmac } => {
            let set = KeySet::parse(jwks.as_bytes(), *allow_hmac).map_err(|e| e.to_string())?;
            if set.skipped_hmac {
                return Err(
                    "the JWKS holds an HMAC (oct) key; HMAC keys are accepted only from a Secret"
                        .into(),
                );
            }
            if !algorithms.iter().any(|a| set.supports(*a)) {
                return Err(format!(
                    "no key in the JWKS can verify an allowed algorithm ({})",
                    names(&algorithms)
                ));
            }
            for s in &set.skipped {
                tracing::warn!(policy = %policy, provider = %p.name, "JWKS key left out: {s}");
            }
            Keys::Static(Arc::new(set))
        }
        KeySource::Remote {
            uri,
            ca_pem,
            cache_duration,
            timeout,
        } => {
            let spec = RemoteSpec {
                uri: uri.clone(),
                ca_pem: ca_pem.clone(),
                cache_duration: *cache_duration,
                timeout: *timeout,
            };
            jwks::check_spec(&spec).map_err(|e| e.to_string())?;
            let key = StateKey {
                policy: policy.clone(),
                section: "jwt",
                item: p.name.clone(),
                fingerprint: fingerprint(&spec),
            };
            let set = state.get_or_insert(key, || {
                RemoteKeySet::new(format!("{policy} jwt provider {}", p.name), spec)
            });
            if let Some(rt) = state.state().runtime() {
                set.start(rt);
            }
            Keys::Remote(set)
        }
    };
    let validations = algorithms
        .iter()
        .map(|alg| (*alg, validation(*alg, p)))
        .collect();
    Ok(Provider {
        issuer: p.issuer.clone(),
        keys,
        validations,
        claim_to_headers: p.claim_to_headers.clone(),
        other_headers: Vec::new(),
    })
}

fn names(algs: &[Algorithm]) -> String {
    algs.iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn validation(alg: Algorithm, p: &ProviderConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = p.clock_skew.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[&p.issuer]);
    let mut required = vec!["exp", "iss"];
    if p.audiences.is_empty() {
        // Not checked at all: jsonwebtoken would otherwise refuse every
        // token that carries an `aud`.
        v.validate_aud = false;
    } else {
        v.set_audience(&p.audiences);
        // Required, so an `aud` of the wrong shape (which jsonwebtoken
        // would skip) is refused as missing.
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// The failure for a jsonwebtoken error that ends the verification (the
/// signature verified, a claim did not); `None` when the signature did not
/// verify with that key, so the next key may be tried.
fn claim_failure(kind: &ErrorKind, claims: &serde_json::Map<String, Value>) -> Option<Fail> {
    Some(match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::RsaFailedSigning
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Crypto(_) => return None,
        ErrorKind::ExpiredSignature => fail(Reason::JwtExpired, "token expired"),
        ErrorKind::ImmatureSignature => fail(Reason::JwtExpired, "token not valid yet (nbf)"),
        // jsonwebtoken reports a claim it cannot read as a number (or a
        // string) as missing.
        ErrorKind::MissingRequiredClaim(c) => match (c.as_str(), claims.contains_key(c)) {
            ("exp", false) => fail(Reason::JwtExpired, "token has no exp"),
            ("exp", true) => fail(Reason::JwtClaims, "exp is not a NumericDate"),
            ("aud", false) => fail(Reason::JwtClaims, "token has no aud"),
            ("aud", true) => fail(Reason::JwtClaims, "aud is malformed"),
            _ => fail(Reason::JwtClaims, "a required claim is missing"),
        },
        ErrorKind::InvalidAudience => fail(Reason::JwtClaims, "audience not accepted"),
        ErrorKind::InvalidIssuer => fail(Reason::JwtClaims, "issuer not accepted"),
        ErrorKind::InvalidSubject => fail(Reason::JwtClaims, "subject not accepted"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => fail(Reason::JwtMalformed, "malformed token"),
        _ => fail(Reason::JwtSignature, "token not accepted"),
    })
}

/// The checks after jsonwebtoken's, the cached value and its lifetime.
fn verified(p: &Provider, claims: Value) -> Result<(Arc<VerifiedToken>, Option<Instant>), Fail> {
    // jsonwebtoken skips an `nbf` it cannot read as a number; a token that
    // states a start time we cannot honour is refused instead.
    if claims.get("nbf").is_some_and(|n| !n.is_number()) {
        return Err(fail(Reason::JwtClaims, "nbf is not a NumericDate"));
    }
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let expires = cache_expiry(&claims, unix_now, Instant::now());
    let mut edits = Vec::with_capacity(p.claim_to_headers.len() + p.other_headers.len());
    for (path, name) in &p.claim_to_headers {
        match claim(&claims, path).and_then(header_value) {
            Some(v) => edits.push(HeaderEdit::Set(name.clone(), v)),
            None => edits.push(HeaderEdit::Remove(name.clone())),
        }
    }
    edits.extend(p.other_headers.iter().cloned().map(HeaderEdit::Remove));
    Ok((
        Arc::new(VerifiedToken {
            claims: Arc::new(claims),
            edits: edits.into(),
        }),
        expires,
    ))
}

/// When a verified token leaves the cache: at its `exp` (never later), and
/// at most [`TOKEN_CACHE_MAX_TTL`] from now. `None`: not cached (already
/// past `exp`, within the leeway).
fn cache_expiry(claims: &Value, unix_now: Duration, now: Instant) -> Option<Instant> {
    let exp = claims.get("exp")?.as_f64()?;
    let left = exp - unix_now.as_secs_f64();
    if left.is_nan() || left <= 0.0 {
        return None;
    }
    let ttl = Duration::try_from_secs_f64(left)
        .unwrap_or(TOKEN_CACHE_MAX_TTL)
        .min(TOKEN_CACHE_MAX_TTL);
    Some(now + ttl)
}

/// A claim by dotted path (`realm.role`); a name that exists literally with
/// dots wins (the same reading as [`super::Identity::claim`]).
fn claim<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut v = claims;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

/// A claim as a header value: strings as they are, numbers and booleans
/// as JSON text, arrays of those joined with commas, anything else as JSON.
/// `None` (the header is removed) for null and values a header cannot carry.
fn header_value(v: &Value) -> Option<HeaderValue> {
    let text: Cow<str> = match v {
        Value::Null => return None,
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            let parts: Vec<Cow<str>> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Cow::Borrowed(s.as_str()),
                    other => Cow::Owned(other.to_string()),
                })
                .collect();
            Cow::Owned(parts.join(","))
        }
        other => Cow::Owned(other.to_string()),
    };
    HeaderValue::from_str(&text).ok()
}

/// RFC 6750 challenge. `realm` is the request host (stripped of anything
/// that could break the quoting); no `error` when the token was missing.
fn challenge(host: &str, description: Option<&str>) -> HeaderValue {
    let realm: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']'))
        .collect();
    let value = match description {
        None => format!("Bearer realm=\"{realm}\""),
        Some(d) => {
            format!("Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{d}\"")
        }
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    use http::{Request, StatusCode};
    use jsonwebtoken::EncodingKey;
    use ring::{
        rand::SystemRandom,
        signature::{self, KeyPair as _},
    };
    use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
    use serde_json::json;

    use super::*;
    use crate::policy::{jwks::test_idp::Idp, state::PolicyState};

    const ISS: &str = "https://idp.test";
    const RSA_1: &str = include_str!("../../tests/data/jwt-rsa-1.pem");
    const RSA_1_PUB: &str = include_str!("../../tests/data/jwt-rsa-1.pub.pem");
    const RSA_2: &str = include_str!("../../tests/data/jwt-rsa-2.pem");

    fn b64(b: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    /// A signing key and its public JWK.
    struct Signer {
        key: EncodingKey,
        jwk: Value,
    }

    struct Fixture {
        rsa: Signer,
        /// The public key of `rsa` as DER (PKCS#1), for the HMAC confusion.
        rsa_public_der: Vec<u8>,
        /// Another RSA key, published under `rsa-2`.
        rsa2: Signer,
        es256: Signer,
        es384: Signer,
        ed: Signer,
        hs: Signer,
    }

    fn rsa_signer(pem: &str, kid: &str) -> (Signer, Vec<u8>) {
        let PrivateKeyDer::Pkcs8(der) = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
        else {
            panic!("test keys are PKCS#8")
        };
        let kp = signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let c: ring::rsa::PublicKeyComponents<Vec<u8>> = kp.public().into();
        (
            Signer {
                key: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
                jwk: json!({"kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e)}),
            },
            kp.public().as_ref().to_vec(),
        )
    }

    fn ec(alg: &'static signature::EcdsaSigningAlgorithm, crv: &str, kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let kp = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        // Uncompressed point: 0x04 || x || y.
        let point = kp.public_key().as_ref();
        let n = (point.len() - 1) / 2;
        Signer {
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": crv, "kid": kid,
                "x": b64(&point[1..1 + n]), "y": b64(&point[1 + n..])}),
        }
    }

    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let rng = SystemRandom::new();
            let (rsa, rsa_public_der) = rsa_signer(RSA_1, "rsa-1");
            let (rsa2, _) = rsa_signer(RSA_2, "rsa-2");
            let ed_pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let ed_kp = signature::Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
            let secret = [0x5au8; 32];
            Fixture {
                rsa,
                rsa_public_der,
                rsa2,
                es256: ec(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    "P-256",
                    "es256",
                ),
                es384: ec(
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    "P-384",
                    "es384",
                ),
                ed: Signer {
                    key: EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
                    jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed",
                        "x": b64(ed_kp.public_key().as_ref())}),
                },
                hs: Signer {
                    key: EncodingKey::from_secret(&secret),
                    jwk: json!({"kty": "oct", "kid": "hs", "k": b64(secret)}),
                },
            }
        })
    }

    fn unix() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims() -> Value {
        json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": unix() + 600,
            "realm": {"role": "admin"}})
    }

    /// `claims()` with fields replaced (null: removed).
    fn with(patch: Value) -> Value {
        let mut c = claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    /// A compact JWS with exactly this header (so `crit`, `none`, odd
    /// kids can be written), signed by jsonwebtoken.
    fn token(header: Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
        let msg = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
        format!("{msg}.{sig}")
    }

    fn rs(c: &Value) -> String {
        token(
            json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}),
            c,
            &fixture().rsa.key,
            Algorithm::RS256,
        )
    }

    fn jwks(keys: &[&Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    fn inline(keys: &[&Value]) -> KeySource {
        KeySource::Static {
            jwks: jwks(keys),
            allow_hmac: false,
        }
    }

    fn remote(idp: &Idp) -> KeySource {
        let s = idp.spec();
        KeySource::Remote {
            uri: s.uri,
            ca_pem: s.ca_pem,
            cache_duration: s.cache_duration,
            timeout: s.timeout,
        }
    }

    fn provider(name: &str, keys: KeySource) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            issuer: ISS.into(),
            audiences: vec!["api".into()],
            algorithms: vec![],
            clock_skew: DEFAULT_CLOCK_SKEW,
            keys,
            claim_to_headers: vec![
                ("sub".into(), HeaderName::from_static("x-user")),
                ("realm.role".into(), HeaderName::from_static("x-role")),
                ("email".into(), HeaderName::from_static("x-email")),
            ],
        }
    }

    fn config(mode: JwtMode, providers: Vec<ProviderConfig>) -> JwtConfig {
        JwtConfig {
            mode,
            providers,
            sources: vec![CredentialSource::bearer()],
            forward_token: false,
        }
    }

    fn policy() -> PolicyId {
        PolicyId::new("SluicePolicy", "ns", "p")
    }

    fn try_build(cfg: JwtConfig, state: &PolicyState) -> Result<JwtAuth, String> {
        let c = state.compile();
        let meta = Arc::new(SectionMeta::detached(policy(), "jwt"));
        let a = JwtAuth::build(cfg, &policy(), &c, meta)?;
        state.commit(c.id());
        Ok(a)
    }

    fn build(cfg: JwtConfig, state: &PolicyState) -> JwtAuth {
        try_build(cfg, state).unwrap()
    }

    struct Out {
        outcome: AuthnOutcome,
        parts: Parts,
        claims: Option<Arc<Value>>,
    }

    impl Out {
        fn rejection(&self) -> &Rejection {
            match &self.outcome {
                AuthnOutcome::Failed(r) | AuthnOutcome::Missing(r) => r,
                o => panic!("not rejected: {o:?}"),
            }
        }

        fn authenticated(&self) -> bool {
            matches!(self.outcome, AuthnOutcome::Authenticated)
        }
    }

    /// Runs the section and applies its edits (a section must push none
    /// when it fails).
    async fn run(a: &JwtAuth, uri: &str, headers: &[(&str, &str)]) -> Out {
        let mut b = Request::get(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let mut parts = b.body(()).unwrap().into_parts().0;
        let mut ctx = RequestCtx::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "api.example.com",
        );
        let mut edits = Edits::default();
        let outcome = a.authenticate(&mut ctx, &parts, &mut edits).await;
        edits.apply(&mut parts.headers, &mut parts.uri);
        Out {
            outcome,
            parts,
            claims: ctx.identity.claims,
        }
    }

    /// A request with the token and forged identity headers.
    async fn bearer(a: &JwtAuth, token: &str) -> Out {
        let auth = format!("Bearer {token}");
        run(
            a,
            "/",
            &[
                ("authorization", &auth),
                ("x-user", "forged"),
                ("x-role", "forged"),
                ("x-email", "forged"),
            ],
        )
        .await
    }

    #[tokio::test]
    async fn rejection_table() {
        let f = fixture();
        let state = PolicyState::default();
        let a = build(
            config(
                JwtMode::Strict,
                vec![provider("idp", inline(&[&f.rsa.jwk, &f.es256.jwk]))],
            ),
            &state,
        );
        let now = unix();
        let pem_secret = EncodingKey::from_secret(RSA_1_PUB.as_bytes());
        let good = rs(&claims());
        let (head, rest) = good.split_once('.').unwrap();
        let cases: Vec<(&str, String, Reason, &str)> = vec![
            (
                "alg none",
                format!(
                    "{}.{}.",
                    b64(json!({"alg": "none", "kid": "rsa-1"}).to_string()),
                    b64(claims().to_string())
                ),
                Reason::JwtSignature,
                "unsigned",
            ),
            (
                "HS256 signed with the RSA public key",
                token(
                    json!({"alg": "HS256", "kid": "rsa-1"}),
                    &claims(),
                    &pem_secret,
                    Algorithm::HS256,
                ),
                Reason::JwtSignature,
                "algorithm not allowed",
            ),
            (
                "a foreign key reusing a known kid",
                token(
                    json!({"alg": "RS256", "kid": "rsa-1"}),
                    &claims(),
                    &f.rsa2.key,
                    Algorithm::RS256,
                ),
                Reason::JwtSignature,
                "invalid signature",
            ),
            (
                "unknown kid",
                token(
                    json!({"alg": "RS256", "kid": "nope"}),
                    &claims(),
                    &f.rsa.key,
                    Algorithm::RS256,
                ),
                Reason::JwtSignature,
                "unknown signing key",
            ),
            (
                "the kid of a key of another type",
                token(
                    json!({"alg": "RS256", "kid": "es256"}),
                    &claims(),
                    &f.rsa.key,
                    Algorithm::RS256,
                ),
                Reason::JwtSignature,
                "does not fit",
            ),
            (
                "expired",
                rs(&with(json!({"exp": now - 3600}))),
                Reason::JwtExpired,
                "expired",
            ),
            (
                "exp beyond the leeway",
                rs(&with(json!({"exp": now - 60 - 10}))),
                Reason::JwtExpired,
                "expired",
            ),
            (
                "nbf in the future",
                rs(&with(json!({"nbf": now + 3600}))),
                Reason::JwtExpired,
                "nbf",
            ),
            (
                "nbf beyond the leeway",
                rs(&with(json!({"nbf": now + 60 + 10}))),
                Reason::JwtExpired,
                "nbf",
            ),
            (
                "wrong iss",
                rs(&with(json!({"iss": "https://evil.test"}))),
                Reason::JwtClaims,
                "issuer",
            ),
            (
                "aud mismatch (string)",
                rs(&with(json!({"aud": "other"}))),
                Reason::JwtClaims,
                "audience",
            ),
            (
                "aud mismatch (array)",
                rs(&with(json!({"aud": ["other", "more"]}))),
                Reason::JwtClaims,
                "audience",
            ),
            (
                "no aud",
                rs(&with(json!({"aud": null}))),
                Reason::JwtClaims,
                "no aud",
            ),
            (
                "aud of the wrong shape",
                rs(&with(json!({"aud": 5}))),
                Reason::JwtClaims,
                "aud is malformed",
            ),
            (
                "no exp",
                rs(&with(json!({"exp": null}))),
                Reason::JwtExpired,
                "no exp",
            ),
            (
                "exp as a string",
                rs(&with(json!({"exp": (now + 600).to_string()}))),
                Reason::JwtClaims,
                "exp is not",
            ),
            (
                "nbf as a string",
                rs(&with(json!({"nbf": "0"}))),
                Reason::JwtClaims,
                "nbf is not",
            ),
            (
                "unknown crit",
                token(
                    json!({"alg": "RS256", "kid": "rsa-1", "crit": ["x-ext"], "x-ext": 1}),
                    &claims(),
                    &f.rsa.key,
                    Algorithm::RS256,
                ),
                Reason::JwtMalformed,
                "critical",
            ),
            (
                "two segments",
                good.rsplit_once('.').unwrap().0.to_owned(),
                Reason::JwtMalformed,
                "malformed",
            ),
            (
                "four segments",
                format!("{good}.e30"),
                Reason::JwtMalformed,
                "malformed",
            ),
            (
                "bad base64 in the header",
                format!("{}*.{rest}", &head[..head.len() - 1]),
                Reason::JwtMalformed,
                "malformed",
            ),
            (
                "bad base64 in the signature",
                format!("{good}*"),
                Reason::JwtMalformed,
                "malformed",
            ),
            (
                "padded base64",
                format!("{head}=.{rest}"),
                Reason::JwtMalformed,
                "malformed",
            ),
            (
                "over 8 KiB with a valid signature",
                rs(&with(json!({"pad": "x".repeat(9000)}))),
                Reason::JwtMalformed,
                "too large",
            ),
            (
                "over 8 KiB of garbage",
                "x".repeat(9000),
                Reason::JwtMalformed,
                "too large",
            ),
        ];
        for (name, t, reason, message) in &cases {
            let out = bearer(&a, t).await;
            let AuthnOutcome::Failed(r) = &out.outcome else {
                panic!("{name}: {:?}", out.outcome)
            };
            assert_eq!(r.reason, *reason, "{name}: {}", r.message);
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}");
            assert!(r.message.contains(message), "{name}: {}", r.message);
            let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
            let want = format!(
                "Bearer realm=\"api.example.com\", error=\"invalid_token\", \
                 error_description=\"{}\"",
                r.message
            );
            assert_eq!(challenge, want, "{name}");
            assert!(out.claims.is_none(), "{name}");
            assert_eq!(
                out.parts.headers["x-user"], "forged",
                "{name}: edits on failure"
            );
            assert!(out.parts.headers.contains_key("authorization"), "{name}");
        }
        assert_eq!(a.cached_tokens(), 0, "failures are never cached");

        // The base token of the table is good, and so are tokens just
        // inside the leeway (not cached: past their exp already).
        for t in [
            good.clone(),
            rs(&with(json!({"exp": now - 60 + 10}))),
            rs(&with(json!({"nbf": now + 60 - 10}))),
            rs(&with(json!({"aud": ["other", "api"]}))),
        ] {
            let out = bearer(&a, &t).await;
            assert!(out.authenticated(), "{:?}", out.outcome);
        }
        assert_eq!(
            a.cached_tokens(),
            3,
            "the token already past exp is not cached"
        );

        // A token in the query when only the header is a source: missing.
        let out = run(&a, &format!("/p?access_token={good}"), &[]).await;
        let AuthnOutcome::Missing(r) = &out.outcome else {
            panic!("{:?}", out.outcome)
        };
        assert_eq!(r.reason, Reason::JwtMissing);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        // RFC 6750 3.1: no error code when no credentials were sent.
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api.example.com\""
        );
    }

    #[tokio::test]
    async fn an_rsa_public_key_is_never_an_hmac_secret() {
        let f = fixture();
        let state = PolicyState::default();
        // Even with HS256 allowed and an HMAC key present, the RSA key
        // verifies RS* only.
        let mut p = provider(
            "idp",
            KeySource::Static {
                jwks: jwks(&[&f.rsa.jwk, &f.hs.jwk]),
                allow_hmac: true,
            },
        );
        p.algorithms = vec!["RS256".into(), "HS256".into()];
        let a = build(config(JwtMode::Strict, vec![p]), &state);
        let pem = EncodingKey::from_secret(RSA_1_PUB.as_bytes());
        let der = EncodingKey::from_secret(&f.rsa_public_der);
        for (name, header, key) in [
            (
                "PEM, RSA kid",
                json!({"alg": "HS256", "kid": "rsa-1"}),
                &pem,
            ),
            (
                "DER, RSA kid",
                json!({"alg": "HS256", "kid": "rsa-1"}),
                &der,
            ),
            ("PEM, no kid", json!({"alg": "HS256"}), &pem),
            ("DER, no kid", json!({"alg": "HS256"}), &der),
        ] {
            let out = bearer(&a, &token(header, &claims(), key, Algorithm::HS256)).await;
            assert_eq!(out.rejection().reason, Reason::JwtSignature, "{name}");
            assert_eq!(out.rejection().status, StatusCode::UNAUTHORIZED, "{name}");
        }
        // The real HMAC key does verify there.
        let t = token(
            json!({"alg": "HS256", "kid": "hs"}),
            &claims(),
            &f.hs.key,
            Algorithm::HS256,
        );
        assert!(bearer(&a, &t).await.authenticated());
    }

    #[tokio::test]
    async fn every_supported_algorithm_verifies_with_its_key() {
        let f = fixture();
        let state = PolicyState::default();
        let mut p = provider(
            "idp",
            KeySource::Static {
                jwks: jwks(&[&f.rsa.jwk, &f.es256.jwk, &f.es384.jwk, &f.ed.jwk, &f.hs.jwk]),
                allow_hmac: true,
            },
        );
        p.algorithms = ["RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256"]
            .map(String::from)
            .to_vec();
        let a = build(config(JwtMode::Strict, vec![p]), &state);
        let cases = [
            (Algorithm::RS256, "rsa-1", &f.rsa.key),
            (Algorithm::PS256, "rsa-1", &f.rsa.key),
            (Algorithm::ES256, "es256", &f.es256.key),
            (Algorithm::ES384, "es384", &f.es384.key),
            (Algorithm::EdDSA, "ed", &f.ed.key),
            (Algorithm::HS256, "hs", &f.hs.key),
        ];
        for (alg, kid, key) in cases {
            let t = token(
                json!({"alg": format!("{alg:?}"), "kid": kid}),
                &claims(),
                key,
                alg,
            );
            let out = bearer(&a, &t).await;
            assert!(out.authenticated(), "{alg:?}: {:?}", out.outcome);
            assert_eq!(out.claims.unwrap()["sub"], "alice");
            // Without a kid, the keys of the algorithm's type are tried.
            let t = token(json!({"alg": format!("{alg:?}")}), &claims(), key, alg);
            assert!(bearer(&a, &t).await.authenticated(), "{alg:?} without kid");
        }
        // An algorithm the provider does not list.
        let t = token(
            json!({"alg": "RS384", "kid": "rsa-1"}),
            &claims(),
            &f.rsa.key,
            Algorithm::RS384,
        );
        let out = bearer(&a, &t).await;
        assert_eq!(out.rejection().message, "algorithm not allowed");

        // The default (no list): every asymmetric algorithm, no HMAC.
        let a = build(
            config(
                JwtMode::Strict,
                vec![provider("idp", inline(&[&f.rsa.jwk, &f.es384.jwk]))],
            ),
            &state,
        );
        for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS512] {
            let t = token(
                json!({"alg": format!("{alg:?}")}),
                &claims(),
                &f.rsa.key,
                alg,
            );
            assert!(bearer(&a, &t).await.authenticated(), "{alg:?}");
        }
        let t = token(
            json!({"alg": "ES384"}),
            &claims(),
            &f.es384.key,
            Algorithm::ES384,
        );
        assert!(bearer(&a, &t).await.authenticated());
    }

    #[test]
    fn invalid_sections_do_not_build() {
        let f = fixture();
        let state = PolicyState::default();
        let err =
            |p: ProviderConfig| try_build(config(JwtMode::Strict, vec![p]), &state).unwrap_err();
        let mut p = provider("idp", inline(&[&f.rsa.jwk]));
        p.algorithms = vec!["HS256".into()];
        assert!(err(p).contains("needs HMAC keys from a Secret"));
        let mut p = provider("idp", inline(&[&f.rsa.jwk]));
        p.algorithms = vec!["none".into()];
        assert!(err(p).contains("never accepted"));
        let mut p = provider("idp", inline(&[&f.rsa.jwk]));
        p.algorithms = vec!["ES512".into()];
        assert!(err(p).contains("not supported"));
        let e = err(provider("idp", inline(&[&f.hs.jwk])));
        assert!(e.contains("only from a Secret"), "{e}");
        let mut p = provider("idp", inline(&[&f.rsa.jwk]));
        p.algorithms = vec!["ES256".into()];
        assert!(err(p).contains("no key in the JWKS can verify"));
        let e = err(provider("idp", inline(&[])));
        assert!(
            e.contains("provider \"idp\": the JWKS has no usable"),
            "{e}"
        );
        let mut p = provider("idp", inline(&[&f.rsa.jwk]));
        p.clock_skew = Duration::from_secs(2 * 24 * 3600);
        assert!(err(p).contains("clockSkew"));
        let p = provider(
            "idp",
            KeySource::Remote {
                uri: "http://idp.example.com/jwks".parse().unwrap(),
                ca_pem: None,
                cache_duration: Duration::from_secs(60),
                timeout: Duration::from_secs(5),
            },
        );
        assert!(err(p).contains("must be https"));
        let e = try_build(
            config(
                JwtMode::Strict,
                vec![
                    provider("idp", inline(&[&f.rsa.jwk])),
                    provider("idp", inline(&[&f.rsa.jwk])),
                ],
            ),
            &state,
        )
        .unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        assert!(
            state.is_empty(),
            "failed builds leave no state behind once committed"
        );
    }

    #[tokio::test]
    async fn identity_headers_replace_the_clients_and_repeat_tokens_come_from_the_cache() {
        let f = fixture();
        let state = PolicyState::default();
        let a = build(
            config(
                JwtMode::Strict,
                vec![provider("idp", inline(&[&f.rsa.jwk]))],
            ),
            &state,
        );
        let t = rs(&claims());
        let first = bearer(&a, &t).await;
        assert!(first.authenticated(), "{:?}", first.outcome);
        let h = &first.parts.headers;
        assert!(!h.contains_key("authorization"), "the token is stripped");
        assert_eq!(h.get_all("x-user").iter().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(h.get_all("x-role").iter().collect::<Vec<_>>(), ["admin"]);
        assert!(
            !h.contains_key("x-email"),
            "an absent claim removes the client's header"
        );
        assert_eq!(a.cached_tokens(), 1);

        // Again: the same claims, shared, not verified again (verification
        // would make a new value).
        let second = bearer(&a, &t).await;
        assert!(second.authenticated());
        assert!(Arc::ptr_eq(
            first.claims.as_ref().unwrap(),
            second.claims.as_ref().unwrap()
        ));
        assert_eq!(second.parts.headers["x-user"], "alice");
        assert!(!second.parts.headers.contains_key("x-email"));
        assert_eq!(a.meta.allowed_count(), 2);

        // forwardToken keeps it; a query source is stripped from the target.
        let mut cfg = config(
            JwtMode::Strict,
            vec![provider("idp", inline(&[&f.rsa.jwk]))],
        );
        cfg.forward_token = true;
        let fwd = build(cfg, &state);
        let out = bearer(&fwd, &t).await;
        assert_eq!(out.parts.headers["authorization"], format!("Bearer {t}"));
        let mut cfg = config(
            JwtMode::Strict,
            vec![provider("idp", inline(&[&f.rsa.jwk]))],
        );
        cfg.sources
            .push(CredentialSource::Query("access_token".into()));
        let q = build(cfg, &state);
        let out = run(&q, &format!("/p?a=1&access_token={t}"), &[]).await;
        assert!(out.authenticated(), "{:?}", out.outcome);
        assert_eq!(out.parts.uri, "/p?a=1");
    }

    #[tokio::test]
    async fn modes_decide_about_missing_and_foreign_tokens_but_never_invalid_ones() {
        let f = fixture();
        let state = PolicyState::default();
        let mk = |mode| {
            build(
                config(mode, vec![provider("idp", inline(&[&f.rsa.jwk]))]),
                &state,
            )
        };
        let foreign = rs(&with(json!({"iss": "https://someone-else.test"})));
        let forged = token(
            json!({"alg": "RS256", "kid": "rsa-1"}),
            &claims(),
            &f.rsa2.key,
            Algorithm::RS256,
        );
        let no_token = [("x-user", "forged")];

        let strict = mk(JwtMode::Strict);
        let out = run(&strict, "/", &no_token).await;
        assert!(
            matches!(out.outcome, AuthnOutcome::Missing(ref r) if r.reason == Reason::JwtMissing)
        );
        // Should another section admit the request (`require: Any`).
        assert!(!out.parts.headers.contains_key("x-user"));
        assert_eq!(
            bearer(&strict, &foreign).await.rejection().reason,
            Reason::JwtClaims
        );

        let optional = mk(JwtMode::Optional);
        let out = run(&optional, "/", &no_token).await;
        assert!(matches!(out.outcome, AuthnOutcome::Anonymous));
        assert!(
            !out.parts.headers.contains_key("x-user"),
            "no identity to inject"
        );
        assert_eq!(
            bearer(&optional, &foreign).await.rejection().reason,
            Reason::JwtClaims
        );
        assert_eq!(
            bearer(&optional, &forged).await.rejection().reason,
            Reason::JwtSignature
        );

        let permissive = mk(JwtMode::Permissive);
        let out = bearer(&permissive, &foreign).await;
        assert!(
            matches!(out.outcome, AuthnOutcome::Anonymous),
            "{:?}",
            out.outcome
        );
        assert!(out.claims.is_none());
        assert_eq!(
            out.parts.headers["authorization"],
            format!("Bearer {foreign}"),
            "left for the upstream"
        );
        assert!(!out.parts.headers.contains_key("x-user"));
        assert_eq!(
            bearer(&permissive, &forged).await.rejection().reason,
            Reason::JwtSignature
        );
        assert_eq!(
            bearer(&permissive, "a.b").await.rejection().reason,
            Reason::JwtMalformed
        );
        assert!(bearer(&permissive, &rs(&claims())).await.authenticated());
    }

    #[tokio::test]
    async fn providers_are_chosen_by_issuer_then_kid() {
        let f = fixture();
        let state = PolicyState::default();
        let mut shared_foreign = f.rsa2.jwk.clone();
        shared_foreign["kid"] = json!("shared");
        let mut shared_real = f.rsa.jwk.clone();
        shared_real["kid"] = json!("shared");
        let mut p1 = provider("one", inline(&[&shared_foreign]));
        p1.claim_to_headers = vec![("sub".into(), HeaderName::from_static("x-one"))];
        let mut p2 = provider("two", inline(&[&shared_real]));
        p2.claim_to_headers = vec![("sub".into(), HeaderName::from_static("x-two"))];
        let mut p3 = provider("other", inline(&[&f.es256.jwk]));
        p3.issuer = "https://other.test".into();
        p3.claim_to_headers = vec![("sub".into(), HeaderName::from_static("x-other"))];
        let a = build(config(JwtMode::Strict, vec![p1, p2, p3]), &state);
        let forged = [
            ("x-one", "forged"),
            ("x-two", "forged"),
            ("x-other", "forged"),
        ];
        let send = |t: String| {
            let auth = format!("Bearer {t}");
            let a = &a;
            async move {
                let mut h: Vec<(&str, &str)> = forged.to_vec();
                h.push(("authorization", &auth));
                run(a, "/", &h).await
            }
        };

        // The kid is in both key sets of the issuer: the second one verifies.
        let t = token(
            json!({"alg": "RS256", "kid": "shared"}),
            &claims(),
            &f.rsa.key,
            Algorithm::RS256,
        );
        let out = send(t).await;
        assert!(out.authenticated(), "{:?}", out.outcome);
        assert_eq!(out.parts.headers["x-two"], "alice");
        assert!(!out.parts.headers.contains_key("x-one"));
        assert!(!out.parts.headers.contains_key("x-other"));

        let other = with(json!({"iss": "https://other.test"}));
        let t = token(
            json!({"alg": "ES256", "kid": "es256"}),
            &other,
            &f.es256.key,
            Algorithm::ES256,
        );
        let out = send(t).await;
        assert!(out.authenticated(), "{:?}", out.outcome);
        assert_eq!(out.parts.headers["x-other"], "alice");
        assert!(!out.parts.headers.contains_key("x-two"));

        // The issuer decides whose keys count: `shared` is not the other
        // issuer's key.
        let t = token(
            json!({"alg": "RS256", "kid": "shared"}),
            &other,
            &f.rsa.key,
            Algorithm::RS256,
        );
        assert_eq!(send(t).await.rejection().message, "unknown signing key");
    }

    #[test]
    fn cache_entries_end_at_exp_and_within_the_max_ttl() {
        let now = Instant::now();
        let unix = Duration::from_secs(1_700_000_000);
        let at = |exp: Value| cache_expiry(&json!({ "exp": exp }), unix, now);
        assert_eq!(
            at(json!(1_700_000_100)),
            Some(now + Duration::from_secs(100))
        );
        assert_eq!(
            at(json!(1_700_000_000.5)),
            Some(now + Duration::from_millis(500))
        );
        assert_eq!(at(json!(1_800_000_000u64)), Some(now + TOKEN_CACHE_MAX_TTL));
        assert_eq!(at(json!(1_700_000_000)), None);
        assert_eq!(at(json!(1_600_000_000)), None);
        assert_eq!(at(json!("1800000000")), None);
    }

    #[test]
    fn claim_values_as_headers() {
        let c = json!({"s": "a", "n": 5, "b": true, "arr": ["x", 2], "o": {"k": "v"},
            "nul": null, "bad": "a\nb", "deep": {"a": {"b": "c"}}, "dotted.name": "lit"});
        let get = |p: &str| claim(&c, p).and_then(header_value);
        assert_eq!(get("s").unwrap(), "a");
        assert_eq!(get("n").unwrap(), "5");
        assert_eq!(get("b").unwrap(), "true");
        assert_eq!(get("arr").unwrap(), "x,2");
        assert_eq!(get("o").unwrap(), "{\"k\":\"v\"}");
        assert_eq!(get("deep.a.b").unwrap(), "c");
        assert_eq!(get("dotted.name").unwrap(), "lit");
        assert!(get("nul").is_none());
        assert!(get("bad").is_none(), "no header splitting");
        assert!(get("missing.x").is_none());
        assert_eq!(
            challenge("a\"b.example", Some("token expired")),
            "Bearer realm=\"ab.example\", error=\"invalid_token\", error_description=\"token expired\""
        );
    }

    // --- Remote key sets, against a local HTTPS IdP ---

    #[tokio::test]
    async fn unknown_kid_refetches_once_then_401() {
        let f = fixture();
        let idp = Idp::start(jwks(&[&f.rsa.jwk])).await;
        let state = PolicyState::default();
        let a = build(
            config(JwtMode::Strict, vec![provider("idp", remote(&idp))]),
            &state,
        );
        assert_eq!(
            idp.hits(),
            0,
            "no runtime in the state: nothing in the background"
        );
        let unavailable = a.unavailable();
        assert_eq!(unavailable.len(), 1);
        assert!(
            unavailable[0].contains("first fetch pending"),
            "{unavailable:?}"
        );
        assert!(warm_up(&state, Duration::from_secs(30)).await.is_empty());
        assert!(a.unavailable().is_empty());
        assert_eq!(idp.hits(), 1);
        assert!(bearer(&a, &rs(&claims())).await.authenticated());

        let unknown = |kid: &str| {
            token(
                json!({"alg": "RS256", "kid": kid}),
                &claims(),
                &f.rsa2.key,
                Algorithm::RS256,
            )
        };
        let out = bearer(&a, &unknown("k-new")).await;
        assert_eq!(out.rejection().reason, Reason::JwtSignature);
        assert_eq!(out.rejection().message, "unknown signing key");
        assert_eq!(idp.hits(), 2, "one refetch");
        let out = bearer(&a, &unknown("k-other")).await;
        assert_eq!(out.rejection().status, StatusCode::UNAUTHORIZED);
        assert_eq!(idp.hits(), 2, "rate-limited: no second refetch");
        // A known kid with a bad signature never refetches.
        let out = bearer(&a, &unknown("rsa-1")).await;
        assert_eq!(out.rejection().message, "invalid signature");
        assert_eq!(idp.hits(), 2);
    }

    #[tokio::test]
    async fn rotated_keys_are_picked_up_without_restart_in_a_single_fetch() {
        let f = fixture();
        let idp = Idp::start(jwks(&[&f.rsa.jwk])).await;
        let state = PolicyState::default();
        let a = build(
            config(JwtMode::Strict, vec![provider("idp", remote(&idp))]),
            &state,
        );
        warm_up(&state, Duration::from_secs(30)).await;
        assert_eq!(idp.hits(), 1);
        // The IdP rotates: rsa-2 replaces rsa-1.
        idp.set_jwks(jwks(&[&f.rsa2.jwk]));
        let tokens: Vec<String> = (0..16)
            .map(|i| {
                token(
                    json!({"alg": "RS256", "kid": "rsa-2"}),
                    &with(json!({"jti": i})),
                    &f.rsa2.key,
                    Algorithm::RS256,
                )
            })
            .collect();
        let outs = futures::future::join_all(tokens.iter().map(|t| bearer(&a, t))).await;
        for (i, out) in outs.iter().enumerate() {
            assert!(out.authenticated(), "request {i}: {:?}", out.outcome);
        }
        assert_eq!(
            idp.hits(),
            2,
            "16 concurrent requests for the new kid: one fetch"
        );
    }

    #[tokio::test]
    async fn idp_down_keeps_cached_keys_and_an_unknown_kid_gets_401() {
        let f = fixture();
        let idp = Idp::start(jwks(&[&f.rsa.jwk])).await;
        let state = PolicyState::default();
        let a = build(
            config(JwtMode::Strict, vec![provider("idp", remote(&idp))]),
            &state,
        );
        warm_up(&state, Duration::from_secs(30)).await;
        idp.set_down(true);
        // A token not seen before: verified with the cached keys.
        assert!(bearer(&a, &rs(&with(json!({"jti": "new"}))))
            .await
            .authenticated());
        let t = token(
            json!({"alg": "RS256", "kid": "k-new"}),
            &claims(),
            &f.rsa2.key,
            Algorithm::RS256,
        );
        let out = bearer(&a, &t).await;
        assert_eq!(out.rejection().reason, Reason::JwtSignature);
        assert_eq!(out.rejection().status, StatusCode::UNAUTHORIZED);
        let set = &a.key_sets()[0];
        assert_eq!(set.fetch_count(), 2, "the refetch was tried");
        assert!(set.last_error().is_some());
        assert!(set.is_loaded() && a.unavailable().is_empty());
        assert!(bearer(&a, &rs(&claims())).await.authenticated());
    }

    #[tokio::test]
    async fn a_jwks_never_loaded_fails_closed_with_503_until_the_idp_answers() {
        let f = fixture();
        let idp = Idp::start(jwks(&[&f.rsa.jwk])).await;
        idp.set_down(true);
        let state = PolicyState::with_runtime(tokio::runtime::Handle::current());
        let a = build(
            config(JwtMode::Strict, vec![provider("idp", remote(&idp))]),
            &state,
        );
        let unavailable = warm_up(&state, Duration::from_secs(30)).await;
        assert_eq!(unavailable.len(), 1, "{unavailable:?}");
        assert!(
            unavailable[0].contains("jwt provider idp"),
            "{unavailable:?}"
        );
        assert_eq!(a.unavailable(), unavailable);
        let out = bearer(&a, &rs(&claims())).await;
        let r = out.rejection();
        assert!(matches!(out.outcome, AuthnOutcome::Failed(_)));
        assert_eq!(
            (r.reason, r.status),
            (Reason::PolicyUnavailable, StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(!r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert!(out.claims.is_none());

        // The background refresh retries (1 s, 2 s, ...): the IdP coming
        // back is picked up without a reload. Generous bound.
        idp.set_down(false);
        let set = a.key_sets()[0].clone();
        tokio::time::timeout(Duration::from_secs(60), async {
            while !set.is_loaded() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the key set loads once the IdP answers");
        assert!(bearer(&a, &rs(&claims())).await.authenticated());
        assert!(a.unavailable().is_empty());
    }

    #[tokio::test]
    async fn a_reload_reuses_keys_and_tokens_and_a_changed_spec_refetches() {
        let f = fixture();
        let idp = Idp::start(jwks(&[&f.rsa.jwk])).await;
        let state = PolicyState::with_runtime(tokio::runtime::Handle::current());
        let cfg = config(JwtMode::Strict, vec![provider("idp", remote(&idp))]);
        let a1 = build(cfg.clone(), &state);
        assert!(warm_up(&state, Duration::from_secs(30)).await.is_empty());
        assert_eq!(idp.hits(), 1);
        let t = rs(&claims());
        let c1 = bearer(&a1, &t).await.claims.unwrap();

        // Reload with the policy unchanged: zero fetches, same state.
        let a2 = build(cfg.clone(), &state);
        assert!(warm_up(&state, Duration::from_secs(30)).await.is_empty());
        assert_eq!(
            idp.hits(),
            1,
            "an unchanged policy does not refetch its JWKS"
        );
        assert!(Arc::ptr_eq(&a1.key_sets()[0], &a2.key_sets()[0]));
        let c2 = bearer(&a2, &t).await.claims.unwrap();
        assert!(Arc::ptr_eq(&c1, &c2), "the verified-token cache survived");
        assert_eq!(state.len(), 2, "one key set, one token cache");

        // A changed spec: a new key set, fetched once, and a fresh cache.
        let mut changed = cfg.clone();
        if let KeySource::Remote { cache_duration, .. } = &mut changed.providers[0].keys {
            *cache_duration = Duration::from_secs(1800);
        }
        let a3 = build(changed, &state);
        assert!(warm_up(&state, Duration::from_secs(30)).await.is_empty());
        assert_eq!(idp.hits(), 2);
        assert!(!Arc::ptr_eq(&a1.key_sets()[0], &a3.key_sets()[0]));
        let c3 = bearer(&a3, &t).await.claims.unwrap();
        assert!(!Arc::ptr_eq(&c1, &c3));
        assert_eq!(state.len(), 2, "the old key set and cache left the store");

        // Only claim mapping changed: keys reused, token cache fresh.
        let mut claims_changed = cfg.clone();
        claims_changed.providers[0].claim_to_headers.pop();
        if let KeySource::Remote { cache_duration, .. } = &mut claims_changed.providers[0].keys {
            *cache_duration = Duration::from_secs(1800);
        }
        let a4 = build(claims_changed, &state);
        warm_up(&state, Duration::from_secs(30)).await;
        assert_eq!(idp.hits(), 2);
        assert!(Arc::ptr_eq(&a3.key_sets()[0], &a4.key_sets()[0]));
        assert_eq!(a4.cached_tokens(), 0);
    }
}
