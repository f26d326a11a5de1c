//! `rateLimit` end to end, in process: the real app on loopback (userspace
//! datapath), and for cluster rules a real `redis-server` the test starts.
//! Counts, never timings: where time matters, a fake clock is moved by hand
//! (the cluster accuracy run) or a generous bound is polled.
mod common;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{redis::RedisServer, *};
use http::StatusCode;
use sluice::{
    app::{self, DatapathMode, Settings},
    policy::ratelimit::{
        cluster::{ClusterStore, CounterLabel, Decision, StoreSettings, WallClock, Window},
        metrics::RateLimitMetrics,
        spec::FailureMode,
        ServiceOptions,
    },
};

async fn setup(policy: &str, rate_limits: ServiceOptions) -> (app::App, TestClient) {
    let backend = echo_backend("orders").await;
    let port = free_port();
    let dir = config_dir();
    let text = format!(
        r#"{gw}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: orders, namespace: team-a}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [a.example.com]
  rules: [{{backendRefs: [{{name: orders, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: other, namespace: team-a}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [b.example.com]
  rules: [{{backendRefs: [{{name: orders, port: 8080}}]}}]
{svc}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: team-a}}
stringData: {{ci: key-ci, web: key-web}}
{policy}
"#,
        gw = gateway_yaml(port),
        svc = service_yaml("team-a", "orders", backend),
    );
    write_config(&dir, "all.yaml", &text);
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    settings.rate_limits = rate_limits;
    let app = app::build(settings).await.expect("app starts");
    (app, TestClient::new(port))
}

async fn admin_delete(app: &app::App, path: &str) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::delete(format!("http://{}{path}", app.admin_addr))
        .body(http_body_util::Full::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const LOCAL: &str = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: limits, namespace: infra}
spec:
  targetRefs: [{kind: Gateway, name: gw}]
  rateLimit:
    local:
    - {name: per-route, requests: 3, unit: Minute}
    - name: strict
      requests: 100
      unit: Minute
      key: {header: x-tenant}
      penalty: {after: 2, within: 1m, block: 10m}
"#;

#[tokio::test]
async fn local_limits_answer_429_with_headers_per_route_and_count_the_reason() {
    let (app, c) = setup(LOCAL, ServiceOptions::default()).await;
    for i in 0..3 {
        let r = c.get("a.example.com", "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.body);
        assert_eq!(
            r.headers["ratelimit-policy"],
            "\"per-route\";q=3;w=60, \"strict\";q=100;w=60"
        );
        let state = r.headers["ratelimit"].to_str().unwrap();
        assert!(
            state.starts_with(&format!("\"per-route\";r={};t=", 2 - i)),
            "{state}"
        );
    }
    let r = c.get("a.example.com", "/").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "a request every 20 s: {retry}");
    assert!(r.body.contains("per-route"), "{}", r.body);
    // A Gateway rule is per route unless shared: the other route has its own.
    assert_eq!(c.get("b.example.com", "/").await.status, StatusCode::OK);

    let metrics = admin_get(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"sluice_policy_decisions_total{namespace="infra",policy="limits",section="rateLimit",decision="deny",reason="rate_limited"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="team-a/orders",status_class="4xx",reason="rate_limited"} 1"#)
    );
    app.shutdown().await;
}

const SHADOW: &str = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: trial, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  rateLimit:
    headers: Off
    local:
    - {name: trial, requests: 1, unit: Hour, shadow: true}
"#;

#[tokio::test]
async fn shadow_rules_serve_count_and_send_no_headers_when_off() {
    let (app, c) = setup(SHADOW, ServiceOptions::default()).await;
    for i in 0..3 {
        let r = c.get("a.example.com", "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.body);
        assert!(
            !r.headers.contains_key("ratelimit-policy"),
            "{:?}",
            r.headers
        );
        assert!(!r.headers.contains_key("ratelimit"), "{:?}", r.headers);
    }
    let metrics = admin_get(&app, "/metrics").await;
    for (decision, reason, n) in [("allow", "ok", 1), ("allow", "rate_limited_shadow", 2)] {
        let line = format!(
            r#"sluice_policy_decisions_total{{namespace="team-a",policy="trial",section="rateLimit",decision="{decision}",reason="{reason}"}} {n}"#
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    assert!(!metrics.contains(r#"policy="trial",section="rateLimit",decision="deny""#));
    app.shutdown().await;
}

const PENALTY: &str = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: limits, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  apiKeys: {secretRefs: [{name: keys}]}
  rateLimit:
    local:
    - name: per-client
      requests: 1
      unit: Hour
      key: {apiKeyClient: true}
      penalty: {after: 3, within: 1m, block: BLOCK, onAuthFailure: true}
"#;

#[tokio::test]
async fn a_source_refused_too_often_is_closed_at_accept_listed_removed_and_expires() {
    let (app, c) = setup(&PENALTY.replace("BLOCK", "10m"), ServiceOptions::default()).await;
    let key = [("x-api-key", "key-ci")];
    assert_eq!(
        c.send(http::Method::GET, "a.example.com", "/", &key)
            .await
            .status,
        StatusCode::OK
    );
    for _ in 0..2 {
        let r = c.send(http::Method::GET, "a.example.com", "/", &key).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    }
    // The third refusal puts 127.0.0.1 into the box.
    let r = c.send(http::Method::GET, "a.example.com", "/", &key).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let listed: serde_json::Value =
        serde_json::from_str(&admin_get(&app, "/ratelimit").await).unwrap();
    let p = &listed["penalties"][0];
    assert_eq!(p["prefix"], "127.0.0.1/32", "{listed}");
    assert_eq!(p["gateway"], "infra/gw");
    assert_eq!(p["by"], "team-a/limits per-client");
    // A new connection is closed at accept (userspace datapath).
    let fresh = TestClient::new(c.port);
    let err = fresh
        .try_send(http::Method::GET, "a.example.com", "/", &key)
        .await;
    assert!(err.is_err(), "refused at accept: {err:?}");
    let metrics = admin_get(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"sluice_penalty_box_refused_connections_total{shard="infra/gw"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_penalty_box_entries 1"));
    // Removed by an admin call: served again (and rate limited again).
    let (status, body) = admin_delete(&app, "/ratelimit/penalties?prefix=127.0.0.1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = TestClient::new(c.port)
        .send(http::Method::GET, "a.example.com", "/", &key)
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = admin_delete(&app, "/ratelimit/penalties?prefix=127.0.0.1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.shutdown().await;

    // Authentication failures count too, and a penalty expires by itself.
    let (app, c) = setup(&PENALTY.replace("BLOCK", "1s"), ServiceOptions::default()).await;
    for _ in 0..3 {
        let r = c
            .send(
                http::Method::GET,
                "a.example.com",
                "/",
                &[("x-api-key", "wrong")],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let fresh = TestClient::new(c.port);
    assert!(fresh
        .try_send(http::Method::GET, "a.example.com", "/", &key)
        .await
        .is_err());
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = TestClient::new(c.port)
            .try_send(http::Method::GET, "a.example.com", "/", &key)
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the 1 s penalty never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}

fn store_settings(redis: &RedisServer, password: Option<&str>) -> StoreSettings {
    let mut s = StoreSettings::from_url(&redis.url()).unwrap();
    s.password = password.map(str::to_owned);
    s
}

fn label() -> CounterLabel {
    CounterLabel {
        kind: "cluster",
        policy: "ns/p".into(),
        rule: "r".into(),
        key: "(all requests)".into(),
    }
}

/// Two agents' stores on one Redis, a wall clock moved by hand, syncs at
/// offset phases: 300 req/s offered (150 per agent) against a shared
/// 100 req/s for 10 s; then Redis killed (Open: each agent alone; Closed:
/// 503) and restarted (sync resumes).
#[tokio::test]
async fn two_agents_share_a_cluster_limit_within_5_percent_and_survive_a_redis_restart() {
    let Some(mut redis) = RedisServer::start("cluster accuracy", Some("s3cret"), None) else {
        return;
    };
    // Aligned to a second: windows are Unix-time aligned.
    let wall = Arc::new(AtomicU64::new(1_800_000_000_000));
    let agent = || {
        ClusterStore::new(
            Some(store_settings(&redis, Some("s3cret"))),
            1000,
            WallClock::Fake(wall.clone()),
            RateLimitMetrics::default(),
        )
    };
    let (a, b) = (agent(), agent());
    a.sync_once()
        .await
        .expect("agent a reaches Redis with AUTH");
    b.sync_once()
        .await
        .expect("agent b reaches Redis with AUTH");
    // A wrong password is an error, not a silent success.
    let wrong = ClusterStore::new(
        Some(store_settings(&redis, Some("nope"))),
        10,
        WallClock::Fake(wall.clone()),
        RateLimitMetrics::default(),
    );
    assert!(wrong.sync_once().await.is_err());
    assert!(!wrong.is_up());

    let open = [1u8; 16];
    let closed = [2u8; 16];
    let (ca, cb) = (
        a.counter(open, Window::Fixed(1000), label),
        b.counter(open, Window::Fixed(1000), label),
    );
    let (xa, xb) = (
        a.counter(closed, Window::Fixed(1000), label),
        b.counter(closed, Window::Fixed(1000), label),
    );
    // One second: 100 steps of 10 ms; each agent gets 1 or 2 requests per
    // step (150/s); a syncs at steps 0, 10, ..., b at 5, 15, ...
    async fn second(
        a: &ClusterStore,
        b: &ClusterStore,
        counters: [&Arc<sluice::policy::ratelimit::cluster::Counter>; 2],
        mode: FailureMode,
        wall: &AtomicU64,
    ) -> [(u32, u32, u32); 2] {
        let mut out = [(0, 0, 0); 2]; // (allowed, limited, unavailable) per agent
        for step in 0..100u32 {
            for (i, (store, c)) in [(a, counters[0]), (b, counters[1])].into_iter().enumerate() {
                for _ in 0..(1 + step % 2) {
                    match store.acquire(c, 100, mode) {
                        Decision::Allowed { .. } => out[i].0 += 1,
                        Decision::Limited { .. } => out[i].1 += 1,
                        Decision::Unavailable => out[i].2 += 1,
                    }
                }
            }
            if step % 10 == 0 {
                let _ = a.sync_once().await;
            }
            if step % 10 == 5 {
                let _ = b.sync_once().await;
            }
            wall.fetch_add(10, Ordering::AcqRel);
        }
        out
    }
    let mut worst = 0i64;
    for s in 0..10 {
        let [ra, rb] = second(&a, &b, [&ca, &cb], FailureMode::Open, &wall).await;
        let total = ra.0 + rb.0;
        worst = worst.max(i64::from(total) - 100);
        assert!(
            (95..=105).contains(&total),
            "second {s}: {total} accepted ({} + {}) of 300 offered",
            ra.0,
            rb.0
        );
        assert_eq!(ra.0 + ra.1 + rb.0 + rb.1, 300);
    }
    println!("cluster accuracy: 10 s, 300 req/s offered, limit 100/s: worst overshoot {worst} request(s)/s");

    // Redis gone: Open — each agent enforces the limit on its own (the
    // fleet may reach 2×); Closed — 503.
    redis.kill();
    let _ = second(&a, &b, [&ca, &cb], FailureMode::Open, &wall).await; // the second it died in
    let [ra, rb] = second(&a, &b, [&ca, &cb], FailureMode::Open, &wall).await;
    assert!(!a.is_up() && !b.is_up());
    assert_eq!(
        (ra.0, rb.0),
        (100, 100),
        "Open: each agent admits the limit alone"
    );
    let [xa_r, xb_r] = second(&a, &b, [&xa, &xb], FailureMode::Closed, &wall).await;
    assert_eq!((xa_r.0, xb_r.0), (0, 0), "Closed: nothing admitted");
    assert_eq!(
        xa_r.2 + xb_r.2,
        300,
        "Closed: every request unavailable (503)"
    );
    assert!(a.health().last_error.is_some());

    // Back: the next syncs reconnect, push what was admitted meanwhile, and
    // the shared limit holds again.
    redis.restart();
    let _ = second(&a, &b, [&ca, &cb], FailureMode::Open, &wall).await;
    assert!(a.is_up() && b.is_up(), "sync resumed: {:?}", a.health());
    for s in 0..3 {
        let [ra, rb] = second(&a, &b, [&ca, &cb], FailureMode::Open, &wall).await;
        let total = ra.0 + rb.0;
        assert!(
            (95..=105).contains(&total),
            "after restart, second {s}: {total}"
        );
    }
}

#[tokio::test]
async fn the_cluster_store_speaks_tls() {
    let ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut ca = ca;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let tls = common::redis::RedisTls {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    let Some(redis) = RedisServer::start("cluster store TLS", None, Some(&tls)) else {
        return;
    };
    let mut s = StoreSettings::from_url(&redis.url()).unwrap();
    let t = s.tls.as_mut().expect("rediss:// is TLS");
    t.ca_pem = Some(tls.ca.clone().into_bytes());
    t.server_name = Some("localhost".into());
    let store = ClusterStore::new(
        Some(s.clone()),
        10,
        WallClock::Real,
        RateLimitMetrics::default(),
    );
    store.sync_once().await.expect("TLS with the test CA");
    // The platform CAs do not know the test CA: refused.
    s.tls.as_mut().unwrap().ca_pem = None;
    let store = ClusterStore::new(Some(s), 10, WallClock::Real, RateLimitMetrics::default());
    assert!(store.sync_once().await.is_err());
}

const FLEET: &str = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: product, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: orders}]
  apiKeys: {secretRefs: [{name: keys}]}
  rateLimit:
    cluster:
    - {name: fleet, requests: 1000, unit: Minute, failureMode: Closed}
    quotas:
    - {name: daily, requests: 4, period: Day, key: {apiKeyClient: true}, failureMode: Closed}
"#;

/// Two agents with one Redis: a quota used through either is the same
/// quota (headers and /ratelimit say what is left); with Redis down the
/// Closed rules answer 503 and /readyz and the metric say why; back up,
/// they resync.
#[tokio::test]
async fn two_agents_share_quotas_and_report_a_redis_outage() {
    let Some(mut redis) = RedisServer::start("cluster quotas", Some("pw"), None) else {
        return;
    };
    let dir = config_dir();
    std::fs::write(dir.join("password"), "pw\n").unwrap();
    let opts = || {
        let mut o = ServiceOptions::default();
        let mut s = StoreSettings::from_url(&redis.url()).unwrap();
        s.password = Some("pw".into());
        s.sync_interval = Duration::from_millis(20);
        o.store = Some(s);
        o
    };
    let (a, ca) = setup(FLEET, opts()).await;
    let (b, cb) = setup(FLEET, opts()).await;
    let key = [("x-api-key", "key-ci")];
    let get = |c: &TestClient| {
        let c = c.clone();
        async move { c.send(http::Method::GET, "a.example.com", "/", &key).await }
    };
    // Synced between requests so the test is about sharing, not about the
    // batching (whose bound the accuracy test measures).
    let settle = || tokio::time::sleep(Duration::from_millis(200));
    let r = get(&ca).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .unwrap()
            .contains("\"daily\";r=3;"),
        "{:?}",
        r.headers
    );
    settle().await;
    assert_eq!(get(&cb).await.status, StatusCode::OK);
    settle().await;
    let r = get(&ca).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .unwrap()
            .contains("\"daily\";r=1;"),
        "agent a counts agent b's request: {:?}",
        r.headers
    );
    settle().await;
    assert_eq!(get(&cb).await.status, StatusCode::OK);
    settle().await;
    let r = get(&ca).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.body.contains("quota \"daily\" exceeded"), "{}", r.body);
    let view: serde_json::Value = serde_json::from_str(&admin_get(&a, "/ratelimit").await).unwrap();
    let quota = view["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rule"] == "daily")
        .unwrap_or_else(|| panic!("{view}"));
    assert_eq!(quota["key"], "client=ci");
    assert_eq!(quota["remaining"], 0);
    assert_eq!(view["store"]["up"], true);

    redis.kill();
    // Each agent finds the outage on its own sync: wait for both, or b may
    // still answer from the counters it last synced (a 429, not a 503).
    for agent in [&a, &b] {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = admin_get(agent, "/readyz").await;
            if ready.contains("unreachable") {
                assert!(ready.starts_with("ready"), "still serving: {ready}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "outage never reported: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = get(&cb).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let metrics = admin_get(&b, "/metrics").await;
    assert!(
        metrics.contains(r#"sluice_ratelimit_store_up{store="redis"} 0"#),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"section="rateLimit",decision="deny",reason="rate_limit_unavailable"} 1"#));

    redis.restart();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = admin_get(&b, "/metrics").await;
        if metrics.contains(r#"sluice_ratelimit_store_up{store="redis"} 1"#) {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Redis restarted empty: the quota starts over, and works again.
    let r = get(&cb).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(admin_get(&b, "/readyz").await, "ready\n");
    a.shutdown().await;
    b.shutdown().await;
}
