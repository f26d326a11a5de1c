//! The operators' view, against the real app in process (userspace datapath,
//! loopback only): the status page rendered by a real browser (headless
//! Chromium driven over its DevTools protocol), the Grafana dashboard's
//! queries checked against the agent's `/metrics`, and the exposition checked
//! against the Prometheus conventions (`promtool check metrics` plus the same
//! rules in code, and a behavioural check that request data never becomes a
//! label value).
//!
//! Chromium and promtool come from `cargo xtask setup`. Without them these
//! tests say so loudly and skip that part; with `CI=true` a missing tool
//! fails the test.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{json, Value};
use sluice::app::App;

/// A config directory removed when the test ends, passing or not.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two Gateways (shards), a route with an API-key policy, a route on the
/// second Gateway, and some traffic: allowed, denied by the policy, and
/// unmatched.
struct Env {
    app: App,
    dir: TempDir,
    public: TestClient,
    internal: TestClient,
    backend: SocketAddr,
}

const KEY: &str = "key-ops-1";

impl Env {
    async fn start() -> Env {
        let backend = echo_backend("orders").await;
        let (public, internal) = (free_port(), free_port());
        let dir = TempDir(config_dir());
        let yaml = format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: public, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: web, port: {public}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: internal, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: intra, port: {internal}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: orders, namespace: shop}}
spec:
  parentRefs: [{{name: public, namespace: infra}}]
  hostnames: [shop.example.com]
  rules:
  - backendRefs: [{{name: orders, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reports, namespace: shop}}
spec:
  parentRefs: [{{name: internal, namespace: infra}}]
  rules:
  - backendRefs: [{{name: orders, port: 8080}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: shop}}
stringData: {{ops: {KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: keys, namespace: shop}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}}]
  apiKeys:
    secretRefs: [{{name: keys}}]
{svc}"#,
            svc = service_yaml("shop", "orders", backend),
        );
        write_config(&dir.0, "all.yaml", &yaml);
        let app = start(&dir.0).await;
        Env {
            app,
            dir,
            public: TestClient::new(public),
            internal: TestClient::new(internal),
            backend,
        }
    }

    /// `n` requests to shop/orders with the API key (200).
    async fn allowed(&self, n: usize) {
        for _ in 0..n {
            let r = self
                .public
                .send(Method::GET, "shop.example.com", "/o", &[("x-api-key", KEY)])
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    }

    /// Traffic of every kind: 3 allowed and 2 denied (no key) on shop/orders,
    /// 1 unmatched on infra/public, 1 to shop/reports on infra/internal.
    async fn traffic(&self) {
        self.allowed(3).await;
        for _ in 0..2 {
            let r = self.public.get("shop.example.com", "/o").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
        let r = self.public.get("nobody.example.com", "/").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = self.internal.get("reports.internal", "/r").await;
        assert_eq!(r.status, StatusCode::OK);
    }

    /// Writes an invalid document and waits until the agent has rejected it.
    async fn reject_a_change(&self) -> String {
        write_config(
            &self.dir.0,
            "broken.yaml",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: broken, namespace: shop}\nspec:\n  rules:\n  \
             - matches: [{path: {type: Regexy, value: /x}}]\n",
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let config: Value =
                serde_json::from_str(&admin_get(&self.app, "/config").await).unwrap();
            if let Some(err) = config["lastRejection"].as_str() {
                assert!(err.contains("broken.yaml"), "{err}");
                return err.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the broken change was never rejected"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// GET with an `Accept` header; (status, content type, body).
async fn get_with_accept(url: &str, accept: &str) -> (StatusCode, String, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(url)
        .header("accept", accept)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.expect("admin request");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The path of a tool, or `None` after saying loudly why the caller skips;
/// with `CI=true` a missing tool fails the test instead.
fn tool(name: &str, env: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !ci(),
            "CI=true: {name} is missing (Debian package {package}; `cargo xtask setup` installs it)"
        );
        eprintln!(
            "\n!!! {name} not found (Debian package {package}, or set {env}): SKIPPING the part \
             of this test that needs it. `cargo xtask setup` installs it.\n"
        );
    }
    found
}

// ---------------------------------------------------------------------------
// /api/overview

#[tokio::test]
async fn overview_reports_shards_routes_policies_upstreams_and_rejections() {
    let env = Env::start().await;
    env.traffic().await;
    let o: Value = serde_json::from_str(&admin_get(&env.app, "/api/overview").await).unwrap();

    assert_eq!(o["datapath"]["mode"], "userspace");
    assert!(o["ebpf"].is_null());
    assert_eq!(o["agent"]["ready"], true);
    assert!(
        o["agent"]["process"]["residentMemoryBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(o["config"]["source"]["kind"], "directory");
    assert_eq!(o["config"]["reloadsApplied"], 1);
    assert!(o["config"]["lastRejection"].is_null());

    let shards: BTreeMap<&str, &Value> = o["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["gateway"].as_str().unwrap(), s))
        .collect();
    assert_eq!(
        shards.keys().copied().collect::<Vec<_>>(),
        ["infra/internal", "infra/public"]
    );
    let public = shards["infra/public"];
    assert_eq!(public["listeners"][0]["name"], "web");
    assert_eq!(public["listeners"][0]["protocol"], "HTTP");
    assert_eq!(public["requests"]["total"], 6);
    assert_eq!(public["unmatched"]["total"], 1);
    assert_eq!(public["unmatched"]["byReason"]["no_route"], 1);
    assert_eq!(public["latency"]["count"], 6);
    assert!(public["connections"]["limit"].as_u64().unwrap() > 0);
    let orders = &public["routes"][0];
    assert_eq!(orders["name"], "shop/orders");
    assert_eq!(orders["hostnames"], json!(["shop.example.com"]));
    assert_eq!(orders["requests"]["total"], 5);
    assert_eq!(orders["requests"]["byClass"], json!({"2xx": 3, "4xx": 2}));
    assert_eq!(orders["requests"]["byReason"]["api_key_missing"], 2);
    assert_eq!(
        orders["policies"],
        json!([{"kind": "SluicePolicy", "name": "shop/keys", "sections": ["apiKeys"]}])
    );
    assert_eq!(
        orders["backends"],
        json!([{"upstream": "shop/orders:8080", "weight": 1, "mirror": false}])
    );
    let internal = shards["infra/internal"];
    assert_eq!(internal["routes"][0]["name"], "shop/reports");
    assert_eq!(internal["routes"][0]["requests"]["total"], 1);
    assert_eq!(internal["routes"][0]["policies"], json!([]));

    let upstream = &o["upstreams"][0];
    assert_eq!(upstream["name"], "shop/orders:8080");
    assert_eq!(
        upstream["endpoints"],
        json!([{"address": env.backend.to_string(), "state": "ready"}])
    );
    assert_eq!(upstream["usedBy"], json!(["shop/orders", "shop/reports"]));

    let policy = o["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "shop/keys")
        .expect("policy shop/keys listed");
    assert_eq!(policy["kind"], "SluicePolicy");
    assert_eq!(
        policy["decisions"]["apiKeys"],
        json!({"allow": 3, "deny:api_key_missing": 2})
    );
    assert_eq!(policy["ancestors"][0]["gateway"], "infra/public");
    assert_eq!(policy["ancestors"][0]["accepted"], true);

    // A rejected change: reported with its error; the old config serves on.
    let error = env.reject_a_change().await;
    let o: Value = serde_json::from_str(&admin_get(&env.app, "/api/overview").await).unwrap();
    assert_eq!(o["config"]["lastRejection"], error);
    assert_eq!(o["config"]["reloadsRejected"], 1);
    assert!(
        o["config"]["lastRejectedAt"].as_f64().unwrap()
            >= o["config"]["lastAppliedAt"].as_f64().unwrap()
    );
    assert_eq!(o["config"]["generation"], 1);
    env.app.shutdown().await;
}

// ---------------------------------------------------------------------------
// The status page in a real browser

/// Headless Chromium with a DevTools endpoint, in its own process group so
/// that all of its processes (and only those) are ended with it; its
/// profile directory is removed with it.
struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    fn launch(chromium: &Path) -> Browser {
        let profile = std::env::temp_dir().join(format!("sluice-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(profile.join("chromium.log")).unwrap();
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            // Nothing but IP literals resolves: the browser cannot reach
            // anything off this machine by name.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start chromium");
        Browser { child, profile }
    }

    /// The DevTools port, from the file Chromium writes once it listens.
    async fn devtools_port(&mut self) -> u16 {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(port) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next()?.trim().parse().ok())
            {
                return port;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromium exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: signals the process group this test created (setpgid 0 at spawn).
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever of the group is left.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        // Renderers and helpers outlive the main process briefly: wait until
        // the group is empty (signal 0 fails with ESRCH then).
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only checks whether the group still exists.
        while unsafe { libc::kill(group, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One DevTools protocol session with a page.
struct Page {
    ws: Ws,
    next_id: u64,
}

impl Page {
    /// Connects to the first page target of the browser on `port`.
    async fn open(port: u16) -> Page {
        let (status, _, list) =
            get_with_accept(&format!("http://127.0.0.1:{port}/json/list"), "*/*").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let targets: Vec<Value> = serde_json::from_str(&list).unwrap();
        let url = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {list}"))
            .to_owned();
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("DevTools websocket");
        Page { ws, next_id: 0 }
    }

    /// Sends a command and returns its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// Sends a command; its result, or the error the browser answered.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(msg))
            .await
            .unwrap();
        let wait = async {
            while let Some(msg) = self.ws.next().await {
                let msg = msg.expect("DevTools message");
                let Ok(text) = msg.to_text() else { continue };
                let v: Value = serde_json::from_str(text).unwrap_or_default();
                if v["id"] == id {
                    return match v["error"].is_null() {
                        true => Ok(v["result"].clone()),
                        false => Err(v["error"].clone()),
                    };
                }
            }
            panic!("DevTools connection closed during {method}");
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within 60 s"))
    }

    /// Evaluates a JavaScript expression in the page; its JSON value.
    async fn eval(&mut self, expression: &str) -> Value {
        match self.try_eval(expression).await {
            Ok(v) => v,
            Err(e) => panic!("{expression}: {e}"),
        }
    }

    /// Like [`Self::eval`], returning what went wrong (the page may be
    /// between documents while it navigates).
    async fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let r = self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await?;
        match r["exceptionDetails"].is_null() {
            true => Ok(r["result"]["value"].clone()),
            false => Err(r["exceptionDetails"].clone()),
        }
    }

    /// Waits until `expression` is true in the page (the page's own polling
    /// fills it in), failing with `what` and the page text after a generous
    /// deadline.
    async fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.try_eval(expression).await == Ok(json!(true)) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body.innerText").await;
                panic!(
                    "the page never showed {what}; it shows:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The text of the first element matching a CSS selector, as JavaScript.
fn text_of(selector: &str) -> String {
    format!(
        "(document.querySelector({}) || {{}}).textContent",
        serde_json::to_string(selector).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_live_data_in_chromium() {
    let Some(chromium) = tool("chromium", "SLUICE_CHROMIUM", "chromium") else {
        return;
    };
    let env = Env::start().await;
    env.traffic().await;

    // The page itself: self-contained, and the admin port says so to the browser.
    let admin = format!("http://{}", env.app.admin_addr);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .get(format!("{admin}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for external in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "the page refers to {external:?}");
    }

    let mut browser = Browser::launch(&chromium);
    let port = browser.devtools_port().await;
    let mut page = Page::open(port).await;
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    page.call(
        "Page.navigate",
        json!({"url": format!("{admin}/?refresh=0.5")}),
    )
    .await;

    // Filled in by the page's first polls.
    let orders = r#"[data-shard="infra/public"] [data-route="shop/orders"]"#;
    page.wait_for(
        &format!("{} === '5'", text_of(&format!("{orders} .total"))),
        "5 requests on shop/orders",
    )
    .await;
    let text = page.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    for expected in [
        "infra/public",
        "infra/internal",
        "shop/orders",
        "shop/reports",
        "shop.example.com",
        "shop/keys (apiKeys)",
        "api_key_missing 2",
        "no_route 1",
        "shop/orders:8080",
        &env.backend.to_string(),
        "userspace",
    ] {
        assert!(text.contains(expected), "page lacks {expected:?}:\n{text}");
    }
    assert_eq!(
        page.eval(&text_of(
            r#"[data-shard="infra/internal"] [data-route="shop/reports"] .total"#
        ))
        .await,
        "1"
    );
    assert_eq!(
        page.eval(&text_of(r#"[data-shard="infra/public"] .shard-total"#))
            .await,
        "6"
    );
    assert_eq!(
        page.eval("document.getElementById('rejection') === null")
            .await,
        true
    );

    // More traffic and a rejected change, seen by the page's own polling
    // (no reload): the count moves and the error shows.
    env.allowed(2).await;
    let error = env.reject_a_change().await;
    page.wait_for(
        &format!("{} === '7'", text_of(&format!("{orders} .total"))),
        "7 requests on shop/orders after more traffic",
    )
    .await;
    page.wait_for(
        &format!(
            "({} || '').includes({})",
            text_of("#rejection pre"),
            serde_json::to_string(&error).unwrap()
        ),
        "the rejected change's error",
    )
    .await;
    let banner = page.eval(&text_of("#rejection b")).await;
    assert!(
        banner.as_str().unwrap().contains("keeps serving"),
        "{banner}"
    );

    // `SLUICE_STATUS_SCREENSHOT=docs/status-page.png` keeps a picture of it.
    if let Some(path) = std::env::var_os("SLUICE_STATUS_SCREENSHOT") {
        let height = page.eval("document.documentElement.scrollHeight").await;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        // One more poll at the new size, so rates have two samples.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let shot = page
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::write(&path, png).unwrap();
        eprintln!("status page screenshot written to {}", path.display());
    }
    drop(page);
    drop(browser);
    env.app.shutdown().await;
}

// ---------------------------------------------------------------------------
// Grafana dashboard

/// Metric names a PromQL expression (or a Grafana `label_values(...)`
/// query) selects: identifiers outside strings, label matchers, ranges and
/// grouping clauses that are neither functions nor keywords.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Drop strings, {matchers} and [ranges]: what is left are names,
    // functions, keywords, numbers and grouping clauses.
    let mut bare = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                bare.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                bare.push(' ');
            }
            c => bare.push(c),
        }
    }
    let grouping =
        regex::Regex::new(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
            .unwrap();
    let bare = grouping.replace_all(&bare, " ");
    let ident = regex::Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").unwrap();
    const KEYWORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
    ];
    for m in ident.find_iter(&bare) {
        let before = bare[..m.start()].chars().next_back();
        let after = bare[m.end()..].trim_start().chars().next();
        let is_function = after == Some('(');
        // Grafana variables ($instance, $__rate_interval) and parts of numbers (1e3).
        let is_part = matches!(before, Some('$' | '.' | '0'..='9'));
        let word = m.as_str();
        if is_function || is_part || KEYWORDS.contains(&word) || word == "Inf" || word == "NaN" {
            continue;
        }
        out.insert(word.to_owned());
    }
    // label_values(metric{...}, label): the second argument is a label.
    if let Some(args) = expr.trim().strip_prefix("label_values(") {
        let label = args
            .rsplit(',')
            .next()
            .unwrap_or("")
            .trim_end_matches(')')
            .trim();
        out.remove(label);
    }
    out
}

/// Every PromQL expression of the dashboard: panel targets (rows nest
/// panels) and query variables.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for p in list.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(
                    t["expr"]
                        .as_str()
                        .expect("every target has an expr")
                        .to_owned(),
                );
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            out.push(v["query"]["query"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// (sample names with at least one sample, labels seen per sample name)
/// of a text-format exposition.
fn exposed(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sluice::admin::exposition::samples(metrics) {
        out.entry(s.name)
            .or_default()
            .extend(s.labels.into_iter().map(|(k, _)| k));
    }
    out
}

#[test]
fn promql_metric_extraction() {
    let names = |e: &str| promql_metrics(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (shard, le) (rate(a_bucket{shard=~"$shard"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names(
            r#"sum(rate(x_total{reason!="upstream"}[5m])) / on(job) group_left(mode) y_info > 1e3"#
        ),
        ["x_total", "y_info"]
    );
    assert_eq!(names("time() - min(t_seconds)"), ["t_seconds"]);
    assert_eq!(
        names(r#"label_values(m_total{instance=~"$instance"}, shard)"#),
        ["m_total"]
    );
}

#[tokio::test]
async fn dashboard_queries_only_metrics_the_agent_exposes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/sluice.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is valid JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "{} queries", queries.len());

    // An agent that served requests and has a policy denying some: every
    // userspace metric has samples.
    let env = Env::start().await;
    env.traffic().await;
    let metrics = admin_get(&env.app, "/metrics").await;
    let samples = exposed(&metrics);

    // Families only the eBPF datapath has samples of, with their labels:
    // the list the kernel collector encodes (tests/tests/ebpf_datapath.rs
    // checks an eBPF agent exposes each with exactly these labels), and the
    // reconciler's counters, which every agent declares but only the eBPF
    // datapath counts.
    let mut ebpf_only: BTreeMap<String, BTreeSet<String>> = sluice::metrics::KERNEL_FAMILIES
        .iter()
        .map(|f| {
            let labels = f.labels.iter().map(|l| l.to_string()).collect();
            (f.sample_name(), labels)
        })
        .collect();
    for declared in [
        "sluice_bpf_map_drift_total",
        "sluice_bpf_reconcile_errors_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {declared} counter")),
            "{declared} not declared"
        );
        ebpf_only.insert(declared.to_owned(), ["map".to_owned()].into());
    }
    let labels_of = |name: &str| samples.get(name).or_else(|| ebpf_only.get(name));

    let mut queried = BTreeSet::new();
    let mut problems = Vec::new();
    let grouping = regex::Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let matchers = regex::Regex::new(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}").unwrap();
    let matcher_label =
        regex::Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*""#).unwrap();
    // Labels Prometheus adds to every scraped series.
    let target_labels = ["instance", "job"];
    for q in &queries {
        let names = promql_metrics(q);
        if names.is_empty() {
            problems.push(format!("no metric found in {q}"));
        }
        for name in &names {
            if ebpf_only.contains_key(name) {
                assert!(
                    !samples.contains_key(name),
                    "{name} is listed as eBPF-only but a userspace agent has samples of it"
                );
            } else if !samples.contains_key(name) {
                problems.push(format!("{name} (in {q}) has no sample in /metrics"));
            }
        }
        // Label matchers name labels the metric has.
        for m in matchers.captures_iter(q) {
            let (name, body) = (&m[1], &m[2]);
            let Some(labels) = labels_of(name) else {
                continue;
            };
            for l in matcher_label.captures_iter(body) {
                if !labels.contains(&l[1]) && !target_labels.contains(&&l[1]) {
                    problems.push(format!("{name} has no label {} (in {q})", &l[1]));
                }
            }
        }
        // Grouping labels exist on some metric of the expression.
        for g in grouping.captures_iter(q) {
            for label in g[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
                let known = target_labels.contains(&label)
                    || names
                        .iter()
                        .any(|n| labels_of(n).is_some_and(|l| l.contains(label)));
                if !known {
                    problems.push(format!("no metric of {q} has label {label}"));
                }
            }
        }
        queried.extend(names);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // What the issue asks the dashboard to show is there.
    for wanted in [
        "sluice_http_requests_total",
        "sluice_http_request_duration_seconds_bucket",
        "sluice_policy_decisions_total",
        "sluice_xdp_packets_total",
        "sluice_config_reloads_total",
        "sluice_config_source_stale_seconds",
        "sluice_bpf_map_entries",
        "sluice_shard_connections",
    ] {
        assert!(
            queried.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
    env.app.shutdown().await;
}

// ---------------------------------------------------------------------------
// Prometheus conventions

#[tokio::test]
async fn metrics_follow_prometheus_conventions() {
    let env = Env::start().await;
    env.traffic().await;
    let url = format!("http://{}/metrics", env.app.admin_addr);

    // Prometheus asks for OpenMetrics and gets it; other clients get 0.0.4.
    let (status, ctype, openmetrics) = get_with_accept(
        &url,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(openmetrics.ends_with("# EOF\n"));
    let (status, ctype, text) = get_with_accept(&url, "*/*").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");

    if let Some(promtool) = tool("promtool", "SLUICE_PROMTOOL", "prometheus") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The same rules in code, plus the ones promtool does not check.
    let mut families: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for line in text.lines() {
        for (prefix, help) in [("# HELP ", true), ("# TYPE ", false)] {
            if let Some((name, rest)) = line.strip_prefix(prefix).and_then(|r| r.split_once(' ')) {
                let entry = families.entry(name.to_owned()).or_default();
                let slot = if help { &mut entry.0 } else { &mut entry.1 };
                *slot = Some(rest.to_owned());
            }
        }
    }
    assert!(families.len() > 15, "{families:?}");
    let non_base_units = [
        "milliseconds",
        "microseconds",
        "nanoseconds",
        "minutes",
        "hours",
        "days",
        "ms",
        "us",
        "ns",
        "kilobytes",
        "megabytes",
        "gigabytes",
        "kb",
        "mb",
        "gb",
        "percent",
        "bits",
    ];
    let high_cardinality = [
        "path",
        "url",
        "uri",
        "host",
        "authority",
        "ip",
        "client",
        "client_ip",
        "peer",
        "remote_addr",
        "source_ip",
        "user",
        "user_id",
        "sub",
        "token",
        "api_key",
        "query",
        "header",
        "user_agent",
        "method",
        "pod_ip",
        "connection",
    ];
    let mut problems = Vec::new();
    for (name, (help, kind)) in &families {
        let kind = kind.as_deref().unwrap_or("");
        if help.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("{name}: no HELP"));
        }
        if (kind == "counter") != name.ends_with("_total") {
            problems.push(format!(
                "{name}: a {kind} {} end in _total",
                if kind == "counter" {
                    "must"
                } else {
                    "must not"
                }
            ));
        }
        let words: Vec<&str> = name.split('_').collect();
        if let Some(unit) = words.iter().find(|w| non_base_units.contains(w)) {
            problems.push(format!(
                "{name}: {unit} is not a base unit (seconds, bytes, ratio)"
            ));
        }
        let base = name.trim_end_matches("_total");
        let timed = ["duration", "latency", "time", "age", "stale", "timestamp"]
            .iter()
            .any(|w| words.contains(w));
        if timed && !base.ends_with("_seconds") {
            problems.push(format!(
                "{name}: a time must be in seconds (suffix _seconds)"
            ));
        }
        let sized = ["size", "memory"].iter().any(|w| words.contains(w));
        if sized && !base.ends_with("_bytes") {
            problems.push(format!("{name}: a size must be in bytes (suffix _bytes)"));
        }
        if kind == "histogram" && !["_seconds", "_bytes"].iter().any(|u| name.ends_with(u)) {
            problems.push(format!("{name}: a histogram needs its unit in the name"));
        }
    }
    let samples = sluice::admin::exposition::samples(&text);
    for s in &samples {
        for (label, _) in &s.labels {
            if high_cardinality.contains(&label.as_str()) {
                problems.push(format!("{}: label {label} takes request data", s.name));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Request data never becomes a label value: requests with unique paths,
    // hosts, queries, headers, credentials and forwarded addresses leave no
    // trace in /metrics, and the series count does not grow with them.
    let series_before = samples.len();
    for i in 0..20 {
        let marker = format!("zq{i}marker");
        for (client, host) in [
            (&env.public, format!("{marker}.example.com")),
            (&env.public, "shop.example.com".to_owned()),
            (&env.internal, format!("{marker}.internal")),
        ] {
            client
                .send(
                    Method::GET,
                    &host,
                    &format!("/{marker}/p?q={marker}"),
                    &[
                        ("x-api-key", &format!("{marker}-key")),
                        ("user-agent", &marker),
                        ("x-forwarded-for", "203.0.113.7"),
                        ("x-request-id", &marker),
                    ],
                )
                .await;
        }
    }
    let after = admin_get(&env.app, "/metrics").await;
    assert!(
        !after.contains("marker"),
        "request data in a label:\n{after}"
    );
    assert!(
        !after.contains("203.0.113.7"),
        "a client address in a label:\n{after}"
    );
    let series_after = sluice::admin::exposition::samples(&after).len();
    // New combinations of bounded labels may appear (invalid key → a new
    // reason), never one per request: 60 requests, at most a handful more.
    assert!(
        series_after <= series_before + 6,
        "{series_before} series before, {series_after} after 60 distinct requests"
    );
    env.app.shutdown().await;
}
