//! GRPCRoute over real gRPC: a tonic client calls through the real app on
//! loopback to tonic backends (HTTP/2 prior knowledge, chosen because the
//! route is a GRPCRoute: the Services carry no `appProtocol`).
mod common;

use std::collections::BTreeMap;

use common::{grpc::*, *};
use http::{Method, StatusCode};
use tonic::Code;

/// Backends a, b, c, d, w1, w2, w0 in `infra`, a Service whose endpoint
/// is a closed port, the Gateway and `routes`.
async fn setup(routes: &str) -> (sluice::app::App, u16, Recorded) {
    let port = free_port();
    let dir = config_dir();
    let mut text = gateway_yaml(port);
    for name in ["a", "b", "c", "d", "w1", "w2", "w0"] {
        text.push_str(&service_yaml("infra", name, grpc_backend(name).await));
    }
    let (mirror, mirrored) = grpc_recording_backend("m").await;
    text.push_str(&service_yaml("infra", "m", mirror));
    // Nothing listens there: taken and let go.
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    text.push_str(&service_yaml("infra", "dead", dead));
    text.push_str("---\n");
    text.push_str(routes);
    write_config(&dir, "config.yaml", &text);
    (start(&dir).await, port, mirrored)
}

const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: echo.Echo, method: Say}}]
    backendRefs: [{name: a, port: 8080}]
  - matches: [{method: {service: echo.Echo}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x-added, value: by-gateway}], remove: [x-secret]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-answered, value: "yes"}]}
    backendRefs: [{name: b, port: 8080}]
  - matches: [{method: {type: RegularExpression, method: "Sh.*"}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 8080}}}]
    backendRefs: [{name: c, port: 8080}]
  - matches:
    - method: {service: echo.Echo, method: Say}
      headers: [{name: x-tier, value: gold}]
    backendRefs: [{name: d, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: weighted, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [weights.example.com]
  rules:
  - backendRefs:
    - {name: w1, port: 8080, weight: 1}
    - {name: w2, port: 8080, weight: 3}
    - {name: w0, port: 8080, weight: 0}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: dead, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [dead.example.com]
  rules: [{backendRefs: [{name: dead, port: 8080}]}]
"#;

#[tokio::test]
async fn routes_by_service_method_and_headers_with_the_grpc_precedence() {
    let (app, port, _) = setup(ROUTES).await;
    let mut c = GrpcClient::connect(port, "grpc.example.com").await;
    let r = c.ok("/echo.Echo/Say", &[]).await;
    assert_eq!(
        (r.backend.as_str(), r.path.as_str()),
        ("a", "/echo.Echo/Say")
    );
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    // Same service and method, one header more: that rule wins.
    assert_eq!(
        c.ok("/echo.Echo/Say", &[("x-tier", "gold")]).await.backend,
        "d"
    );
    assert_eq!(
        c.ok("/echo.Echo/Say", &[("x-tier", "silver")])
            .await
            .backend,
        "a"
    );
    // The service match outranks the method-only match.
    assert_eq!(c.ok("/echo.Echo/Shout", &[]).await.backend, "b");
    assert_eq!(c.ok("/other.Other/Shout", &[]).await.backend, "c");
    // The backend's own error status passes through untouched.
    let s = c.call("/echo.Echo/Say", "fail", &[]).await.unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "the backend said so")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unmatched_methods_are_unimplemented_in_a_trailers_only_answer() {
    let (app, port, _) = setup(ROUTES).await;
    let mut c = GrpcClient::connect(port, "grpc.example.com").await;
    let s = c.call("/other.Other/Ping", "hi", &[]).await.unwrap_err();
    // tonic maps a bare HTTP 404 to UNIMPLEMENTED too, but with a message
    // naming the HTTP status: this one is the gateway's grpc-message.
    assert_eq!((s.code(), s.message()), (Code::Unimplemented, "no route"));
    // A hostname no route has: the same.
    let mut other = GrpcClient::connect(port, "nothing.example.com").await;
    let s = other.call("/echo.Echo/Say", "hi", &[]).await.unwrap_err();
    assert_eq!((s.code(), s.message()), (Code::Unimplemented, "no route"));
    // Not a gRPC request: a plain 404 as before.
    let reply = TestClient::new(port)
        .send(Method::POST, "grpc.example.com", "/other.Other/Ping", &[])
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.headers.get("grpc-status").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn a_dead_backend_is_unavailable() {
    let (app, port, _) = setup(ROUTES).await;
    let mut c = GrpcClient::connect(port, "dead.example.com").await;
    let s = c.call("/echo.Echo/Say", "hi", &[]).await.unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (Code::Unavailable, "upstream unavailable")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn header_modifiers_apply_to_requests_and_responses() {
    let (app, port, _) = setup(ROUTES).await;
    let mut c = GrpcClient::connect(port, "grpc.example.com").await;
    let r = c
        .call("/echo.Echo/Shout", "hi", &[("x-secret", "s")])
        .await
        .expect("call");
    assert_eq!(
        r.metadata().get("x-answered").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    assert_eq!(
        r.metadata().get("x-backend").and_then(|v| v.to_str().ok()),
        Some("b")
    );
    let r = r.into_inner();
    assert_eq!(r.message, "hi");
    assert_eq!(r.header("x-added"), Some("by-gateway"));
    assert_eq!(r.header("x-secret"), None);
    // Only the rule with the filters modifies.
    let r = c.ok("/echo.Echo/Say", &[("x-secret", "s")]).await;
    assert_eq!(
        (r.header("x-added"), r.header("x-secret")),
        (None, Some("s"))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn weights_split_calls_and_weight_zero_gets_none() {
    let (app, port, _) = setup(ROUTES).await;
    let mut c = GrpcClient::connect(port, "weights.example.com").await;
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        *seen
            .entry(c.ok("/echo.Echo/Say", &[]).await.backend)
            .or_default() += 1;
    }
    assert_eq!(seen.get("w0"), None, "{seen:?}");
    let (w1, w2) = (seen["w1"], seen["w2"]);
    assert_eq!(w1 + w2, 40);
    assert!(w2 > w1 && w1 > 0, "{seen:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn status_reports_grpc_routes_and_listeners_count_them() {
    let kinds_only_http = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: http-only, namespace: infra}
spec:
  gatewayClassName: sluice
  addresses: [{value: 127.0.0.1}]
  listeners:
  - name: http
    port: PORT
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: HTTPRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: refused, namespace: infra}
spec:
  parentRefs: [{name: http-only}]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
---
# Cross-namespace backends: granted to GRPCRoutes of team-a, to HTTPRoutes
# (only) of team-b.
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: grpc-from-team-a, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: team-a}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: http-from-team-b, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team-b}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: granted, namespace: team-a}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [team-a.example.com]
  rules: [{backendRefs: [{name: a, namespace: infra, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: not-granted, namespace: team-b}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [team-b.example.com]
  rules: [{backendRefs: [{name: a, namespace: infra, port: 8080}]}]
---
# An HTTPRoute of the same namespace/name as a GRPCRoute: another object.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [web.example.com]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
---
"#
    .replace("PORT", &free_port().to_string());
    let (app, _, _) = setup(&format!("{kinds_only_http}{ROUTES}")).await;
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/status").await).unwrap();
    let route = |name: &str| {
        status["httpRoutes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name && r["kind"] != "HTTPRoute")
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .clone()
    };
    let accepted = |r: &serde_json::Value| {
        let c = r["parents"][0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Accepted")
            .unwrap()
            .clone();
        format!(
            "{}/{}",
            c["status"].as_str().unwrap(),
            c["reason"].as_str().unwrap()
        )
    };
    let echo = route("echo");
    assert_eq!(echo["kind"], "GRPCRoute");
    assert_eq!(accepted(&echo), "True/Accepted");
    let http_echo = status["httpRoutes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "echo" && r["kind"] == "HTTPRoute")
        .expect("the HTTPRoute of the same name has its own status");
    assert_eq!(accepted(http_echo), "True/Accepted");
    let refused = route("refused");
    assert_eq!(accepted(&refused), "False/NotAllowedByListeners");
    let resolved = |r: &serde_json::Value| {
        let c = r["parents"][0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .unwrap()
            .clone();
        format!(
            "{}/{}",
            c["status"].as_str().unwrap(),
            c["reason"].as_str().unwrap()
        )
    };
    assert_eq!(resolved(&route("granted")), "True/ResolvedRefs");
    assert_eq!(resolved(&route("not-granted")), "False/RefNotPermitted");
    let gateway = |name: &str| {
        status["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()["listeners"][0]
            .clone()
    };
    let gw = gateway("gw");
    assert_eq!(gw["attachedRoutes"], 6, "{gw}");
    let kinds: Vec<&str> = gw["supportedKinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["HTTPRoute", "GRPCRoute"]);
    let http_only = gateway("http-only");
    assert_eq!(http_only["attachedRoutes"], 0, "{http_only}");
    assert_eq!(http_only["supportedKinds"].as_array().unwrap().len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn request_mirror_sends_a_copy_of_the_call() {
    let (app, port, mirrored) = setup(ROUTES).await;
    let mut c = GrpcClient::connect(port, "grpc.example.com").await;
    let r = c
        .call("/other.Other/Shout", "copy me", &[])
        .await
        .expect("call");
    assert_eq!(r.into_inner().backend, "c");
    // Mirrors are sent on the side: wait (bounded) for the copy to land.
    for _ in 0..200 {
        if !mirrored.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        *mirrored.lock().unwrap(),
        ["/other.Other/Shout copy me".to_owned()]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn policy_refusals_are_unauthenticated_and_permission_denied() {
    // A SluicePolicy on the whole Gateway covers its GRPCRoutes.
    let policy = r#"
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: infra}
type: Opaque
stringData: {good: key-good-1, limited: key-limited-1}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: keys, namespace: infra}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  apiKeys: {secretRefs: [{name: keys}]}
  authorization:
    defaultAction: Deny
    rules: [{name: good-only, action: Allow, apiKeyClients: [good]}]
---
"#;
    let (app, port, _) = setup(&format!("{policy}{ROUTES}")).await;
    let mut c = GrpcClient::connect(port, "grpc.example.com").await;
    let s = c.call("/echo.Echo/Say", "hi", &[]).await.unwrap_err();
    // The codes alone tonic would also derive from HTTP 401/403; the
    // gateway's messages show the answer was a gRPC status.
    assert_eq!(
        (s.code(), s.message()),
        (
            Code::Unauthenticated,
            "API key required in header x-api-key"
        )
    );
    let s = c
        .call("/echo.Echo/Say", "hi", &[("x-api-key", "key-limited-1")])
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (
            Code::PermissionDenied,
            "forbidden: no authorization rule allows this request"
        )
    );
    let r = c.ok("/echo.Echo/Say", &[("x-api-key", "key-good-1")]).await;
    assert_eq!(r.backend, "a");
    app.shutdown().await;
}

#[tokio::test]
async fn backends_behind_tls_are_reached_over_h2_by_alpn() {
    let (backend, ca) = grpc_tls_backend("secure", "grpc.backend.internal").await;
    let ca: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    let routes = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: infra}}
spec: {{ports: [{{name: grpcs, port: 443}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: secure-1, namespace: infra, labels: {{kubernetes.io/service-name: secure}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"]}}]
ports: [{{name: grpcs, port: {port}}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca, namespace: infra}}
data:
  ca.crt: |
{ca}---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: secure, namespace: infra}}
spec:
  targetRefs: [{{group: "", kind: Service, name: secure, sectionName: grpcs}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: backend-ca}}]
    hostname: grpc.backend.internal
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: secure, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [secure.example.com]
  rules: [{{backendRefs: [{{name: secure, port: 443}}]}}]
---
"#,
        port = backend.port()
    );
    let (app, port, _) = setup(&format!("{routes}{ROUTES}")).await;
    let mut c = GrpcClient::connect(port, "secure.example.com").await;
    let r = c.ok("/echo.Echo/Say", &[]).await;
    assert_eq!(
        (r.backend.as_str(), r.path.as_str()),
        ("secure", "/echo.Echo/Say")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_policy_on_an_httproute_of_the_same_name_does_not_apply() {
    // Targets HTTPRoute infra/echo, which does not exist; GRPCRoute
    // infra/echo is another object and stays open.
    let policy = r#"
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: deny-echo, namespace: infra}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo}]
  ipDeny: [127.0.0.0/8]
---
"#;
    let (app, port, _) = setup(&format!("{policy}{ROUTES}")).await;
    let mut c = GrpcClient::connect(port, "grpc.example.com").await;
    assert_eq!(c.ok("/echo.Echo/Say", &[]).await.backend, "a");
    app.shutdown().await;
}

#[tokio::test]
async fn https_listeners_take_grpc_over_alpn_h2() {
    let cert = TestCert::new("tls.example.com");
    let tls_port = free_port();
    let config = format!(
        r#"{secret}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw-tls, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners:
  - name: https
    port: {tls_port}
    protocol: HTTPS
    hostname: tls.example.com
    tls: {{certificateRefs: [{{name: gw-cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: over-tls, namespace: infra}}
spec:
  parentRefs: [{{name: gw-tls}}]
  rules:
  - matches: [{{method: {{service: echo.Echo}}}}]
    backendRefs: [{{name: b, port: 8080}}]
---
"#,
        secret = cert.secret_yaml("gw-cert")
    );
    let (app, _, _) = setup(&format!("{config}{ROUTES}")).await;
    let mut c = GrpcClient::connect_tls(tls_port, "tls.example.com", &cert.ca).await;
    assert_eq!(c.ok("/echo.Echo/Say", &[]).await.backend, "b");
    let s = c.call("/other.Other/Say", "hi", &[]).await.unwrap_err();
    assert_eq!((s.code(), s.message()), (Code::Unimplemented, "no route"));
    app.shutdown().await;
}
