//! Config, discovery and secret stores outside Kubernetes, against the real
//! servers (started here on loopback, one per test): etcd, Consul 1.8.7,
//! OpenBao. The agent runs in-process on the userspace datapath.
//!
//! Each test walks one store through its life: initial load, a change, a
//! delete, an invalid document (rejected, its key named, the last good
//! configuration serving), the server down (still serving, `/readyz` says
//! so) and back (resync), and the store's own edge cases. Waits are
//! bounded polls; nothing asserts on timing.
use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use sluice::{
    app::{build, App, DatapathMode, Settings},
    sources::{driver::Store, SourceUrl, StoreSettings, TlsFiles},
};
use sluice_tests::{
    echo::{serve, Identity},
    stores::{free_port, Bao, Consul, Etcd, Pki, TempDir},
};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get(c: &HttpClient, url: &str, host: &str) -> Result<(u16, String), String> {
    let req = http::Request::get(url)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` every 50 ms until it holds (bounded by `timeout`).
async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

const WAIT: Duration = Duration::from_secs(30);

/// An echo backend, a gateway port and the documents that serve it.
struct Fixture {
    gateway: u16,
    echo: SocketAddr,
}

impl Fixture {
    async fn new() -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo = l.local_addr().unwrap();
        tokio::spawn(serve(
            l,
            Identity {
                pod: "echo".into(),
                namespace: "apps".into(),
            },
        ));
        Self {
            gateway: free_port(),
            echo,
        }
    }

    /// GatewayClass, Gateway, the echo Service and its endpoints.
    fn base(&self) -> String {
        format!(
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
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: http, port: {gateway}, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: apps}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo, namespace: apps, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {port}}}]
"#,
            gateway = self.gateway,
            port = self.echo.port()
        )
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway)
    }
}

/// An HTTPRoute `name` for `path` to the echo Service.
fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: apps}}\nspec:\n  parentRefs: [{{name: gw}}]\n  \
         rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    \
         backendRefs: [{{name: echo, port: 80}}]\n"
    )
}

fn settings(source: SourceUrl, stores: StoreSettings) -> Settings {
    let mut s = Settings::new(PathBuf::new());
    s.config_source = Some(source);
    s.stores = stores;
    s.datapath = DatapathMode::Userspace;
    s.admin_addr = "127.0.0.1:0".parse().unwrap();
    s.bpffs = None;
    s
}

/// The agent's admin answers, by path.
async fn admin(app: &App, path: &str) -> (u16, String) {
    get(
        &client(),
        &format!("http://{}{path}", app.admin_addr),
        "admin",
    )
    .await
    .unwrap_or((0, String::new()))
}

async fn config_json(app: &App) -> serde_json::Value {
    serde_json::from_str(&admin(app, "/config").await.1).unwrap_or_default()
}

/// Status of `path` through the gateway (0 when the request failed).
async fn status(f: &Fixture, path: &str) -> u16 {
    get(&client(), &f.url(path), "any.example.com")
        .await
        .map(|r| r.0)
        .unwrap_or(0)
}

/// Puts `key → value`, retrying while the store settles (a fresh server).
async fn put(store: &Store, key: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match store.put(key, value).await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("put {key}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

/// The life of a store source, the same steps for every store: `restart`
/// stops the server and starts it again (returning after it is back).
async fn lifecycle(
    name: &str,
    f: &Fixture,
    store: &Store,
    app: &App,
    mut stop: impl FnMut(),
    mut start: impl FnMut(),
    wiped_on_restart: bool,
) {
    let k = |rel: &str| store.key_for(rel);
    // Initial load.
    wait_until(WAIT, "ready after the first configuration", || async {
        admin(app, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(status(f, "/a/x").await, 200, "{name}: route a served");
    let source = config_json(app).await["source"].clone();
    assert!(
        source["url"].as_str().is_some_and(|u| u.starts_with(name)),
        "{source}"
    );
    assert!(source["position"].as_str().is_some(), "{source}");

    // A change applied.
    put(store, &k("routes/b.yaml"), &route("b", "/b")).await;
    wait_until(WAIT, "route b served", || async {
        status(f, "/b/x").await == 200
    })
    .await;

    // A delete.
    store.delete(&k("routes/a.yaml")).await.unwrap();
    wait_until(WAIT, "route a gone", || async {
        status(f, "/a/x").await == 404
    })
    .await;

    // An invalid document: rejected with its key named; the last good
    // configuration keeps serving.
    put(
        store,
        &k("routes/bad.yaml"),
        &route("bad", "/bad").replace("PathPrefix", "Nope"),
    )
    .await;
    wait_until(WAIT, "the invalid key rejected and named", || async {
        config_json(app).await["lastRejection"]
            .as_str()
            .is_some_and(|r| r.contains("routes/bad.yaml") && r.contains("path.type"))
    })
    .await;
    assert_eq!(
        status(f, "/b/x").await,
        200,
        "{name}: last good config serves"
    );
    assert!(
        config_json(app).await["source"]["notApplied"]
            .as_str()
            .is_some_and(|r| r.contains("routes/bad.yaml")),
        "{name}: /config says why the store's content is not served"
    );
    store.delete(&k("routes/bad.yaml")).await.unwrap();
    wait_until(WAIT, "the rejection cleared", || async {
        config_json(app).await["source"]["notApplied"].is_null()
    })
    .await;

    // Server down: keep serving, /readyz says so.
    stop();
    wait_until(WAIT, "/readyz names the outage", || async {
        let (code, body) = admin(app, "/readyz").await;
        code == 200 && body.contains("unreachable") && body.contains(name)
    })
    .await;
    assert_eq!(
        status(f, "/b/x").await,
        200,
        "{name}: serving while the store is down"
    );
    assert!(config_json(app).await["source"]["outage"].is_string());

    // Server back: resync (a change made once it is back is applied).
    start();
    if wiped_on_restart {
        // It came back empty (a Consul dev agent keeps nothing; its index
        // started over): the empty read is reported, not applied.
        wait_until(
            WAIT,
            "the empty read after the restart reported",
            || async {
                config_json(app).await["source"]["notApplied"]
                    .as_str()
                    .is_some_and(|r| r.contains("returned no keys"))
            },
        )
        .await;
        assert_eq!(
            status(f, "/b/x").await,
            200,
            "{name}: an empty store does not wipe the routes"
        );
        // Restored, as an operator would.
        put(store, &k("base.yaml"), &f.base()).await;
        put(store, &k("routes/b.yaml"), &route("b", "/b")).await;
    }
    put(store, &k("routes/c.yaml"), &route("c", "/c")).await;
    wait_until(WAIT, "resynced after the store came back", || async {
        status(f, "/c/x").await == 200
    })
    .await;
    wait_until(WAIT, "/readyz without the outage", || async {
        let (code, body) = admin(app, "/readyz").await;
        code == 200 && !body.contains("unreachable")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_source_with_tls_and_auth() {
    let dir = TempDir::new("etcd-test");
    let pki = Pki::new(dir.path());
    let Some(mut etcd) = Etcd::start("source", Some(&pki)) else {
        return;
    };
    let url = SourceUrl::parse(&format!("etcds://127.0.0.1:{}/sluice", etcd.port)).unwrap();
    let tls = TlsFiles {
        ca: Some(pki.ca.clone()),
        ..TlsFiles::default()
    };
    // Authentication: a root user, then auth on (through the agent's client).
    let setup = Store::connect(
        &url,
        &StoreSettings {
            tls: tls.clone(),
            ..StoreSettings::default()
        },
    )
    .unwrap()
    .unwrap();
    let Store::Etcd(plain, _) = &setup else {
        unreachable!()
    };
    plain
        .call(
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": "s3cret"}),
        )
        .await
        .unwrap();
    plain
        .call(
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
        )
        .await
        .unwrap();
    plain
        .call("/v3/auth/enable", serde_json::json!({}))
        .await
        .unwrap();
    assert!(
        setup.list().await.is_err(),
        "with auth on, an anonymous read is refused"
    );
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let stores = StoreSettings {
        tls,
        etcd_user: Some("root".into()),
        etcd_password_file: Some(password),
        ..StoreSettings::default()
    };
    let store = Store::connect(&url, &stores).unwrap().unwrap();

    let f = Fixture::new().await;
    put(&store, &store.key_for("base.yaml"), &f.base()).await;
    put(&store, &store.key_for("routes/a.yaml"), &route("a", "/a")).await;
    let app = build(settings(url, stores)).await.unwrap();
    let port = etcd.port;
    let etcd_cell = std::cell::RefCell::new(&mut etcd);
    lifecycle(
        "etcds://",
        &f,
        &store,
        &app,
        || etcd_cell.borrow_mut().stop(),
        || {
            etcd_cell.borrow_mut().restart();
            assert!(sluice_tests::stores::wait_port(port, WAIT));
        },
        false,
    )
    .await;

    // A compaction past what the agent has seen forces a full read: put,
    // compact to the latest revision, then change again.
    let Store::Etcd(c, prefix) = &store else {
        unreachable!()
    };
    let (_, rev) = c.range(prefix).await.unwrap();
    c.compact(rev).await.unwrap();
    put(&store, &store.key_for("routes/d.yaml"), &route("d", "/d")).await;
    wait_until(WAIT, "a change after a compaction applied", || async {
        status(&f, "/d/x").await == 200
    })
    .await;
    app.shutdown().await;
}

/// Reads a Consul token's secret id from a token-create answer.
fn secret_id(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect(body);
    v["SecretID"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_kv_source_with_tls_and_acls() {
    let dir = TempDir::new("consul-test");
    let pki = Pki::new(dir.path());
    let Some(mut consul) = Consul::start("source", true, Some(&pki)) else {
        sluice_tests::stores::consul_missing("consul_kv_source_with_tls_and_acls");
        return;
    };
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "sluice-master\n").unwrap();
    let url = SourceUrl::parse(&format!("consuls://127.0.0.1:{}/sluice", consul.port)).unwrap();
    let stores = StoreSettings {
        tls: TlsFiles {
            ca: Some(pki.ca.clone()),
            ..TlsFiles::default()
        },
        consul_token_file: Some(token_file.clone()),
        ..StoreSettings::default()
    };
    // The test writes with the master token; the agent reads with its own
    // token file (changed below).
    let master = dir.path().join("master-token");
    std::fs::write(&master, "sluice-master").unwrap();
    let store = Store::connect(
        &url,
        &StoreSettings {
            consul_token_file: Some(master),
            ..stores.clone()
        },
    )
    .unwrap()
    .unwrap();
    let f = Fixture::new().await;
    put(&store, &store.key_for("base.yaml"), &f.base()).await;
    put(&store, &store.key_for("routes/a.yaml"), &route("a", "/a")).await;
    let app = build(settings(url, stores)).await.unwrap();
    let consul_cell = std::cell::RefCell::new(&mut consul);
    lifecycle(
        "consuls://",
        &f,
        &store,
        &app,
        || consul_cell.borrow_mut().stop(),
        || consul_cell.borrow_mut().restart(),
        true,
    )
    .await;
    assert_eq!(status(&f, "/b/x").await, 200);

    // An ACL-filtered read: a token that may not read the prefix sees a
    // 404 (with an index), which must not wipe the routes.
    let (code, body) = consul.call("PUT", "/v1/acl/token", r#"{"Description":"no kv read"}"#);
    assert_eq!(code, 200, "{body}");
    std::fs::write(&token_file, secret_id(&body)).unwrap();
    // The read in flight went out with the old token: its answer (route e)
    // is applied; the next read goes out with the new one.
    put(&store, &store.key_for("routes/e.yaml"), &route("e", "/e")).await;
    wait_until(WAIT, "route e served", || async {
        status(&f, "/e/x").await == 200
    })
    .await;
    put(&store, &store.key_for("routes/g.yaml"), &route("g", "/g")).await;
    wait_until(WAIT, "/config reports the empty read", || async {
        config_json(&app).await["source"]["notApplied"]
            .as_str()
            .is_some_and(|r| r.contains("returned no keys") && r.contains("kept"))
    })
    .await;
    for path in ["/b/x", "/c/x", "/e/x"] {
        assert_eq!(
            status(&f, path).await,
            200,
            "{path} still served after the ACL-empty read"
        );
    }
    assert_eq!(
        status(&f, "/g/x").await,
        404,
        "what the token cannot read is not applied"
    );
    // A token that reads again: noticed without another change (reads of
    // an empty prefix block only briefly), and everything is applied.
    std::fs::write(&token_file, "sluice-master").unwrap();
    wait_until(WAIT, "applied again with a token that reads", || async {
        status(&f, "/g/x").await == 200
    })
    .await;
    app.shutdown().await;
}

/// The echo pod that answered `path` (None when the request failed).
async fn pod(f: &Fixture, path: &str) -> Option<String> {
    let (code, body) = get(&client(), &f.url(path), "any.example.com").await.ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["pod"].as_str().map(str::to_owned)
}

/// An echo backend claiming to be `pod`; returns its port.
async fn echo_pod(pod: &str) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(serve(
        l,
        Identity {
            pod: pod.into(),
            namespace: "apps".into(),
        },
    ));
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_service_discovery_follows_health_checks() {
    let Some(consul) = Consul::start("discovery", false, None) else {
        sluice_tests::stores::consul_missing("consul_service_discovery_follows_health_checks");
        return;
    };
    // web-1 with its own address, web-2 without (Node.Address is used),
    // web-3 without the tag the ConsulService asks for.
    for (id, tags, with_address) in [
        ("web-1", "prod", true),
        ("web-2", "prod", false),
        ("web-3", "canary", true),
    ] {
        let port = echo_pod(id).await;
        let address = if with_address {
            r#""Address":"127.0.0.1","#
        } else {
            ""
        };
        let (code, body) = consul.call(
            "PUT",
            "/v1/agent/service/register",
            &format!(
                r#"{{"ID":"{id}","Name":"web","Tags":["{tags}"],{address}"Port":{port},
                   "Check":{{"CheckID":"{id}-ttl","TTL":"300s","Status":"passing"}}}}"#
            ),
        );
        assert_eq!(code, 200, "{body}");
    }
    let f = Fixture::new().await;
    let dir = TempDir::new("discovery-config");
    std::fs::write(dir.path().join("base.yaml"), f.base()).unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        "apiVersion: sluice.dev/v1alpha1\nkind: ConsulService\nmetadata: {name: web, namespace: apps}\n\
         spec: {service: web, tags: [prod]}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: apps}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /web}}]\n    \
         backendRefs: [{group: sluice.dev, kind: ConsulService, name: web}]\n",
    )
    .unwrap();
    let mut s = settings(
        SourceUrl::File(dir.path().to_path_buf()),
        StoreSettings::default(),
    );
    s.config_dir = dir.path().to_path_buf();
    s.consul_discovery =
        Some(SourceUrl::parse(&format!("consul://127.0.0.1:{}", consul.http_port)).unwrap());
    let app = build(s).await.unwrap();

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(pod(&f, "/web").await.expect("a healthy instance answers"));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["web-1", "web-2"],
        "both passing prod instances, web-2 through Node.Address; not the canary"
    );

    // web-2's check fails: it leaves the rotation.
    let (code, _) = consul.call("PUT", "/v1/agent/check/fail/web-2-ttl", "");
    assert_eq!(code, 200);
    wait_until(WAIT, "web-2 out of the rotation", || async {
        let mut pods = Vec::new();
        for _ in 0..6 {
            pods.push(pod(&f, "/web").await);
        }
        pods.iter().all(|p| p.as_deref() == Some("web-1"))
    })
    .await;
    for _ in 0..20 {
        assert_eq!(
            pod(&f, "/web").await.as_deref(),
            Some("web-1"),
            "no request to the failing instance, none failed"
        );
    }
    // Passing again: back in.
    consul.call("PUT", "/v1/agent/check/pass/web-2-ttl", "");
    wait_until(WAIT, "web-2 back in the rotation", || async {
        let mut hit = false;
        for _ in 0..6 {
            hit |= pod(&f, "/web").await.as_deref() == Some("web-2");
        }
        hit
    })
    .await;
    app.shutdown().await;
}

/// A CA that signs leaf certificates for `secure.example.com`.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// (certificate PEM, key PEM, certificate DER).
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let params = rcgen::CertificateParams::new(vec!["secure.example.com".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }
}

type TlsSender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A TLS connection to the gateway: its request sender and the
/// certificate the server presented.
async fn tls_connect(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<(TlsSender, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("secure.example.com").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((sender, cert))
}

async fn tls_get(sender: &mut TlsSender) -> Result<u16, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = http::Request::get("/secure")
        .header("host", "secure.example.com")
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_api_certificate_rotates_without_failed_requests() {
    let Some(bao) = Bao::start("secrets") else {
        return;
    };
    let ca = Ca::new();
    let (crt1, key1, der1) = ca.leaf();
    let (crt2, key2, der2) = ca.leaf();
    let write = |crt: &str, key: &str| {
        let body = serde_json::json!({"data": {"tls.crt": crt, "tls.key": key}}).to_string();
        let (code, out) = bao.call("POST", "/v1/secret/data/sluice/apps/site-tls", &body);
        assert_eq!(code, 200, "{out}");
    };
    write(&crt1, &key1);
    // A token that may only read under the prefix and lives 6 s unless renewed.
    let policy = r#"path "secret/data/sluice/*" { capabilities = ["read"] }
path "secret/metadata/sluice/*" { capabilities = ["read"] }"#;
    let (code, out) = bao.call(
        "PUT",
        "/v1/sys/policies/acl/sluice-read",
        &serde_json::json!({ "policy": policy }).to_string(),
    );
    assert!(code == 200 || code == 204, "{out}");
    let (code, out) = bao.call(
        "POST",
        "/v1/auth/token/create",
        r#"{"policies":["sluice-read"],"ttl":"6s","explicit_max_ttl":"10m","renewable":true}"#,
    );
    assert_eq!(code, 200, "{out}");
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dir = TempDir::new("vault-config");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token["auth"]["client_token"].as_str().unwrap()).unwrap();

    let f = Fixture::new().await;
    let https = free_port();
    std::fs::write(
        dir.path().join("gw.yaml"),
        format!(
            "{base}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: secure, namespace: apps}}\nspec:\n  gatewayClassName: sluice\n  \
             addresses: [{{value: 127.0.0.1}}]\n  listeners:\n  - name: https\n    port: {https}\n    \
             protocol: HTTPS\n    hostname: secure.example.com\n    \
             tls: {{certificateRefs: [{{name: site-tls}}]}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: secure, namespace: apps}}\nspec:\n  parentRefs: [{{name: secure}}]\n  \
             rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]\n",
            base = f.base()
        ),
    )
    .unwrap();
    let mut s = settings(
        SourceUrl::File(dir.path().to_path_buf()),
        StoreSettings::default(),
    );
    s.config_dir = dir.path().to_path_buf();
    s.secret_source = Some(
        sluice::sources::vault::VaultUrl::parse(&format!(
            "vault://127.0.0.1:{}/secret/sluice",
            bao.port
        ))
        .unwrap(),
    );
    s.secret_token = sluice::sources::Secret::File(token_file);
    s.secret_poll = Duration::from_secs(1);
    let app = build(s).await.unwrap();
    let tls = ca.client_config();
    let (mut kept, cert) = tls_connect(https, tls.clone()).await.unwrap();
    assert_eq!(cert, der1, "the certificate from the store is served");
    assert_eq!(tls_get(&mut kept).await, Ok(200));

    // Traffic throughout: one kept-alive connection and new connections.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, tls) = (stop.clone(), tls.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match tls_get(&mut kept).await {
                    Ok(200) => ok += 1,
                    other => failed.push(format!("kept connection: {other:?}")),
                }
                match tls_connect(https, tls.clone()).await {
                    Ok((mut s, _)) => match tls_get(&mut s).await {
                        Ok(200) => ok += 1,
                        other => failed.push(format!("new connection: {other:?}")),
                    },
                    Err(e) => failed.push(format!("handshake: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, failed)
        })
    };
    // Outlive the token's first TTL: the rotation below is only seen if
    // the agent renewed it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    write(&crt2, &key2);
    wait_until(WAIT, "new connections get the rotated certificate", || {
        let (tls, want) = (tls.clone(), der2.clone());
        async move { tls_connect(https, tls).await.is_ok_and(|(_, c)| c == want) }
    })
    .await;
    // A few more rounds on the connection opened before the rotation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "failed requests during the rotation: {failed:?}"
    );
    assert!(ok > 20, "traffic ran throughout ({ok} requests)");
    app.shutdown().await;
}
