//! The Kubernetes source against a real API server (shared/kubelite): the
//! agent runs in-process with the userspace datapath on 127.0.0.1, objects
//! are written with kubectl, traffic goes to echo backends.
//!
//! Outside CI a missing kubelite or kubectl skips these tests loudly; with
//! `CI=true` it fails them. Each test starts its own kubelite on its own
//! ports (a guard stops it, also on failure, and removes its state unless the
//! test failed); tests run one at a time.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use sluice::{
    app::{build, App, DatapathMode, Settings},
    kube::KubeSettings,
};
use sluice_tests::echo::{serve, Identity};

/// kubelite and the API server are heavy for 2 cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shared_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SLUICE_SHARED_DIR") {
        return d.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// The shared kubelite helper (`sluice_tests::kubelite`), failing the test
/// on errors; it stops the server when dropped and keeps its state when the
/// test failed.
struct Kubelite {
    inner: sluice_tests::kubelite::Kubelite,
    kubeconfig: PathBuf,
}

impl Kubelite {
    /// `None` (after saying why) when kubelite or kubectl is missing outside CI.
    /// Tests give fixed ports below the kernel's ephemeral range (32768+), so
    /// a TIME-WAIT left by some client connection never holds one.
    fn start(tag: &str, api_port: u16, etcd_port: u16) -> Option<Self> {
        let scripts = shared_dir().join("kubelite");
        let missing = if !scripts.join("up.sh").exists() {
            Some(format!("{} not found", scripts.join("up.sh").display()))
        } else if Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_err()
        {
            Some("kubectl not found".into())
        } else {
            None
        };
        if let Some(why) = missing {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("Kubernetes tests need kubelite and kubectl in CI: {why}");
            }
            eprintln!("SKIPPED (not CI): Kubernetes test {tag}: {why}");
            return None;
        }
        let inner = sluice_tests::kubelite::Kubelite::start_tagged(
            &format!("{tag}-"),
            &scripts,
            api_port,
            etcd_port,
            &shared_dir().join("gateway-api/crd/standard"),
        )
        .unwrap_or_else(|e| panic!("kubelite: {e:#}"));
        let k = Kubelite {
            kubeconfig: inner.kubeconfig.clone(),
            inner,
        };
        k.namespaces();
        Some(k)
    }

    fn namespaces(&self) {
        self.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: sluice-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n");
    }

    /// Starts the stopped server again (empty, with the CRDs and namespaces).
    fn up(&self) {
        self.inner
            .up()
            .unwrap_or_else(|e| panic!("kubelite up: {e:#}"));
        self.namespaces();
    }

    fn down(&self) {
        self.inner.down();
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        self.inner.kubectl(args, stdin).expect("kubectl")
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        self.inner
            .kubectl_ok(args, None)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn apply(&self, yaml: &str) {
        if let Err(e) = self.inner.apply(yaml) {
            panic!("kubectl apply: {e:#}\n{yaml}");
        }
    }

    fn get(&self, what: &str, ns: &str) -> Value {
        let out = self.kubectl(&["get", what, "-n", ns, "-o", "json"], None);
        if !out.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(
        l,
        Identity {
            pod: "echo-1".into(),
            namespace: "apps".into(),
        },
    ));
    addr
}

/// GatewayClass, a Gateway on 127.0.0.1:`port` with `labels`, its HTTPRoute
/// sending `path` to Service `echo`, and the Service's EndpointSlice.
fn objects(gateway: &str, labels: &str, port: u16, path: &str, echo: SocketAddr) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {gateway}, namespace: apps, labels: {{{labels}}}}}
spec:
  gatewayClassName: sluice
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {gateway}-api, namespace: apps}}
spec:
  parentRefs: [{{name: {gateway}}}]
  hostnames: [api.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: echo, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: apps}}
spec: {{ports: [{{port: 80, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: apps, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {echo_port}, protocol: TCP}}]
"#,
        echo_port = echo.port()
    )
}

fn settings(kube: &Kubelite, node: &str, selector: Option<&str>) -> Settings {
    let mut s = Settings::new("");
    s.datapath = DatapathMode::Userspace;
    s.admin_addr = "127.0.0.1:0".parse().unwrap();
    let mut k = KubeSettings::new(node);
    k.kubeconfig = Some(kube.kubeconfig.clone());
    k.gateway_selector = selector.map(str::to_owned);
    // Short enough for a test to see a hand-over.
    k.lease_duration = Duration::from_secs(4);
    k.lease_renew_every = Duration::from_millis(500);
    s.kubernetes = Some(k);
    s
}

/// Status of GET `path` with Host api.example.com; 0 when no answer.
async fn status_of(port: u16, path: &str) -> u16 {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", "api.example.com")
        .body(Empty::new())
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            s
        }
        _ => 0,
    }
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

fn condition(conditions: &Value, type_: &str) -> Option<String> {
    conditions
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

fn gateway_status_ok(gw: &Value, attached: u64) -> bool {
    let s = &gw["status"];
    condition(&s["conditions"], "Accepted").as_deref() == Some("True")
        && condition(&s["conditions"], "Programmed").as_deref() == Some("True")
        && s["listeners"][0]["attachedRoutes"] == attached
        && s["addresses"][0]["value"] == "127.0.0.1"
        && s["conditions"][0]["observedGeneration"] == gw["metadata"]["generation"]
}

fn route_status_ok(route: &Value) -> bool {
    let p = &route["status"]["parents"][0];
    p["controllerName"] == "sluice.dev/gateway-controller"
        && condition(&p["conditions"], "Accepted").as_deref() == Some("True")
        && p["conditions"][0]["observedGeneration"] == route["metadata"]["generation"]
}

fn lease_holder(kube: &Kubelite) -> Option<String> {
    kube.get("lease/sluice-status-writer", "sluice-system")["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

async fn wait_ready(app: &App) {
    eventually(
        "agent ready (first sync applied)",
        Duration::from_secs(30),
        || async { app.is_ready() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_traffic_flows_status_is_written_and_route_changes_apply() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("traffic", 27443, 28790) else {
        return;
    };
    let echo = echo().await;
    let port = free_port();
    kube.apply(&objects("gw", "fleet: a", port, "/v1", echo));
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    eventually(
        "traffic through the agent",
        Duration::from_secs(20),
        || async { status_of(port, "/v1/users").await == 200 },
    )
    .await;
    eventually(
        "Gateway, HTTPRoute and GatewayClass status",
        Duration::from_secs(20),
        || async {
            gateway_status_ok(&kube.get("gateway/gw", "apps"), 1)
                && route_status_ok(&kube.get("httproute/gw-api", "apps"))
                && condition(
                    &kube.get("gatewayclass/sluice", "default")["status"]["conditions"],
                    "Accepted",
                )
                .as_deref()
                    == Some("True")
        },
    )
    .await;
    assert_eq!(lease_holder(&kube).as_deref(), Some("node-a"));

    // A route change takes effect, and the route's status follows its generation.
    kube.apply(&objects("gw", "fleet: a", port, "/v2", echo));
    eventually(
        "route change in effect",
        Duration::from_secs(10),
        || async { status_of(port, "/v2/x").await == 200 && status_of(port, "/v1/x").await == 404 },
    )
    .await;
    eventually(
        "route status at the new generation",
        Duration::from_secs(10),
        || async { route_status_ok(&kube.get("httproute/gw-api", "apps")) },
    )
    .await;

    // An invalid route is left out with a precise error; the rest keeps serving.
    kube.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad, namespace: apps}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [api.example.com]\n  rules:\n  - matches: [{path: {type: RegularExpression, value: \"(\"}}]\n    backendRefs: [{name: echo, port: 80}]\n");
    eventually(
        "invalid route reported on its status",
        Duration::from_secs(10),
        || async {
            let r = kube.get("httproute/bad", "apps");
            let c = &r["status"]["parents"][0]["conditions"];
            condition(c, "Accepted").as_deref() == Some("False")
                && c[0]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("HTTPRoute apps/bad")
        },
    )
    .await;
    assert_eq!(status_of(port, "/v2/x").await, 200);
    app.shutdown().await;
    assert_eq!(lease_holder(&kube), None, "lease released on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_leader_hand_over_between_two_agents() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("lease", 27453, 28800) else {
        return;
    };
    let echo = echo().await;
    let (pa, pb) = (free_port(), free_port());
    // Two agents on one host cannot bind the same Gateway address and port,
    // so each serves its own Gateway (--gateway-selector) and both share the
    // status-writer Lease: whichever holds it writes, the other does not.
    kube.apply(&objects("gw-a", "fleet: a", pa, "/v1", echo));
    let a = build(settings(&kube, "node-a", Some("fleet=a")))
        .await
        .unwrap();
    wait_ready(&a).await;
    eventually(
        "agent A holds the lease and wrote status",
        Duration::from_secs(20),
        || async {
            lease_holder(&kube).as_deref() == Some("node-a")
                && gateway_status_ok(&kube.get("gateway/gw-a", "apps"), 1)
        },
    )
    .await;
    kube.apply(&objects("gw-b", "fleet: b", pb, "/v1", echo));
    let b = build(settings(&kube, "node-b", Some("fleet=b")))
        .await
        .unwrap();
    wait_ready(&b).await;
    eventually(
        "agent B serves its Gateway",
        Duration::from_secs(20),
        || async { status_of(pb, "/v1/x").await == 200 },
    )
    .await;
    // B is a follower: it serves but writes nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lease_holder(&kube).as_deref(), Some("node-a"));
    assert!(
        kube.get("gateway/gw-b", "apps")["status"]["listeners"].is_null(),
        "follower wrote status"
    );

    a.shutdown().await;
    eventually(
        "agent B takes the lease over and writes status",
        Duration::from_secs(20),
        || async {
            lease_holder(&kube).as_deref() == Some("node-b")
                && gateway_status_ok(&kube.get("gateway/gw-b", "apps"), 1)
        },
    )
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_server_restart_keeps_serving_and_converges() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("restart", 27463, 28810) else {
        return;
    };
    let echo = echo().await;
    let port = free_port();
    kube.apply(&objects("gw", "fleet: a", port, "/v1", echo));
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    eventually(
        "traffic through the agent",
        Duration::from_secs(20),
        || async { status_of(port, "/v1/x").await == 200 },
    )
    .await;

    kube.down();
    let admin = app.admin_addr;
    eventually(
        "staleness visible while the API server is down",
        Duration::from_secs(15),
        || async {
            let metrics = admin_get(admin, "/metrics").await;
            let stale = metrics
                .lines()
                .find_map(|l| l.strip_prefix("sluice_config_source_stale_seconds "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            stale >= 1.0 && admin_get(admin, "/readyz").await.contains("unreachable")
        },
    )
    .await;
    // Still serving the last good state meanwhile.
    for _ in 0..5 {
        assert_eq!(status_of(port, "/v1/x").await, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(app.is_ready(), "ready while serving the last good state");

    // kubelite comes back empty: re-create the objects, with a changed route.
    kube.up();
    kube.apply(&objects("gw", "fleet: a", port, "/v2", echo));
    eventually(
        "converged after the restart",
        Duration::from_secs(40),
        || async { status_of(port, "/v2/x").await == 200 && status_of(port, "/v1/x").await == 404 },
    )
    .await;
    eventually("status written again", Duration::from_secs(20), || async {
        gateway_status_ok(&kube.get("gateway/gw", "apps"), 1)
            && route_status_ok(&kube.get("httproute/gw-api", "apps"))
    })
    .await;
    eventually("no longer stale", Duration::from_secs(10), || async {
        admin_get(admin, "/metrics")
            .await
            .contains("sluice_config_source_stale_seconds 0")
    })
    .await;
    app.shutdown().await;
}

async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let Ok(Ok(resp)) = tokio::time::timeout(
        Duration::from_secs(2),
        client.get(format!("http://{addr}{path}").parse().unwrap()),
    )
    .await
    else {
        return String::new();
    };
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&body).into_owned()
}

/// The agent's `/config` as JSON.
async fn admin_config(addr: SocketAddr) -> Value {
    serde_json::from_str(&admin_get(addr, "/config").await).unwrap_or(Value::Null)
}

fn has_source(config: &Value, cidr: &str, namespace: &str) -> bool {
    config["identity"]["sources"]
        .as_array()
        .is_some_and(|s| s.iter().any(|p| p[0] == cidr && p[1] == namespace))
}

fn has_cgroup(config: &Value, id: u64, namespace: &str) -> bool {
    config["identity"]["cgroups"]
        .as_array()
        .is_some_and(|s| s.iter().any(|p| p[0] == id && p[1] == namespace))
}

/// A temporary directory standing in for the cgroup v2 mount; removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pod(name: &str, node: &str, host_network: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: apps}}\n\
         spec: {{nodeName: {node}, hostNetwork: {host_network}, containers: [{{name: c, image: example}}]}}\n"
    )
}

/// kubelite has no kubelet: status is written the way a kubelet would.
fn set_pod_ip(kube: &Kubelite, name: &str, ip: &str) {
    kube.kubectl_ok(&[
        "patch",
        "pod",
        name,
        "-n",
        "apps",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"status": {{"phase": "Running", "podIP": "{ip}", "podIPs": [{{"ip": "{ip}"}}]}}}}"#
        ),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_pods_on_this_node_give_namespace_identity() {
    use std::os::unix::fs::MetadataExt as _;
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("pods", 27473, 28820) else {
        return;
    };
    let echo = echo().await;
    let port = free_port();
    kube.apply(&objects("gw", "fleet: a", port, "/v1", echo));
    let cgroups =
        TempDir(std::env::temp_dir().join(format!("sluice-kube-cgroups-{}", std::process::id())));
    std::fs::create_dir_all(&cgroups.0).unwrap();
    let mut s = settings(&kube, "node-a", None);
    s.kubernetes.as_mut().unwrap().cgroup_root = Some(cgroups.0.clone());
    // Identity from the agent config stays, pods add to it.
    s.identity.cidrs = vec![("10.9.0.0/16".parse().unwrap(), "team-x".into())];
    let app = build(s).await.unwrap();
    wait_ready(&app).await;

    kube.apply(&pod("web", "node-a", false));
    kube.apply(&pod("elsewhere", "node-b", false));
    kube.apply(&pod("hostnet", "node-a", true));
    // The kubelet would create the pod's cgroup (cgroupfs driver layout).
    let uid = kube.get("pod/web", "apps")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let pod_dir = cgroups.0.join(format!("kubepods/burstable/pod{uid}"));
    let container = pod_dir.join("0123abcd");
    for d in [&pod_dir, &container] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("cgroup.procs"), "").unwrap();
    }
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    set_pod_ip(&kube, "web", "10.244.1.7");
    set_pod_ip(&kube, "elsewhere", "10.244.2.9");
    set_pod_ip(&kube, "hostnet", "192.0.2.10");
    let admin = app.admin_addr;
    eventually(
        "the pod's IP and cgroups map to its namespace",
        Duration::from_secs(20),
        || async {
            let c = admin_config(admin).await;
            has_source(&c, "10.244.1.7/32", "apps")
                && has_cgroup(&c, ino(&pod_dir), "apps")
                && has_cgroup(&c, ino(&container), "apps")
                && has_source(&c, "10.9.0.0/16", "team-x")
        },
    )
    .await;
    let c = admin_config(admin).await;
    assert!(
        !has_source(&c, "10.244.2.9/32", "apps"),
        "a pod of another node: {c}"
    );
    assert!(
        !has_source(&c, "192.0.2.10/32", "apps"),
        "a host-network pod's IP is the node's: {c}"
    );
    assert_eq!(c["unresolvedPods"], serde_json::json!(["apps/hostnet"]));
    // Traffic is unaffected (the Gateway admits every namespace).
    assert_eq!(status_of(port, "/v1/x").await, 200);

    kube.kubectl_ok(&["delete", "pod", "web", "-n", "apps", "--wait=false"]);
    eventually(
        "a deleted pod leaves the identity",
        Duration::from_secs(20),
        || async {
            let c = admin_config(admin).await;
            !has_source(&c, "10.244.1.7/32", "apps")
                && !has_cgroup(&c, ino(&pod_dir), "apps")
                && has_source(&c, "10.9.0.0/16", "team-x")
        },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_only_referenced_secrets_are_held() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("secrets", 27483, 28830) else {
        return;
    };
    let echo = echo().await;
    let (port, tls_port) = (free_port(), free_port());
    kube.apply(&objects("gw", "fleet: a", port, "/v1", echo));
    let dir =
        TempDir(std::env::temp_dir().join(format!("sluice-kube-certs-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["api.example.com".into()]).unwrap();
    let (crt, key) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
    for name in ["cert", "unused"] {
        kube.kubectl_ok(&[
            "create",
            "secret",
            "tls",
            name,
            "-n",
            "apps",
            &format!("--cert={}", crt.display()),
            &format!("--key={}", key.display()),
        ]);
    }
    kube.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "opaque",
        "-n",
        "apps",
        "--from-literal=k=v",
    ]);
    let https_gateway = |secret: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: secure, namespace: apps}}\n\
             spec:\n  gatewayClassName: sluice\n  addresses: [{{type: IPAddress, value: 127.0.0.1}}]\n  \
             listeners:\n  - {{name: https, port: {tls_port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: {secret}}}]}}}}\n"
        )
    };
    kube.apply(&https_gateway("cert"));
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    let admin = app.admin_addr;
    let listener_resolved = |gw: &Value| {
        let l = &gw["status"]["listeners"][0];
        condition(&l["conditions"], "ResolvedRefs").as_deref() == Some("True")
            && condition(&l["conditions"], "Programmed").as_deref() == Some("True")
    };
    eventually(
        "the referenced Secret is held and the HTTPS listener programmed",
        Duration::from_secs(20),
        || async {
            admin_config(admin).await["heldSecrets"] == serde_json::json!(["apps/cert"])
                && listener_resolved(&kube.get("gateway/secure", "apps"))
        },
    )
    .await;
    // The listener really serves TLS with the Secret's certificate.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    ));
    tls.connect("api.example.com".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake with the Secret's certificate");

    // The reference moves: the old Secret is dropped, the new one fetched.
    kube.apply(&https_gateway("unused"));
    eventually(
        "only the newly referenced Secret is held",
        Duration::from_secs(20),
        || async { admin_config(admin).await["heldSecrets"] == serde_json::json!(["apps/unused"]) },
    )
    .await;
    // A referenced Secret that is deleted is no longer held.
    kube.kubectl_ok(&["delete", "secret", "unused", "-n", "apps"]);
    eventually(
        "a deleted Secret is dropped and the listener reports it",
        Duration::from_secs(20),
        || async {
            admin_config(admin).await["heldSecrets"] == serde_json::json!([])
                && !listener_resolved(&kube.get("gateway/secure", "apps"))
        },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_node_labels_select_the_gateways_served() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("nodes", 27493, 28840) else {
        return;
    };
    let echo = echo().await;
    let port = free_port();
    kube.apply(&objects("gw", "fleet: a", port, "/v1", echo));
    kube.kubectl_ok(&[
        "annotate",
        "gateway",
        "gw",
        "-n",
        "apps",
        "sluice.dev/node-selector=role=infra,zone in (a,b)",
    ]);
    kube.apply(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {role: edge, zone: a}}\n",
    );
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    let admin = app.admin_addr;
    eventually(
        "not served on a node the selector does not match; status still written",
        Duration::from_secs(20),
        || async {
            admin_config(admin).await["gatewaysElsewhere"] == serde_json::json!(["apps/gw"])
                && gateway_status_ok(&kube.get("gateway/gw", "apps"), 1)
        },
    )
    .await;
    assert_eq!(status_of(port, "/v1/x").await, 0, "nothing listens here");

    kube.kubectl_ok(&["label", "node", "node-a", "role=infra", "--overwrite"]);
    eventually(
        "served once the node's labels match",
        Duration::from_secs(20),
        || async { status_of(port, "/v1/x").await == 200 },
    )
    .await;
    assert_eq!(
        admin_config(admin).await["gatewaysElsewhere"],
        serde_json::json!([])
    );

    kube.kubectl_ok(&["label", "node", "node-a", "zone=c", "--overwrite"]);
    eventually(
        "no longer served after the node is relabelled",
        Duration::from_secs(20),
        || async { status_of(port, "/v1/x").await == 0 },
    )
    .await;
    assert!(gateway_status_ok(&kube.get("gateway/gw", "apps"), 1));
    app.shutdown().await;
}

/// A CA and a leaf it signs for `names` (rcgen), as PEM.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// (certificate PEM, key PEM) of a leaf for `names`.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A ConfigMap `apps/name` with this CA under `ca.crt`.
    fn config_map(&self, name: &str) -> String {
        let pem: String = self
            .cert
            .pem()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect();
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: apps}}\ndata:\n  ca.crt: |\n{pem}"
        )
    }
}

/// An echo backend over TLS with the leaf `(cert, key)`; its answers report
/// the SNI it was reached with.
async fn tls_echo(leaf: &(String, String)) -> SocketAddr {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(leaf.0.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.1.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(sluice_tests::echo::serve_tls(
        l,
        Identity {
            pod: "secure-1".into(),
            namespace: "apps".into(),
        },
        None,
        true,
        std::sync::Arc::new(config),
    ));
    addr
}

/// Status and body of GET `path` with Host api.example.com; `(0, "")` when
/// no answer.
async fn get(port: u16, path: &str) -> (u16, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", "api.example.com")
        .body(Empty::new())
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(3), client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (s, String::from_utf8_lossy(&body).into_owned())
        }
        _ => (0, String::new()),
    }
}

/// Whether a BackendTLSPolicy's status has our ancestor entry for Gateway
/// `apps/gw` with Accepted and ResolvedRefs True at its generation.
fn policy_status_ok(policy: &Value) -> bool {
    let ancestors = policy["status"]["ancestors"].as_array();
    ancestors.is_some_and(|a| {
        a.iter().any(|a| {
            let c = &a["conditions"];
            a["controllerName"] == "sluice.dev/gateway-controller"
                && a["ancestorRef"]["kind"] == "Gateway"
                && a["ancestorRef"]["namespace"] == "apps"
                && a["ancestorRef"]["name"] == "gw"
                && condition(c, "Accepted").as_deref() == Some("True")
                && condition(c, "ResolvedRefs").as_deref() == Some("True")
                && c.as_array().is_some_and(|c| {
                    c.iter()
                        .all(|c| c["observedGeneration"] == policy["metadata"]["generation"])
                })
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_backend_tls_policy_with_ca_config_map() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("backendtls", 27503, 28850) else {
        return;
    };
    let (ca, other_ca) = (TestCa::new("backend CA"), TestCa::new("another CA"));
    let backend = tls_echo(&ca.leaf(&["backend.internal"])).await;
    let port = free_port();
    kube.apply(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: sluice
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: apps}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [api.example.com]
  rules: [{{backendRefs: [{{name: secure, port: 443}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: apps}}
spec: {{ports: [{{name: https, port: 443, protocol: TCP, appProtocol: https}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: secure-1, namespace: apps, labels: {{kubernetes.io/service-name: secure}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{name: https, port: {backend_port}, protocol: TCP}}]
"#,
        backend_port = backend.port()
    ));
    kube.apply(&ca.config_map("backend-ca"));
    kube.apply(&other_ca.config_map("other-ca"));
    let policy = |ca_map: &str| {
        format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: secure, namespace: apps}}
spec:
  targetRefs: [{{group: "", kind: Service, name: secure, sectionName: https}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: {ca_map}}}]
    hostname: backend.internal
"#
        )
    };
    kube.apply(&policy("backend-ca"));
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    let admin = app.admin_addr;

    // The request reaches the backend over TLS, verified with the CA of the
    // ConfigMap and the policy's hostname as SNI.
    eventually(
        "a request through the agent reaches the backend over TLS",
        Duration::from_secs(20),
        || async {
            let (status, body) = get(port, "/tls").await;
            let echo: Option<sluice_tests::echo::Echo> = serde_json::from_str(&body).ok();
            status == 200
                && echo.is_some_and(|e| {
                    e.pod == "secure-1"
                        && e.tls.is_some_and(|t| t.server_name == "backend.internal")
                })
        },
    )
    .await;
    eventually(
        "BackendTLSPolicy status Accepted=True, ResolvedRefs=True for Gateway apps/gw",
        Duration::from_secs(20),
        || async { policy_status_ok(&kube.get("backendtlspolicy/secure", "apps")) },
    )
    .await;
    // Only the referenced ConfigMap is held, not the other one (nor the
    // API server's own kube-root-ca.crt ConfigMaps).
    assert_eq!(
        admin_config(admin).await["heldConfigMaps"],
        serde_json::json!(["apps/backend-ca"])
    );

    // A Gateway's frontend client-certificate validation references a CA
    // ConfigMap too: it is held as well.
    let client_ca = TestCa::new("client CA");
    kube.apply(&client_ca.config_map("client-ca"));
    kube.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\n\
         spec:\n  gatewayClassName: sluice\n  addresses: [{{type: IPAddress, value: 127.0.0.1}}]\n  \
         listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n  \
         tls: {{frontend: {{default: {{validation: {{caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: client-ca}}]}}}}}}}}\n"
    ));
    eventually(
        "the ConfigMap of the Gateway's frontend validation is held",
        Duration::from_secs(20),
        || async {
            admin_config(admin).await["heldConfigMaps"]
                == serde_json::json!(["apps/backend-ca", "apps/client-ca"])
        },
    )
    .await;

    // The policy names the other CA: it is fetched, the first is dropped,
    // and the backend's certificate no longer verifies.
    kube.apply(&policy("other-ca"));
    eventually(
        "only the newly referenced ConfigMap is held and TLS to the backend fails",
        Duration::from_secs(20),
        || async {
            admin_config(admin).await["heldConfigMaps"]
                == serde_json::json!(["apps/client-ca", "apps/other-ca"])
                && !matches!(get(port, "/tls").await.0, 0 | 200)
        },
    )
    .await;
    // The CA ConfigMap is deleted: the policy reports the unresolved reference.
    kube.kubectl_ok(&["delete", "configmap", "other-ca", "-n", "apps"]);
    eventually(
        "a deleted CA ConfigMap is dropped and the policy reports it",
        Duration::from_secs(20),
        || async {
            let p = kube.get("backendtlspolicy/secure", "apps");
            admin_config(admin).await["heldConfigMaps"] == serde_json::json!(["apps/client-ca"])
                && condition(&p["status"]["ancestors"][0]["conditions"], "ResolvedRefs").as_deref()
                    == Some("False")
        },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_serves_without_the_backend_tls_policy_crd() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("nocrd", 27513, 28860) else {
        return;
    };
    // A cluster with a Gateway API older than BackendTLSPolicy v1.
    let crd = shared_dir()
        .join("gateway-api/crd/standard/gateway.networking.k8s.io_backendtlspolicies.yaml");
    kube.kubectl_ok(&["delete", "-f", crd.to_str().unwrap(), "--wait=true"]);
    let echo = echo().await;
    let port = free_port();
    kube.apply(&objects("gw", "fleet: a", port, "/v1", echo));
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    eventually(
        "traffic through the agent without the BackendTLSPolicy CRD",
        Duration::from_secs(20),
        || async { status_of(port, "/v1/users").await == 200 },
    )
    .await;
    // The CRD is installed later: policies are picked up (this one is
    // invalid, so it shows in /config's objectErrors).
    kube.kubectl_ok(&["apply", "--server-side", "-f", crd.to_str().unwrap()]);
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/backendtlspolicies.gateway.networking.k8s.io",
    ]);
    kube.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: late, namespace: apps}\n\
         spec:\n  targetRefs: [{group: \"\", kind: Service, name: echo}]\n  options: {example.com/x: \"y\"}\n  \
         validation: {hostname: echo.internal, wellKnownCACertificates: System}\n",
    );
    let admin = app.admin_addr;
    eventually(
        "the BackendTLSPolicy watch recovers once the CRD exists",
        Duration::from_secs(30),
        || async {
            admin_config(admin).await["objectErrors"]
                .as_array()
                .is_some_and(|e| {
                    e.iter().any(|e| {
                        e.as_str().is_some_and(|e| {
                            e.contains("BackendTLSPolicy apps/late") && e.contains("spec.options")
                        })
                    })
                })
        },
    )
    .await;
    // Its status says so, towards the Gateway whose route uses the Service.
    eventually(
        "the invalid BackendTLSPolicy gets Accepted=False (Invalid)",
        Duration::from_secs(20),
        || async {
            let p = kube.get("backendtlspolicy/late", "apps");
            let a = &p["status"]["ancestors"][0];
            let accepted = a["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
                .cloned()
                .unwrap_or_default();
            a["ancestorRef"]["name"] == "gw"
                && a["controllerName"] == "sluice.dev/gateway-controller"
                && accepted["status"] == "False"
                && accepted["reason"] == "Invalid"
                && accepted["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("spec.options"))
        },
    )
    .await;
    assert_eq!(status_of(port, "/v1/users").await, 200);
    app.shutdown().await;
}

/// Status of GET `path` with Host api.example.com and `headers`; 0 when no answer.
async fn status_with(port: u16, path: &str, headers: &[(&str, &str)]) -> u16 {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", "api.example.com");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    match tokio::time::timeout(
        Duration::from_secs(2),
        client.request(req.body(Empty::new()).unwrap()),
    )
    .await
    {
        Ok(Ok(resp)) => {
            let s = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            s
        }
        _ => 0,
    }
}

/// One of our `status.ancestors` entries of a SluicePolicy, with its
/// Accepted condition.
#[derive(Debug)]
struct Ancestor {
    kind: String,
    name: String,
    accepted: String,
    reason: String,
    message: String,
}

impl Ancestor {
    fn is(&self, kind: &str, name: &str, accepted: &str, reason: &str) -> bool {
        (self.kind.as_str(), self.name.as_str()) == (kind, name)
            && (self.accepted.as_str(), self.reason.as_str()) == (accepted, reason)
    }
}

/// Our ancestor entries of a SluicePolicy, when every condition carries the
/// policy's current generation; `None` otherwise.
fn sluice_policy_ancestors(policy: &Value) -> Option<Vec<Ancestor>> {
    let generation = &policy["metadata"]["generation"];
    let ancestors = policy["status"]["ancestors"].as_array()?;
    let mut out = Vec::new();
    for a in ancestors {
        if a["controllerName"] != "sluice.dev/gateway-controller" {
            continue;
        }
        let conditions = a["conditions"].as_array()?;
        if !conditions
            .iter()
            .all(|c| c["observedGeneration"] == *generation)
        {
            return None;
        }
        let accepted = conditions.iter().find(|c| c["type"] == "Accepted")?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        out.push(Ancestor {
            kind: text(&a["ancestorRef"]["kind"]),
            name: text(&a["ancestorRef"]["name"]),
            accepted: text(&accepted["status"]),
            reason: text(&accepted["reason"]),
            message: text(&accepted["message"]),
        });
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_sluice_policy_with_api_keys_fails_closed_and_reports_status() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("sluicepolicy", 27523, 28870) else {
        return;
    };
    let echo = echo().await;
    let port = free_port();
    kube.apply(&objects("gw", "fleet: a", port, "/v1", echo));
    kube.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: admin, namespace: apps}\n\
         spec:\n  parentRefs: [{name: gw}]\n  hostnames: [api.example.com]\n  \
         rules: [{matches: [{path: {type: PathPrefix, value: /admin}}], backendRefs: [{name: echo, port: 80}]}]\n",
    );
    // Credentials nobody references: never held.
    kube.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: unused-keys, namespace: apps}\ntype: Opaque\nstringData: {someone: s3cret}\n");
    // The SluicePolicy CRD is not installed yet: the agent serves without it.
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    let admin = app.admin_addr;
    eventually(
        "traffic through the agent without the SluicePolicy CRD",
        Duration::from_secs(20),
        || async { status_of(port, "/v1/x").await == 200 },
    )
    .await;

    // The CRD (generated from the agent's types) arrives, then a policy with
    // API keys from an Opaque Secret: the agent looks for the kind again.
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset/crds");
    kube.kubectl_ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/sluicepolicies.sluice.dev",
    ]);
    let keys = |key: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: api-keys, namespace: apps}}\ntype: Opaque\nstringData: {{client-a: {key}}}\n")
    };
    kube.apply(&keys("key-one"));
    let keys_policy = |route: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {{name: keys, namespace: apps}}\n\
             spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}]\n  \
             apiKeys: {{secretRefs: [{{name: api-keys}}]}}\n"
        )
    };
    kube.apply(&keys_policy("gw-api"));
    eventually(
        "the policy protects its route with the Secret's key",
        Duration::from_secs(30),
        || async {
            status_with(port, "/v1/x", &[]).await == 401
                && status_with(port, "/v1/x", &[("x-api-key", "key-one")]).await == 200
                && status_with(port, "/v1/x", &[("x-api-key", "wrong")]).await == 401
        },
    )
    .await;
    assert_eq!(
        status_of(port, "/admin").await,
        200,
        "other routes untouched"
    );
    assert_eq!(
        admin_config(admin).await["heldSecrets"],
        serde_json::json!(["apps/api-keys"]),
        "only the referenced Opaque Secret is held"
    );
    eventually(
        "the Lease holder writes the policy's ancestors with observedGeneration",
        Duration::from_secs(20),
        || async {
            sluice_policy_ancestors(&kube.get("sluicepolicy/keys", "apps"))
                .is_some_and(|a| a.len() == 1 && a[0].is("Gateway", "gw", "True", "Accepted"))
        },
    )
    .await;
    assert_eq!(lease_holder(&kube).as_deref(), Some("node-a"));

    // The Secret changes: the new key works, the old one no longer does.
    kube.apply(&keys("key-two"));
    eventually(
        "the rotated key is in effect",
        Duration::from_secs(20),
        || async {
            status_with(port, "/v1/x", &[("x-api-key", "key-two")]).await == 200
                && status_with(port, "/v1/x", &[("x-api-key", "key-one")]).await == 401
        },
    )
    .await;

    // A policy the API server accepts but the agent cannot apply (a bad
    // CIDR): its route fails closed, its status says why.
    kube.apply(
        "apiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {name: bad, namespace: apps}\n\
         spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}]\n  \
         ipAllow: [10.0.0.0/33]\n",
    );
    eventually(
        "the invalid policy's route answers 500 and its status is Invalid",
        Duration::from_secs(20),
        || async {
            status_of(port, "/admin").await == 500
                && sluice_policy_ancestors(&kube.get("sluicepolicy/bad", "apps")).is_some_and(|a| {
                    a.len() == 1
                        && a[0].is("Gateway", "gw", "False", "Invalid")
                        && a[0].message.contains("spec.ipAllow[0]")
                })
        },
    )
    .await;
    let errors = admin_config(admin).await["objectErrors"].clone();
    assert!(
        errors.as_array().is_some_and(|e| e.iter().any(|e| {
            e.as_str().is_some_and(|e| {
                e.contains("SluicePolicy apps/bad") && e.contains("spec.ipAllow[0]")
            })
        })),
        "{errors}"
    );
    assert_eq!(
        status_with(port, "/v1/x", &[("x-api-key", "key-two")]).await,
        200,
        "the invalid policy touches only its own target"
    );

    // The policy moves to a route that does not exist: its old ancestor is
    // removed, the new target reported TargetNotFound, and the route it left
    // is open again. Its Secret stays held while the policy names it.
    kube.apply(&keys_policy("nope"));
    eventually(
        "TargetNotFound replaces the stale ancestor",
        Duration::from_secs(20),
        || async {
            sluice_policy_ancestors(&kube.get("sluicepolicy/keys", "apps")).is_some_and(|a| {
                a.len() == 1 && a[0].is("HTTPRoute", "nope", "False", "TargetNotFound")
            }) && status_with(port, "/v1/x", &[]).await == 200
        },
    )
    .await;
    assert_eq!(
        admin_config(admin).await["heldSecrets"],
        serde_json::json!(["apps/api-keys"]),
        "held while a policy names it"
    );
    kube.kubectl_ok(&["delete", "sluicepolicy", "keys", "-n", "apps"]);
    eventually(
        "a deleted policy's Secret is dropped",
        Duration::from_secs(20),
        || async { admin_config(admin).await["heldSecrets"] == serde_json::json!([]) },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_tcp_and_tls_routes_are_watched_served_and_their_status_written() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("l4routes", 27533, 28880) else {
        return;
    };
    let echo = echo().await;
    let (tcp_port, tls_port) = (free_port(), free_port());
    // The Gateway, Service and EndpointSlice of `objects`, with L4
    // listeners instead of the HTTP one.
    let base = objects("l4", "fleet: a", tcp_port, "/", echo).replace(
        &format!("listeners: [{{name: http, port: {tcp_port}, protocol: HTTP}}]"),
        &format!(
            "listeners:\n  - {{name: tcp, port: {tcp_port}, protocol: TCP}}\n  \
             - {{name: tls, port: {tls_port}, protocol: TLS, tls: {{mode: Passthrough}}}}"
        ),
    );
    kube.apply(&base);
    kube.apply(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: echo-tcp, namespace: apps}
spec:
  parentRefs: [{name: l4, sectionName: tcp}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: echo-tls, namespace: apps}
spec:
  parentRefs: [{name: l4, sectionName: tls}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
"#,
    );
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    // HTTP is bytes to a TCP listener: the echo backend answers through it
    // (the HTTPRoute of `objects` is on a listener that no longer exists).
    eventually(
        "traffic through the TCP listener",
        Duration::from_secs(20),
        || async { status_of(tcp_port, "/anything").await == 200 },
    )
    .await;
    eventually(
        "TCPRoute and TLSRoute status written, listeners with their kinds",
        Duration::from_secs(20),
        || async {
            let gw = kube.get("gateway/l4", "apps");
            let listeners = &gw["status"]["listeners"];
            route_status_ok(&kube.get("tcproute/echo-tcp", "apps"))
                && route_status_ok(&kube.get("tlsroute/echo-tls", "apps"))
                && listeners[0]["supportedKinds"][0]["kind"] == "TCPRoute"
                && listeners[0]["attachedRoutes"] == 1
                && listeners[1]["supportedKinds"][0]["kind"] == "TLSRoute"
                && listeners[1]["attachedRoutes"] == 1
        },
    )
    .await;
    app.shutdown().await;
}

/// An echo backend answering as pod `pod`.
async fn echo_pod(pod: &str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(
        l,
        Identity {
            pod: pod.into(),
            namespace: "apps".into(),
        },
    ));
    addr
}

/// Service `name` (port 80, named http) and its EndpointSlice to `backend`.
fn service(name: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: apps}}\n\
         spec: {{ports: [{{name: http, port: 80, protocol: TCP}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: apps, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\n\
         ports: [{{name: http, port: {}, protocol: TCP}}]\n",
        backend.port()
    )
}

/// GET `path` with Host `host` over plain HTTP: status, the echo body
/// (`Null` when not an echo) and the Location header. Status 0: no answer.
async fn get_via(port: u16, host: &str, path: &str) -> (u16, Value, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await
    else {
        return (0, Value::Null, String::new());
    };
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let echo = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    (status, echo, location)
}

/// GET `/` over TLS with SNI `host`, trusting only `root`: the raw response.
async fn https_get(port: u16, host: &str, root: &rcgen::CertifiedKey) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.cert.der().clone()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    ));
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let exchange = async {
        let mut s = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_ingress_is_served_with_tls_redirects_status_and_warnings() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("ingress", 27543, 28890) else {
        return;
    };
    // kubelite serves no networking.k8s.io: the fixture installs the two
    // types as CRDs of the same group, version and schema.
    kube.kubectl_ok(&[
        "apply",
        "--server-side",
        "-f",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/networking-k8s-io-crds.yaml")
            .to_str()
            .unwrap(),
    ]);
    kube.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "ingresses.networking.k8s.io",
        "ingressclasses.networking.k8s.io",
    ]);
    let (web, fallback) = (echo_pod("web").await, echo_pod("fallback").await);
    kube.apply(&service("web", web));
    kube.apply(&service("fallback", fallback));
    let dir =
        TempDir(std::env::temp_dir().join(format!("sluice-kube-ingress-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["secure.example.com".into()]).unwrap();
    let (crt, key) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
    kube.kubectl_ok(&[
        "create",
        "secret",
        "tls",
        "cert",
        "-n",
        "apps",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);
    kube.apply(
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: sluice}
spec: {controller: sluice.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: apps
  annotations: {nginx.ingress.kubernetes.io/proxy-read-timeout: "60"}
spec:
  ingressClassName: sluice
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  tls: [{hosts: [secure.example.com], secretName: cert}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /app, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: blog, namespace: apps}
spec:
  ingressClassName: sluice
  rules:
  - host: blog.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: private
  namespace: apps
  annotations: {nginx.ingress.kubernetes.io/whitelist-source-range: "10.0.0.0/8"}
spec:
  ingressClassName: sluice
  rules:
  - host: private.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: assets
  namespace: apps
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /$2
spec:
  ingressClassName: sluice
  rules:
  - host: assets.example.com
    http:
      paths:
      - {path: "/static(/|$)(.*)", pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: theirs, namespace: apps}
spec:
  ingressClassName: nginx
  rules:
  - host: other.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: broken
  namespace: apps
  annotations: {nginx.ingress.kubernetes.io/use-regex: "true"}
spec:
  ingressClassName: sluice
  rules:
  - host: broken.example.com
    http:
      paths:
      - {path: "/(", pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
"#,
    );
    let (http_port, https_port) = (free_port(), free_port());
    let mut s = settings(&kube, "node-a", None);
    s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let k = s.kubernetes.as_mut().unwrap();
    k.ingress = sluice::kube::ingress::IngressSettings {
        http_port,
        https_port,
        addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    let app = build(s).await.unwrap();
    wait_ready(&app).await;
    let get = |host: &'static str, path: &'static str| get_via(http_port, host, path);

    eventually("the Ingress is served", Duration::from_secs(20), || async {
        let (status, echo, _) = get("shop.example.com", "/exact").await;
        status == 200 && echo["pod"] == "web"
    })
    .await;
    // Exact matches only the path itself; Prefix matches whole segments;
    // what no rule matches goes to the default backend.
    assert_eq!(
        get("shop.example.com", "/exact/more").await.1["pod"],
        "fallback"
    );
    assert_eq!(get("shop.example.com", "/app").await.1["pod"], "web");
    assert_eq!(get("shop.example.com", "/app/cart").await.1["pod"], "web");
    assert_eq!(
        get("shop.example.com", "/application").await.1["pod"],
        "fallback"
    );
    assert_eq!(get("unknown.example.com", "/").await.1["pod"], "fallback");
    assert_eq!(get("blog.example.com", "/post").await.1["pod"], "web");
    // The Ingress of another class is not served: its host gets the default backend.
    assert_eq!(get("other.example.com", "/").await.1["pod"], "fallback");
    // whitelist-source-range: a SluicePolicy ipAllow; 127.0.0.1 is not in it.
    assert_eq!(get("private.example.com", "/").await.0, 403);
    // The rewrite-target idiom strips the prefix.
    let (_, echo, _) = get("assets.example.com", "/static/app.js").await;
    assert_eq!(
        (&echo["pod"], &echo["path"]),
        (&Value::from("web"), &Value::from("/app.js"))
    );
    // The TLS host: plain HTTP is redirected, HTTPS with SNI has the Secret's certificate.
    let (status, _, location) = get("secure.example.com", "/x?y=1").await;
    assert_eq!(status, 308);
    assert_eq!(
        location,
        format!("https://secure.example.com:{https_port}/x?y=1")
    );
    let answer = https_get(https_port, "secure.example.com", &cert)
        .await
        .expect("TLS handshake with the Secret's certificate");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"pod\":\"web\""),
        "{answer}"
    );

    // status.loadBalancer of our Ingresses; none on the other class's.
    eventually(
        "status.loadBalancer written",
        Duration::from_secs(20),
        || async {
            kube.get("ingress/shop", "apps")["status"]["loadBalancer"]["ingress"][0]["ip"]
                == "127.0.0.1"
                && kube.get("ingress/blog", "apps")["status"]["loadBalancer"]["ingress"][0]["ip"]
                    == "127.0.0.1"
        },
    )
    .await;
    assert!(
        kube.get("ingress/theirs", "apps")["status"]["loadBalancer"]["ingress"].is_null(),
        "{}",
        kube.get("ingress/theirs", "apps")
    );

    // The unsupported annotation is named in /config and counted; the
    // invalid Ingress is reported by name and nothing else suffers.
    let config = admin_config(app.admin_addr).await;
    let warning = "Ingress apps/shop: annotation nginx.ingress.kubernetes.io/proxy-read-timeout is not supported by Sluice, ignored";
    assert!(
        config["ingressWarnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w == warning)),
        "{config}"
    );
    assert!(
        config["objectErrors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e
                .as_str()
                .is_some_and(|e| e.contains("Ingress apps/broken")
                    && e.contains("not a valid regular expression")))),
        "{config}"
    );
    let metrics = admin_get(app.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        metrics.contains(
            "sluice_ingress_ignored_annotations{annotation=\"nginx.ingress.kubernetes.io/proxy-read-timeout\"} 1"
        ),
        "{metrics}"
    );
    assert_eq!(get("broken.example.com", "/(").await.1["pod"], "fallback");

    // Deleting the Ingress stops serving it; the other Ingress stays.
    kube.kubectl_ok(&["delete", "ingress", "shop", "-n", "apps"]);
    eventually(
        "the deleted Ingress is no longer served",
        Duration::from_secs(20),
        || async { get("shop.example.com", "/app").await.0 == 404 },
    )
    .await;
    assert_eq!(get("blog.example.com", "/").await.1["pod"], "web");

    // A fleet's agent (--gateway-selector) serves Ingresses only of the
    // IngressClasses its selector selects: none until the class is labelled.
    let fleet_port = free_port();
    let mut s = settings(&kube, "node-b", Some("sluice.dev/fleet=dmz"));
    s.kubernetes.as_mut().unwrap().ingress = sluice::kube::ingress::IngressSettings {
        http_port: fleet_port,
        https_port: free_port(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    let fleet = build(s).await.unwrap();
    wait_ready(&fleet).await;
    // Given time to sync: the class's Ingresses are not served by this fleet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get_via(fleet_port, "blog.example.com", "/").await.0, 0);
    kube.kubectl_ok(&["label", "ingressclass", "sluice", "sluice.dev/fleet=dmz"]);
    eventually(
        "the labelled class's Ingress is served by the fleet",
        Duration::from_secs(20),
        || async { get_via(fleet_port, "blog.example.com", "/").await.1["pod"] == "web" },
    )
    .await;
    fleet.shutdown().await;
    app.shutdown().await;
}

/// A team's ListenerSet on a shared Gateway, from the API server: its
/// hostname is served, a set of a namespace the Gateway does not select is
/// not, and the agent writes both sets' status, the route's parent of kind
/// ListenerSet and the Gateway's `attachedListenerSets`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_listener_sets_are_served_and_get_status() {
    let _serial = SERIAL.lock().await;
    let Some(kube) = Kubelite::start("listenerset", 27553, 28900) else {
        return;
    };
    let echo = echo().await;
    let port = free_port();
    // `objects` gives the Gateway apps/gw (admitting ListenerSets from
    // namespaces labelled team=yes) and the echo Service in apps.
    let shared = objects("gw", "fleet: a", port, "/v1", echo).replace(
        "  listeners: [",
        "  allowedListeners: {namespaces: {from: Selector, selector: {matchLabels: {team: \"yes\"}}}}\n  listeners: [",
    );
    let team = |ns: &str, host: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\n\
             metadata: {{name: team, namespace: {ns}}}\nspec:\n  \
             parentRef: {{name: gw, namespace: apps}}\n  \
             listeners: [{{name: web, port: {port}, protocol: HTTP, hostname: {host}}}]\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: team, namespace: {ns}}}\nspec:\n  \
             parentRefs: [{{kind: ListenerSet, name: team, sectionName: web}}]\n  \
             rules: [{{backendRefs: [{{name: echo, namespace: apps, port: 80}}]}}]\n\
             ---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {{name: from-{ns}, namespace: apps}}\nspec:\n  \
             from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {ns}}}]\n  \
             to: [{{group: \"\", kind: Service}}]\n"
        )
    };
    kube.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-a, labels: {{team: \"yes\"}}}}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: team-b}}\n---\n{shared}{}{}",
        team("team-a", "a.example.com"),
        team("team-b", "b.example.com"),
    ));
    let app = build(settings(&kube, "node-a", None)).await.unwrap();
    wait_ready(&app).await;
    let get = |host: &'static str| async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = http::Request::get(format!("http://127.0.0.1:{port}/"))
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
            Ok(Ok(resp)) => resp.status().as_u16(),
            _ => 0,
        }
    };
    eventually(
        "team A's hostname served through the shared Gateway",
        Duration::from_secs(20),
        || async { get("a.example.com").await == 200 },
    )
    .await;
    assert_eq!(
        get("b.example.com").await,
        404,
        "team B's set is not admitted"
    );
    let reason = |conditions: &Value, type_: &str| {
        conditions.as_array().and_then(|cs| {
            cs.iter().find(|c| c["type"] == type_).and_then(|c| {
                Some(format!(
                    "{}/{}",
                    c["status"].as_str()?,
                    c["reason"].as_str()?
                ))
            })
        })
    };
    eventually(
        "ListenerSet, route and Gateway status written",
        Duration::from_secs(20),
        || async {
            let a = kube.get("listenerset/team", "team-a");
            let b = kube.get("listenerset/team", "team-b");
            let route = kube.get("httproute/team", "team-a");
            let gw = kube.get("gateway/gw", "apps");
            let parent = &route["status"]["parents"][0];
            reason(&a["status"]["conditions"], "Accepted").as_deref() == Some("True/Accepted")
                && a["status"]["conditions"][0]["observedGeneration"] == a["metadata"]["generation"]
                && a["status"]["listeners"][0]["name"] == "web"
                && a["status"]["listeners"][0]["attachedRoutes"] == 1
                && reason(&b["status"]["conditions"], "Accepted").as_deref()
                    == Some("False/NotAllowed")
                && parent["parentRef"]["kind"] == "ListenerSet"
                && parent["parentRef"]["name"] == "team"
                && reason(&parent["conditions"], "Accepted").as_deref() == Some("True/Accepted")
                && gw["status"]["attachedListenerSets"] == 1
                // The set's listener is not one of the Gateway's.
                && gw["status"]["listeners"].as_array().map(Vec::len) == Some(1)
        },
    )
    .await;
    // A set Sluice cannot serve (TLS options it does not implement) is left
    // out alone and says why on its status.
    kube.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\n\
         metadata: {{name: broken, namespace: team-a}}\nspec:\n  \
         parentRef: {{name: gw, namespace: apps}}\n  \
         listeners: [{{name: s, port: {port}, protocol: HTTPS, hostname: s.example.com, \
         tls: {{certificateRefs: [{{name: c}}], options: {{example.com/x: \"v\"}}}}}}]\n"
    ));
    eventually(
        "the invalid ListenerSet's status names the error",
        Duration::from_secs(20),
        || async {
            let b = kube.get("listenerset/broken", "team-a");
            let c = &b["status"]["conditions"];
            reason(c, "Accepted").as_deref() == Some("False/Invalid")
                && c[0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("spec.listeners[0].tls.options"))
        },
    )
    .await;
    assert_eq!(
        get("a.example.com").await,
        200,
        "the valid set keeps serving"
    );
    // Labelling team B's namespace admits its set.
    kube.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-b, labels: {team: \"yes\"}}\n",
    );
    eventually(
        "team B's hostname served once its namespace is selected",
        Duration::from_secs(20),
        || async { get("b.example.com").await == 200 },
    )
    .await;
    eventually(
        "the Gateway counts both sets",
        Duration::from_secs(20),
        || async { kube.get("gateway/gw", "apps")["status"]["attachedListenerSets"] == 2 },
    )
    .await;
    app.shutdown().await;
}
