//! The transcribed upstream cases (`tests/conformance/cases/*.yaml`); the
//! schema is documented in that directory's README.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Deserialize;

/// One case file: one upstream test (or one part of it).
#[derive(Debug, Clone, Deserialize)]
pub struct TestFile {
    /// Runner id: the file name without `.yaml` (unique, unlike `name`).
    #[serde(skip)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub part: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub provisional: bool,
    #[serde(default)]
    pub manifests: Vec<String>,
    #[serde(default = "yes")]
    pub runnable: bool,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub gateways: Vec<GatewayRef>,
    /// Status assertions, evaluated by `status.rs` against the agent's `/status`.
    #[serde(default)]
    pub status: serde_yaml::Value,
    #[serde(default)]
    pub cases: Vec<Case>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Upstream returns at once, without assertions, when the implementation
    /// claims this feature; the runner then reports the test skipped.
    #[serde(default)]
    pub returns_if_claimed: Option<String>,
    #[serde(default)]
    pub notes: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub listener: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Case {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub gateway: usize,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub request: Request,
    #[serde(default)]
    pub backend_response_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub expected_request: Option<ExpectedRequest>,
    #[serde(default)]
    pub response: ExpectedResponse,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub redirect: Option<Redirect>,
    #[serde(default)]
    pub mirrored_to: Vec<Mirror>,
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    #[serde(default)]
    pub check: Option<String>,
    /// Per-response check that the backend chosen matches a header a
    /// backendRef filter set (`httproute-request-header-modifier-backend-weights`).
    #[serde(default)]
    pub backend_header: Option<BackendHeader>,
    #[serde(default)]
    pub expect_error: Option<serde_yaml::Value>,
    #[serde(default)]
    pub websocket: Option<serde_yaml::Value>,
    /// A gRPC call to the echo service instead of an HTTP request
    /// (GATEWAY-GRPC tests).
    #[serde(default)]
    pub grpc: Option<GrpcCall>,
    /// Expected gRPC status of a `grpc` case, by upstream name
    /// (`Unimplemented`) [OK].
    #[serde(default)]
    pub grpc_status: Option<String>,
    /// A raw TCP or TLS exchange with the TCP echo backend instead of an
    /// HTTP request (GATEWAY-TLS, GATEWAY-TCP; `l4.rs`).
    #[serde(default)]
    pub tcp: Option<super::l4::TcpCase>,
    /// A TLS dial the Gateway must reject (GATEWAY-TLS; `l4.rs`).
    #[serde(default)]
    pub tls_rejected: Option<super::l4::TlsRejected>,
    #[serde(default)]
    pub notes: String,
}

/// One unary call of upstream's `GrpcEcho` service.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GrpcCall {
    /// `Echo`, `EchoTwo` or `EchoThree`.
    pub method: String,
    /// `:authority` [the Gateway address, `ip:port`].
    #[serde(default)]
    pub authority: Option<String>,
    /// Request metadata (sent with lower-cased keys, as gRPC clients do).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Request {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "root")]
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub ca_secret: Option<serde_yaml::Value>,
    #[serde(default)]
    pub client_cert_secret: Option<serde_yaml::Value>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub unfollow_redirect: bool,
}

fn root() -> String {
    "/".into()
}

impl Request {
    pub fn scheme(&self) -> &str {
        self.scheme.as_deref().unwrap_or("http")
    }
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("GET")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExpectedRequest {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub absent_headers: Vec<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub client_cert_secret: Option<serde_yaml::Value>,
    /// The certificate (PEM) of `client_cert_secret`, filled in by the runner
    /// from the generated certificates.
    #[serde(skip)]
    pub client_cert_pem: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExpectedResponse {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub statuses: Vec<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub header_alternatives: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub absent_headers: Vec<String>,
    #[serde(default)]
    pub ignore_whitespace: bool,
}

impl ExpectedResponse {
    /// Accepted status codes (default 200).
    pub fn accepted(&self) -> Vec<u16> {
        let mut v = self.statuses.clone();
        v.extend(self.status);
        if v.is_empty() {
            v.push(200);
        }
        v
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Redirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Mirror {
    pub backend: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub percent: Option<f64>,
}

/// Send the request `requests` times in a row; every echoed request must
/// carry exactly one `name` header, and the answering pod's name must start
/// with its value.
#[derive(Debug, Clone, Deserialize)]
pub struct BackendHeader {
    pub name: String,
    pub requests: usize,
}

/// A mid-test change followed by its own status checks and cases.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Step {
    #[serde(default)]
    pub delete: Option<ObjectSel>,
    #[serde(default)]
    pub patch: Option<Patch>,
    /// An object the test creates in code (upstream `MustApplyObjectsWithCleanup`).
    #[serde(default)]
    pub create: Option<serde_yaml::Value>,
    #[serde(default)]
    pub status: serde_yaml::Value,
    #[serde(default)]
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ObjectSel {
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Patch {
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub patch: serde_yaml::Value,
}

/// Loads every `*.yaml` case file of `dir`, sorted by id.
pub fn load_dir(dir: &Path) -> Result<Vec<TestFile>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_file(p)).collect()
}

pub fn load_file(path: &Path) -> Result<TestFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut t: TestFile =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    t.id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(t)
}

/// Number of status assertions in a `status` block (0 when empty).
pub fn status_assertions(status: &serde_yaml::Value) -> usize {
    let Some(m) = status.as_mapping() else {
        return 0;
    };
    m.values()
        .map(|v| match v {
            serde_yaml::Value::Sequence(s) => s.len(),
            serde_yaml::Value::Null => 0,
            _ => 1,
        })
        .sum()
}

impl TestFile {
    /// Status assertions of the test and its steps.
    pub fn status_count(&self) -> usize {
        status_assertions(&self.status)
            + self
                .steps
                .iter()
                .map(|s| status_assertions(&s.status))
                .sum::<usize>()
    }

    /// Request cases of the test and its steps.
    pub fn case_count(&self) -> usize {
        self.cases.len() + self.steps.iter().map(|s| s.cases.len()).sum::<usize>()
    }

    /// Upstream runs the cases of a test in parallel unless it says otherwise.
    pub fn sequential(&self) -> bool {
        let n = self.notes.to_ascii_lowercase();
        n.contains("sequential") || n.contains("not in parallel")
    }
}
