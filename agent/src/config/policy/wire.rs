//! Wire shape of `SluicePolicy` (`sluice.dev/v1alpha1`): the one definition
//! both the directory source parses and the CRD in
//! `deploy/daemonset/crds/sluice.dev_sluicepolicies.yaml` is generated from
//! (`cargo xtask gen-crd`; a test fails when the committed file differs).
//!
//! The schema only checks structure and a few cross-field rules the API
//! server can enforce early; the agent's conversion ([`super::convert`]) is
//! authoritative and reports every problem with its field path, the same
//! way for files and for API objects.
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares the policy sections once: they appear directly in the spec (as
/// GEP-713 Defaults) and again under `spec.override` (Overrides).
macro_rules! sections {
    ($(
        $(#[$attr:meta])*
        $field:ident : $ty:ty,
    )*) => {
        /// Desired state of a SluicePolicy. Sections given directly in the spec are
        /// defaults (a more specific policy's section wins); sections under
        /// `override` win over every more specific policy's.
        #[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        #[kube(
            group = "sluice.dev",
            version = "v1alpha1",
            kind = "SluicePolicy",
            namespaced,
            status = "SluicePolicyStatus",
            shortname = "spol",
            category = "sluice",
            label("app.kubernetes.io/name", "sluice"),
            // GEP-713 policy class: a Gateway-level policy applies to what the Gateway serves.
            label("gateway.networking.k8s.io/policy", "Inherited"),
            printcolumn = r#"{"name":"Target-Kind","type":"string","jsonPath":".spec.targetRefs[0].kind"}"#,
            printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRefs[0].name"}"#,
            printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
            doc = "SluicePolicy attaches API policy (authentication, authorization, IP filtering, request limits, rate limits and quotas, header transformation, CORS, response caching) to Gateways and HTTPRoutes in its own namespace (Gateway API policy attachment, GEP-713)."
        )]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        #[x_kube(validation = Rule::new("self.targetRefs.all(a, self.targetRefs.exists_one(b, a.kind == b.kind && a.name == b.name && (has(a.sectionName) ? has(b.sectionName) && a.sectionName == b.sectionName : !has(b.sectionName))))").message("targetRefs must be distinct (kind, name, sectionName)"))]
        pub struct SluicePolicySpec {
            /// Objects in the policy's namespace the policy applies to: a Gateway
            /// (or one listener, by `sectionName`) or an HTTPRoute (or one named
            /// rule, by `sectionName`).
            #[schemars(length(min = 1, max = 16))]
            pub target_refs: Vec<TargetRef>,
            $(
                $(#[$attr])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Sections that override those of more specific policies (a Gateway's
            /// override wins over an HTTPRoute's settings).
            #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
            pub overrides: Option<Sections>,
        }

        /// Policy sections, as under `spec.override`.
        #[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct Sections {
            $(
                $(#[$attr])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl SluicePolicySpec {
            /// The default sections (those given directly in the spec).
            pub fn defaults(&self) -> Sections {
                Sections { $($field: self.$field.clone(),)* }
            }
        }
    };
}

sections! {
    /// JWT authentication (bearer tokens verified against JWKS).
    jwt: Jwt,
    /// API-key authentication with keys from Secrets.
    api_keys: ApiKeys,
    /// HTTP Basic authentication with an htpasswd file from a Secret.
    basic_auth: BasicAuth,
    /// External authorization service (the shape of Gateway API's ExternalAuth filter).
    ext_auth: ExtAuth,
    /// How several authentication sections combine.
    authentication: Authentication,
    /// Ordered allow/deny rules over the request and the authenticated identity.
    authorization: Authorization,
    /// Source CIDRs allowed; everything else gets 403 (and, on a whole Gateway, is dropped by XDP).
    #[schemars(length(max = 256))]
    ip_allow: Vec<String>,
    /// Source CIDRs refused with 403 (on a whole Gateway also dropped by XDP); wins over ipAllow.
    #[schemars(length(max = 256))]
    ip_deny: Vec<String>,
    /// Request size limits.
    limits: Limits,
    /// Request and response header changes, with values templated from the request and identity.
    transform: Transform,
    /// CORS, with the semantics of Gateway API's HTTPCORSFilter.
    cors: Cors,
    /// Rate limits per node (GCRA) and for the whole fleet (cluster store),
    /// quotas per client, and the XDP penalty box for abusive sources.
    rate_limit: RateLimit,
    /// The Gateway's client-side timeouts and limits, in place of the
    /// agent's defaults (only for targetRefs of kind Gateway without sectionName).
    connection: Connection,
    /// Which requests reach the access log (a share of them, or errors only).
    access_log: AccessLog,
    /// How a request's endpoint is chosen among a backend's endpoints
    /// (every backend of the governed rules).
    load_balancer: LoadBalancer,
    /// Per-backend limits on connections, pending requests, requests and
    /// retries in flight; over a limit the gateway answers 503 at once.
    circuit_breaker: CircuitBreaker,
    /// Passive health: endpoints that fail too often in a row leave the
    /// rotation for a while.
    outlier_detection: OutlierDetection,
    /// Active health: each endpoint is asked an HTTP path at an interval;
    /// unhealthy endpoints leave the rotation.
    health_check: HealthCheck,
    /// Shared HTTP response cache (RFC 9111) for the routes the policy governs.
    cache: Cache,
}

/// A policy target in the policy's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// `gateway.networking.k8s.io`.
    #[serde(default = "gateway_group")]
    #[schemars(length(max = 253))]
    pub group: String,
    /// `Gateway` or `HTTPRoute`.
    // The lengths bound the cost of the distinctness rule on `targetRefs`,
    // which the API server estimates before accepting the CRD.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A listener name (Gateway) or a rule name (HTTPRoute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

fn gateway_group() -> String {
    "gateway.networking.k8s.io".into()
}

/// `jwt`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Jwt {
    /// `Strict` (default): a valid token is required. `Optional`: requests
    /// without a token pass unauthenticated. `Permissive`: like Optional, and
    /// tokens of an issuer no provider names pass unauthenticated too. A token
    /// of a known issuer that fails verification is always 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Token issuers; a token is checked by the provider whose `issuer`
    /// equals its `iss` (then by `kid`).
    #[schemars(length(min = 1, max = 16))]
    pub providers: Vec<JwtProvider>,
    /// Where tokens are read from, in order; default `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Bounded so the API server's cost estimate of the per-item rule fits.
    #[schemars(length(min = 1, max = 8))]
    pub token_sources: Option<Vec<TokenSource>>,
    /// Keep the token on the upstream request (default: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_token: Option<bool>,
}

/// One token issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtProvider {
    /// Unique within the section; more specific policies replace a provider of the same name.
    pub name: String,
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values (string or array claim); empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Accepted `alg`s: RS256/384/512, PS256/384/512, ES256/384, EdDSA, and
    /// HS256/384/512 only with keys from a Secret. Default: every asymmetric one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Leeway for `exp` and `nbf` (Gateway API duration, default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<String>,
    /// The provider's keys.
    pub jwks: Jwks,
    /// Claims copied into upstream request headers (replacing any the client sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<ClaimToHeader>,
}

/// A JWKS, from exactly one place.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.inline), has(self.secretRef), has(self.configMapRef), has(self.remote)].filter(x, x).size() == 1").message("exactly one of inline, secretRef, configMapRef, remote"))]
pub struct Jwks {
    /// A JWKS JSON document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A Secret in the policy's namespace (key default `jwks.json`); the only
    /// place HMAC (`oct`) keys may come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
    /// A ConfigMap in the policy's namespace (key default `jwks.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
    /// Fetched over HTTPS (plain http only to loopback addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteJwks>,
}

/// A key of a Secret or ConfigMap in the policy's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A remote JWKS endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwks {
    pub uri: String,
    /// ConfigMaps (key `ca.crt`) with the CAs the endpoint's certificate must
    /// chain to; default: the platform's CA bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificate_refs: Vec<KeyRef>,
    /// How long fetched keys are used before a refresh (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<String>,
    /// Limit for one fetch (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Where a credential is read from: exactly one of header, cookie, queryParam.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.header), has(self.cookie), has(self.queryParam)].filter(x, x).size() == 1").message("exactly one of header, cookie, queryParam"))]
pub struct TokenSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
}

/// A request header, with an optional value prefix (e.g. `Bearer`, matched
/// case-insensitively and followed by a space).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderSource {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A claim copied into a request header.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Claim name; nested claims with dots (`realm.role`).
    pub claim: String,
    pub header: String,
}

/// `apiKeys`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeys {
    /// Secrets in the policy's namespace: each data key is a client id, its value that client's key.
    #[schemars(length(min = 1, max = 16))]
    pub secret_refs: Vec<NameRef>,
    /// Where the key is read from (default: header `x-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TokenSource>,
    /// Upstream header that receives the client id (replacing any the client sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_header: Option<String>,
    /// Keep the key on the upstream request (default: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_key: Option<bool>,
}

/// An object in the policy's namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameRef {
    pub name: String,
}

/// `basicAuth`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// A Secret in the policy's namespace holding an htpasswd file (key default `auth`;
    /// bcrypt entries; `{SHA}` entries are accepted with a warning).
    pub secret_ref: KeyRef,
    /// `realm` of the `WWW-Authenticate` challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Upstream header that receives the user name (replacing any the client sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_header: Option<String>,
    /// Keep the `Authorization` header on the upstream request (default: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_credentials: Option<bool>,
}

/// `extAuth`: Gateway API's `HTTPExternalAuthFilter` plus `timeout` and `failOpen`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuth {
    /// `HTTP` (only HTTP is implemented).
    pub protocol: String,
    /// The authorization Service.
    pub backend_ref: BackendRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAuthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_body: Option<ForwardBody>,
    /// Limit for the authorization call (default 2s); expiry answers 503 (or allows with failOpen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Allow requests when the service cannot be reached (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
}

// Unsigned fields carry an OpenAPI `format` Kubernetes knows (`int32`,
// `int64`): schemars' `uint16`/`uint32`/`uint64` make the API server warn on
// every apply. `minimum`/`maximum` still bound them.

/// A Service port (another namespace needs a ReferenceGrant).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[schemars(extend("format" = "int32"))]
    pub port: u16,
}

/// `extAuth.http`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAuthConfig {
    /// Prefix of the authorization request's path (the original path follows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Request headers sent to the service besides Host, Method, Path,
    /// Content-Length and Authorization (which always are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Headers of an allowing answer copied onto the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_response_headers: Vec<String>,
}

/// `extAuth.forwardBody`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardBody {
    /// Bytes of the request body buffered and sent to the service.
    #[schemars(extend("format" = "int32"))]
    pub max_size: u32,
}

/// `authentication`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    /// `All` (default): every authentication section must pass. `Any`: one suffices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<String>,
}

/// `authorization`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    /// `Allow` or `Deny` (default) when no rule matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<String>,
    /// Evaluated in order; the first rule whose every given condition holds decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub rules: Vec<AuthzRule>,
}

/// One authorization rule. Each given condition must hold; within a
/// condition, any listed value suffices.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzRule {
    /// Names let more specific policies replace a rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Allow` or `Deny`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Every listed claim must have one of its values (array claims and
    /// space-separated `scope` by containment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimMatch>,
    /// API-key client ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_key_clients: Vec<String>,
    /// Basic-auth user names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// The client's address (after `--trusted-proxies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "sourceCIDRs")]
    pub source_cidrs: Vec<String>,
    /// The caller's Kubernetes namespace (pod identity, as the eBPF admission uses it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_namespaces: Vec<String>,
}

/// A path condition, as in HTTPRoute matches.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub value: String,
}

/// A header condition, as in HTTPRoute matches.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub value: String,
}

/// A claim condition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimMatch {
    /// Claim name; nested claims with dots.
    pub name: String,
    #[schemars(length(min = 1))]
    pub values: Vec<String>,
}

/// `limits`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Larger request bodies get 413 (counted as they stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub max_request_body_bytes: Option<u64>,
    /// Requests whose header block (names, values, separators) is larger get 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_request_headers_bytes: Option<u32>,
}

/// `connection`: every field is optional; an absent one keeps the agent's
/// default (README "Limits and timeouts").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connection {
    /// Longest wait for a complete request head, and for a connection's first
    /// request (Gateway API duration, 1s to 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<String>,
    /// Longest a request body may go without a byte before 408 (1s to 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_idle_timeout: Option<String>,
    /// Upstream response timeout of routes without `timeouts` (1s to 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_response_timeout: Option<String>,
    /// Largest request head, request line and headers (1024 to 1048576): 431 beyond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_request_head_bytes: Option<u32>,
    /// Most header fields in a request (1 to 1000): 431 beyond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_request_headers: Option<u32>,
    /// Longest request target (256 to 1048576): 414 beyond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_uri_bytes: Option<u32>,
    /// HTTP/2 streams a client may have open at once on one connection (1 to 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub h2_max_concurrent_streams: Option<u32>,
    /// Open connections from one client address to the Gateway (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_connections_per_source: Option<u32>,
    /// Requests in flight through the Gateway, 503 beyond (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_requests_in_flight: Option<u32>,
    /// Whether `//` in a request path is merged into `/` before routing
    /// (default true; dot segments are always removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_slashes: Option<bool>,
    /// `%2F` and `%5C` in a request path: `Keep` (default: forwarded as sent),
    /// `Reject` (400) or `Unescape` (decoded before routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escaped_slashes: Option<String>,
}

/// `accessLog`: applies when the agent writes an access log (`--access-log`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLog {
    /// Percent of requests logged, 0 to 100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"), range(max = 100))]
    pub sample_percent: Option<u32>,
    /// Only answers with at least this status are logged (e.g. 400), 100 to 599.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"), range(min = 100, max = 599))]
    pub min_status: Option<u32>,
}

/// `transform`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transform {
    /// Changes to the request sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderTransform>,
    /// Changes to the response sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderTransform>,
}

/// Header changes: remove, then set, then add. Values may use `${...}`
/// variables: `claim.NAME`, `apiKey.client`, `basicAuth.user`,
/// `source.address`, `source.namespace`, `request.method`, `request.path`,
/// `request.host`, `request.header.NAME`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTransform {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header and its (templated) value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

/// `cors`: the fields of Gateway API's `HTTPCORSFilter`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Seconds (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_age: Option<u32>,
}

/// `rateLimit`. Every rule has a name, unique within the section; more
/// specific policies replace a rule of the same name. Rules are evaluated
/// local, cluster, quotas, in order; the first that refuses decides.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Response headers: `IETF` (default: `RateLimit-Policy` and `RateLimit`),
    /// `Legacy` (`RateLimit-Limit`, `-Remaining`, `-Reset`) or `Off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    /// Per-node limits (GCRA), enforced by each agent on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub local: Vec<LocalRateLimit>,
    /// One limit shared by every agent of the fleet, counted in the cluster
    /// store (Redis, agent flag `--redis-url`) in batches: no store round trip
    /// per request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub cluster: Vec<ClusterRateLimit>,
    /// Requests per client and UTC day or month, kept in the cluster store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub quotas: Vec<RateLimitQuota>,
}

/// A per-node rate limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimit {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Requests per `unit`.
    #[schemars(extend("format" = "int32"), range(min = 1))]
    pub requests: u32,
    /// `Second`, `Minute`, `Hour` or `Day`.
    pub unit: String,
    /// Requests allowed at once (default: `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"), range(min = 1))]
    pub burst: Option<u32>,
    /// What a bucket is per; default: one bucket for all requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// On a Gateway or listener, one bucket for every route (default: per route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// Count and log what would be refused, never refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,
    /// Drop sources refused too often at the NIC (XDP) or at accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<Penalty>,
}

/// A fleet-wide rate limit: fixed windows of `unit` counted in the cluster store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRateLimit {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Requests per `unit` for the whole fleet.
    #[schemars(extend("format" = "int64"), range(min = 1))]
    pub requests: u64,
    /// `Second`, `Minute`, `Hour` or `Day`.
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,
    /// While the cluster store is unreachable: `Open` (default; each agent
    /// enforces the limit on its own count) or `Closed` (503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<Penalty>,
}

/// A quota of requests per client and UTC day or month.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitQuota {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[schemars(extend("format" = "int64"), range(min = 1))]
    pub requests: u64,
    /// `Day` or `Month` (UTC calendar periods).
    pub period: String,
    /// Whose quota: exactly one of `apiKeyClient: true` or `claim`.
    pub key: QuotaKey,
    /// `Open` (default) or `Closed`, as for cluster rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<String>,
}

/// The client a quota is counted for.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaKey {
    /// The API-key client id (`apiKeys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_client: Option<bool>,
    /// A claim of the verified JWT (nested with dots), e.g. `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

/// The parts a rate-limit bucket is keyed by (all given parts together).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitKey {
    /// The client address (after `--trusted-proxies`), optionally as a prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddressKey>,
    /// A request header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A claim of the verified JWT (nested with dots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// The API-key client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_client: Option<bool>,
    /// The caller's Kubernetes namespace (pod identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<bool>,
    /// The request path (without the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<bool>,
}

/// Source addresses as prefixes: `{}` is the whole address.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceAddressKey {
    /// IPv4 prefix length (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"), range(min = 0, max = 32))]
    pub prefix_length: Option<u32>,
    /// IPv6 prefix length (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"), range(min = 0, max = 128))]
    pub prefix_length_v6: Option<u32>,
}

/// The penalty box: after `after` refusals within `within`, the source's
/// prefix is dropped for `block`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Penalty {
    #[schemars(extend("format" = "int32"), range(min = 1))]
    pub after: u32,
    /// Duration, e.g. `10s`.
    pub within: String,
    /// Duration, e.g. `5m` (at most 24h).
    pub block: String,
    /// IPv4 prefix blocked, `/32` (default) … `/8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// IPv6 prefix blocked, default `/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_v6: Option<String>,
    /// Authentication failures (401) on the governed routes count as refusals (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_auth_failure: Option<bool>,
}

/// `loadBalancer`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.type == 'ConsistentHash' ? has(self.consistentHash) : !has(self.consistentHash)").message("consistentHash is set exactly when type is ConsistentHash"))]
pub struct LoadBalancer {
    /// `RoundRobin` (default), `LeastRequest` (the less loaded of two
    /// random endpoints) or `ConsistentHash` (session affinity).
    #[serde(rename = "type")]
    #[schemars(length(max = 32))]
    pub kind: String,
    /// What `ConsistentHash` hashes: exactly one of the fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
}

/// The key of a consistent hash: exactly one of `header`, `cookie`,
/// `sourceAddress`. Requests without the header or cookie are balanced
/// round robin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    /// A request header's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub header: Option<String>,
    /// A cookie's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub cookie: Option<String>,
    /// The client's address (the connection's peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<bool>,
}

/// `circuitBreaker`: limits per backend and agent (each defaults to 1024).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Connections open to the backend's endpoints; a request that needs a
    /// new connection over it gets 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_connections: Option<u32>,
    /// Requests waiting for a new connection to be established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_requests: Option<u32>,
    /// Retries in flight to the backend (a retry budget); past it a failed
    /// attempt is not retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub max_retries: Option<u32>,
}

/// `outlierDetection`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// 5xx answers (or timeouts) in a row that eject an endpoint (default 5; 0: never).
    #[serde(
        default,
        rename = "consecutive5xx",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("format" = "int32"))]
    pub consecutive_5xx: Option<u32>,
    /// Failed connection attempts in a row that eject an endpoint (default 5; 0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub consecutive_connect_failures: Option<u32>,
    /// Time back in the rotation that takes one off the ejection multiplier (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Ejection time, multiplied by the number of recent ejections (default 30s, at most 300s in all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Percent of a backend's endpoints that may be ejected at once (default 10; at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"), range(min = 0, max = 100))]
    pub max_ejection_percent: Option<u32>,
}

/// `healthCheck`: active HTTP/1.1 checks of every endpoint (plain HTTP,
/// also for backends reached over TLS).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Path (and query) of the `GET` request, e.g. `/healthz`.
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// Time between two checks of an endpoint (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Time a check may take (default 1s; at most the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Successes in a row that bring an unhealthy endpoint back (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"), range(min = 1))]
    pub healthy_threshold: Option<u32>,
    /// Failures in a row that take an endpoint out (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"), range(min = 1))]
    pub unhealthy_threshold: Option<u32>,
    /// Statuses that pass (default `[200]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // Kubernetes knows int32/int64 formats only (uint16 draws an API
    // server warning, which the deploy validation refuses).
    #[schemars(schema_with = "status_list")]
    pub expected_statuses: Vec<u32>,
}

/// The schema of `expectedStatuses`: up to 32 HTTP statuses.
fn status_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 32,
        "items": {"type": "integer", "format": "int32", "minimum": 100, "maximum": 599}
    })
}

/// Gateway API `PolicyStatus`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SluicePolicyStatus {
    /// One entry per Gateway the policy takes effect through (at most 16).
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// One `status.ancestors` entry.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: AncestorRef,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// A Gateway API `ParentReference`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// A `metav1.Condition`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

/// `cache`: a shared HTTP cache with the RFC 9111 rules (`Cache-Control`,
/// `Expires`, `Vary`, revalidation, `stale-while-revalidate`,
/// `stale-if-error`). Only GET and HEAD are answered from it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cache {
    /// Bytes the policy's cache may hold in all (bodies, headers, keys),
    /// shared by every route the policy governs; least recently used
    /// entries are evicted first. Default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"), range(min = 1))]
    pub max_bytes: Option<u64>,
    /// Largest entry stored; a larger response streams through uncached.
    /// Default 1 MiB; at most `maxBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"), range(min = 1))]
    pub max_entry_bytes: Option<u64>,
    /// Freshness given to responses for which the origin gives none (no
    /// `max-age`, `s-maxage` or `Expires`). Unset: such responses are
    /// stored only when they carry a validator, and revalidated on every use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub default_ttl: Option<String>,
    /// How long concurrent misses of one resource wait for the one request
    /// that went upstream before going themselves. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub coalesce_wait: Option<String>,
}
