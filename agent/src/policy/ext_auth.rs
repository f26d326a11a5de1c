//! `extAuth` (and the HTTPRoute `ExternalAuth` filter): an HTTP call to an
//! authorization service decides.
//!
//! (Interface in place; the call is being implemented — until then the
//! section fails closed.)
use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{request::Parts, HeaderName};

use super::{
    context::{AuthnOutcome, Edits},
    Body, Reason, Rejection, RequestCtx, SectionMeta,
};

/// Everything an external authorization section is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthConfig {
    /// Ready endpoints of the service port (empty: unavailable).
    pub endpoints: Vec<SocketAddr>,
    /// Host of the authorization requests (`name.namespace`).
    pub authority: String,
    /// Path prefix; the original path follows it.
    pub path_prefix: String,
    /// Request headers sent along (besides the fixed ones).
    pub allowed_headers: Vec<HeaderName>,
    /// Headers of an allowing answer copied onto the upstream request.
    pub allowed_response_headers: Vec<HeaderName>,
    /// Body bytes buffered and sent along; 0: none.
    pub forward_body: u32,
    pub timeout: Duration,
    pub fail_open: bool,
}

/// A compiled external authorization section.
#[derive(Debug)]
pub struct ExtAuth {
    pub config: ExtAuthConfig,
    pub meta: Arc<SectionMeta>,
}

impl ExtAuth {
    pub fn new(config: ExtAuthConfig, meta: Arc<SectionMeta>) -> Self {
        Self { config, meta }
    }

    pub async fn authenticate(
        &self,
        _ctx: &mut RequestCtx<'_>,
        _parts: &Parts,
        _body: &mut Body,
        _edits: &mut Edits,
    ) -> AuthnOutcome {
        self.meta.denied(Reason::ExtAuthUnavailable);
        AuthnOutcome::Failed(
            Rejection::new(
                Reason::ExtAuthUnavailable,
                "external authorization is not available",
            )
            .by(&self.meta),
        )
    }
}
