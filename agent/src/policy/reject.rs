//! One typed rejection for every answer the gateway makes itself instead of
//! the backend: policy denials, routing failures and upstream failures. The
//! same value decides the response (status, headers, body) and the `reason`
//! label of the request metrics, so a JWT 401 never looks like an upstream
//! error and a 503 from a breaker never looks like a 503 from a backend.
use std::borrow::Cow;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::{full, Body, SectionMeta};
use std::sync::Arc;

/// Why the gateway answered itself. The label is a Prometheus label value
/// (`reason`), stable and low-cardinality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Routing.
    /// The connection's shard is not in the snapshot (a Gateway just removed).
    NoGateway,
    /// No Host / `:authority`.
    MissingHost,
    /// The request target is longer than the edge limit (`414`).
    UriTooLong,
    /// No listener or route for the request.
    NoRoute,
    /// The Host belongs to another TLS listener than the SNI's (421).
    Misdirected,
    /// The request cannot be forwarded as received.
    BadRequest,
    /// The rule has no backends (Gateway API: 500).
    NoBackends,
    /// The backend reference does not resolve (Gateway API: 500).
    BackendNotResolvable,
    /// The backend has no ready endpoints.
    NoReadyEndpoints,
    /// The route's request timeout expired.
    RequestTimeout,
    /// The client stopped sending the request body (`408`).
    RequestBodyTimeout,
    /// The shard has its limit of requests in flight (`503`).
    Overloaded,
    /// The backend did not answer within the backend request timeout.
    UpstreamTimeout,
    /// The backend could not be connected to.
    UpstreamConnect,
    /// The exchange with the backend failed after connecting.
    UpstreamError,
    // Policy that cannot be applied: fail closed.
    /// An attached security policy is invalid or references something missing (500).
    PolicyInvalid,
    /// An attached security policy is not usable yet, e.g. its JWKS could
    /// never be fetched (503).
    PolicyUnavailable,
    // Pre-route checks.
    /// The client address is denied (ipAllow / ipDeny).
    SourceDenied,
    /// The request header block exceeds `maxRequestHeadersBytes` (431).
    HeadersTooLarge,
    /// The request body exceeds `maxRequestBodyBytes` (413).
    BodyTooLarge,
    // Authentication.
    /// No bearer token where one is required.
    JwtMissing,
    /// A token that is not a well-formed JWT, or too large to parse.
    JwtMalformed,
    /// Signature did not verify, wrong algorithm, unknown key.
    JwtSignature,
    /// `exp` passed, `nbf` not reached, or missing `exp`.
    JwtExpired,
    /// Wrong `iss`, `aud` or other claims.
    JwtClaims,
    /// No API key.
    ApiKeyMissing,
    /// An API key that matches no client.
    ApiKeyInvalid,
    /// No Basic credentials.
    BasicAuthMissing,
    /// Wrong user name or password.
    BasicAuthInvalid,
    /// The external authorization service said no.
    ExtAuthDenied,
    /// The external authorization service could not be asked (fail closed).
    ExtAuthUnavailable,
    // Authorization.
    /// Authenticated (or anonymous) but not allowed by the rules.
    Forbidden,
    // Rate limits.
    /// A local or cluster rate limit refused the request (429).
    RateLimited,
    /// The client's quota for the period is used up (429).
    QuotaExceeded,
    /// A `Closed` cluster rule or quota cannot reach the cluster store
    /// (503); as an allow reason: served while the store was unreachable
    /// (`Open`).
    RateLimitUnavailable,
    /// An allow reason only: a `shadow` rule would have refused.
    RateLimitShadow,
    // Resilience (circuitBreaker).
    /// A `circuitBreaker` limit of the backend is reached (503 at once).
    UpstreamOverflow,
}

impl Reason {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        use Reason::*;
        match self {
            NoGateway => "no_gateway",
            MissingHost => "missing_host",
            UriTooLong => "uri_too_long",
            NoRoute => "no_route",
            Misdirected => "misdirected",
            BadRequest => "bad_request",
            NoBackends => "no_backends",
            BackendNotResolvable => "backend_not_resolvable",
            NoReadyEndpoints => "no_ready_endpoints",
            RequestTimeout => "request_timeout",
            RequestBodyTimeout => "request_body_timeout",
            Overloaded => "overloaded",
            UpstreamTimeout => "upstream_timeout",
            UpstreamConnect => "upstream_connect_failure",
            UpstreamError => "upstream_error",
            PolicyInvalid => "policy_invalid",
            PolicyUnavailable => "policy_unavailable",
            SourceDenied => "source_denied",
            HeadersTooLarge => "headers_too_large",
            BodyTooLarge => "body_too_large",
            JwtMissing => "jwt_missing",
            JwtMalformed => "jwt_malformed",
            JwtSignature => "jwt_signature",
            JwtExpired => "jwt_expired",
            JwtClaims => "jwt_claims",
            ApiKeyMissing => "api_key_missing",
            ApiKeyInvalid => "api_key_invalid",
            BasicAuthMissing => "basic_auth_missing",
            BasicAuthInvalid => "basic_auth_invalid",
            ExtAuthDenied => "ext_auth_denied",
            ExtAuthUnavailable => "ext_auth_unavailable",
            Forbidden => "forbidden",
            RateLimited => "rate_limited",
            QuotaExceeded => "quota_exceeded",
            RateLimitUnavailable => "rate_limit_unavailable",
            RateLimitShadow => "rate_limited_shadow",
            UpstreamOverflow => "upstream_overflow",
        }
    }

    /// The status a rejection for this reason answers with (some callers
    /// override it, e.g. an external authorization service's own status).
    pub fn status(self) -> StatusCode {
        use Reason::*;
        match self {
            NoRoute | NoGateway => StatusCode::NOT_FOUND,
            MissingHost | BadRequest => StatusCode::BAD_REQUEST,
            Misdirected => StatusCode::MISDIRECTED_REQUEST,
            UriTooLong => StatusCode::URI_TOO_LONG,
            RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            NoBackends | BackendNotResolvable | PolicyInvalid => StatusCode::INTERNAL_SERVER_ERROR,
            NoReadyEndpoints | UpstreamConnect | PolicyUnavailable | ExtAuthUnavailable
            | Overloaded | RateLimitUnavailable | UpstreamOverflow => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RateLimited | QuotaExceeded | RateLimitShadow => StatusCode::TOO_MANY_REQUESTS,
            RequestTimeout | UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError => StatusCode::BAD_GATEWAY,
            SourceDenied | Forbidden | ExtAuthDenied => StatusCode::FORBIDDEN,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            JwtMissing | JwtMalformed | JwtSignature | JwtExpired | JwtClaims | ApiKeyMissing
            | ApiKeyInvalid | BasicAuthMissing | BasicAuthInvalid => StatusCode::UNAUTHORIZED,
        }
    }

    /// Whether this is a policy decision (counted in
    /// `sluice_policy_decisions_total`) rather than a routing or upstream failure.
    pub fn is_policy(self) -> bool {
        use Reason::*;
        !matches!(
            self,
            NoGateway
                | MissingHost
                | UriTooLong
                | RequestBodyTimeout
                | Overloaded
                | NoRoute
                | Misdirected
                | BadRequest
                | NoBackends
                | BackendNotResolvable
                | NoReadyEndpoints
                | RequestTimeout
                | UpstreamTimeout
                | UpstreamConnect
                | UpstreamError
        )
    }
}

/// An answer the gateway makes instead of forwarding (or instead of the
/// backend's answer). Small (headers and body are boxed, rarely present):
/// it travels in every `Result` of the request path.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: Reason,
    pub status: StatusCode,
    /// Human-readable detail for the body and the logs.
    pub message: Cow<'static, str>,
    /// The policy section that decided, when it was a policy.
    pub section: Option<Arc<SectionMeta>>,
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Clone, Default)]
struct Extra {
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, ...).
    headers: HeaderMap,
    /// The response body; `None`: `message` as plain text.
    body: Option<Bytes>,
}

static NO_HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);

impl Rejection {
    /// A rejection with the reason's status and a plain-text message.
    pub fn new(reason: Reason, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason,
            status: reason.status(),
            message: message.into(),
            section: None,
            extra: None,
        }
    }

    /// The extra response headers.
    pub fn headers(&self) -> &HeaderMap {
        self.extra.as_ref().map_or(&NO_HEADERS, |e| &e.headers)
    }

    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.extra.get_or_insert_with(Box::default).headers
    }

    /// Answers with this body instead of the message (e.g. what an
    /// external authorization service sent).
    pub fn with_body(mut self, body: Bytes) -> Self {
        self.extra.get_or_insert_with(Box::default).body = Some(body);
        self
    }

    /// The section that decided (for the decision metric and logs).
    pub fn by(mut self, section: &Arc<SectionMeta>) -> Self {
        self.section = Some(section.clone());
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers_mut().append(name, value);
        self
    }

    /// The response sent to the client.
    pub fn into_response(self) -> Response<Body> {
        let Extra { headers, body } = self.extra.map(|e| *e).unwrap_or_default();
        let body = match body {
            Some(b) => full(b),
            None => {
                let mut text = String::with_capacity(self.message.len() + 1);
                text.push_str(&self.message);
                text.push('\n');
                full(text)
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        let explicit_type = headers.contains_key(header::CONTENT_TYPE);
        *r.headers_mut() = headers;
        if !explicit_type {
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        r
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status,
            self.reason.label(),
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn stays_small() {
        assert!(
            std::mem::size_of::<Rejection>() <= 64,
            "{}",
            std::mem::size_of::<Rejection>()
        );
    }

    #[tokio::test]
    async fn response_carries_status_headers_and_message() {
        let r = Rejection::new(Reason::JwtMissing, "bearer token required").with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"api\""),
        );
        let resp = r.into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\""
        );
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"bearer token required\n");
    }

    #[test]
    fn labels_are_distinct_and_statuses_sane() {
        use Reason::*;
        let all = [
            NoGateway,
            MissingHost,
            NoRoute,
            Misdirected,
            BadRequest,
            NoBackends,
            BackendNotResolvable,
            NoReadyEndpoints,
            RequestTimeout,
            UpstreamTimeout,
            UpstreamConnect,
            UpstreamError,
            PolicyInvalid,
            PolicyUnavailable,
            SourceDenied,
            HeadersTooLarge,
            BodyTooLarge,
            JwtMissing,
            JwtMalformed,
            JwtSignature,
            JwtExpired,
            JwtClaims,
            ApiKeyMissing,
            ApiKeyInvalid,
            BasicAuthMissing,
            BasicAuthInvalid,
            ExtAuthDenied,
            ExtAuthUnavailable,
            Forbidden,
            RateLimited,
            QuotaExceeded,
            RateLimitUnavailable,
            RateLimitShadow,
        ];
        let labels: std::collections::BTreeSet<_> = all.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), all.len());
        for r in all {
            assert!(r.status().is_client_error() || r.status().is_server_error());
            assert!(r
                .label()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert!(JwtMissing.is_policy() && !UpstreamConnect.is_policy());
    }
}
