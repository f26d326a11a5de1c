//! `jwt`: bearer tokens verified against each provider's JWKS.
//!
//! (Interface in place; verification is being implemented — until then the
//! section fails closed: every request it guards is refused.)
use std::{sync::Arc, time::Duration};

use http::{request::Parts, HeaderName, Uri};

use super::{
    context::{AuthnOutcome, Edits},
    credential::CredentialSource,
    state::Compile,
    PolicyId, Reason, Rejection, RequestCtx, SectionMeta,
};

/// Whether a token must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    /// JOSE names (`RS256`, `ES256`, `EdDSA`, `HS256`, ...); empty: every
    /// asymmetric algorithm.
    pub algorithms: Vec<String>,
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

/// A compiled `jwt` section.
#[derive(Debug)]
pub struct JwtAuth {
    pub config: JwtConfig,
    pub meta: Arc<SectionMeta>,
}

impl JwtAuth {
    /// Compiles the section. Remote key sets and the verified-token cache
    /// come from `state`, keyed by `policy`, so they survive reloads.
    pub fn build(
        config: JwtConfig,
        _policy: &PolicyId,
        _state: &Compile,
        meta: Arc<SectionMeta>,
    ) -> Result<Self, String> {
        Ok(Self { config, meta })
    }

    pub async fn authenticate(
        &self,
        _ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
        _edits: &mut Edits,
    ) -> AuthnOutcome {
        self.meta.denied(Reason::PolicyUnavailable);
        AuthnOutcome::Failed(
            Rejection::new(
                Reason::PolicyUnavailable,
                "JWT verification is not available",
            )
            .by(&self.meta),
        )
    }
}
