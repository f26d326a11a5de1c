//! The resilience sections end to end, in process: the real app on
//! loopback (userspace datapath) in front of backends the test steers
//! ([`common::upstreams::Controlled`]). Counts, never timings: where time
//! matters (an ejection running out) a generous bound is polled.
mod common;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use common::{upstreams::*, *};
use futures::FutureExt;
use http::{Method, StatusCode};

const BACKEND: &str = "shop/api:8080";

/// The route `shop/api` (host `api.example.com`, rule `main`) to Service
/// `shop/api` with `endpoints`, plus `extra` documents.
fn config(port: u16, endpoints: &[std::net::SocketAddr], extra: &str) -> String {
    config_rule(port, endpoints, "", extra)
}

/// [`config`] with `rule` (YAML fields at the rule's indentation) added to
/// the rule.
fn config_rule(port: u16, endpoints: &[std::net::SocketAddr], rule: &str, extra: &str) -> String {
    format!(
        r#"{gw}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [api.example.com]
  rules:
  - name: main
    backendRefs: [{{name: api, port: 8080}}]
{rule}
{svc}
{extra}
"#,
        gw = gateway_yaml(port),
        svc = service_with_endpoints("shop", "api", endpoints),
    )
}

fn policy(sections: &str) -> String {
    format!(
        r#"---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: resilience, namespace: shop}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
{sections}
"#
    )
}

struct Fixture {
    app: sluice::app::App,
    client: TestClient,
    dir: std::path::PathBuf,
    port: u16,
}

/// The app serving the route to `endpoints` under the policy `sections`.
async fn fixture(endpoints: &[std::net::SocketAddr], sections: &str) -> Fixture {
    fixture_rule(endpoints, "", sections).await
}

/// [`fixture`] with `rule` added to the route's rule.
async fn fixture_rule(endpoints: &[std::net::SocketAddr], rule: &str, sections: &str) -> Fixture {
    let port = free_port();
    let dir = config_dir();
    write_config(
        &dir,
        "all.yaml",
        &config_rule(port, endpoints, rule, &policy(sections)),
    );
    let app = start(&dir).await;
    Fixture {
        app,
        client: TestClient::new(port),
        dir,
        port,
    }
}

impl Fixture {
    async fn get(&self, headers: &[(&str, &str)]) -> Reply {
        self.client
            .send(Method::GET, "api.example.com", "/", headers)
            .await
    }

    /// Rewrites the config with `endpoints` and `sections` and waits until
    /// it is served.
    async fn reload(&self, endpoints: &[std::net::SocketAddr], sections: &str) {
        let next = generation(&self.app).await + 1;
        write_config(
            &self.dir,
            "all.yaml",
            &config(self.port, endpoints, &policy(sections)),
        );
        wait_generation(&self.app, next).await;
    }
}

/// `n` concurrent batches of `f(i)` for `i` in `0..total`.
async fn concurrently<F, Fut, T>(total: usize, n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let mut tasks = Vec::new();
    for w in 0..n {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (w..total).step_by(n) {
                out.push((i, f(i).await));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, v)| v).collect()
}

const HASH_ON_USER: &str = r#"  loadBalancer:
    type: ConsistentHash
    consistentHash: {header: x-user}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_keys_on_their_endpoint_and_moves_few_when_one_leaves() {
    let backends = [
        Controlled::start("a").await,
        Controlled::start("b").await,
        Controlled::start("c").await,
        Controlled::start("d").await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let f = fixture(&addrs, HASH_ON_USER).await;
    const KEYS: usize = 10_000;
    let client = f.client.clone();
    let ask = move |i: usize| {
        let c = client.clone();
        async move {
            let user = format!("user-{i}");
            c.send(Method::GET, "api.example.com", "/", &[("x-user", &user)])
                .await
                .backend()
                .to_owned()
        }
    };
    let first = concurrently(KEYS, 16, ask.clone()).await;
    // The same key always reaches the same endpoint.
    let again = concurrently(1_000, 16, ask.clone()).await;
    assert_eq!(&first[..1_000], &again[..], "keys moved without a change");
    let mut share: HashMap<&str, usize> = HashMap::new();
    for b in &first {
        *share.entry(b.as_str()).or_default() += 1;
    }
    assert_eq!(share.len(), 4, "every endpoint has keys: {share:?}");

    // Endpoint `c` leaves: only its keys move.
    let fewer: Vec<_> = addrs
        .iter()
        .copied()
        .filter(|a| *a != backends[2].addr)
        .collect();
    f.reload(&fewer, HASH_ON_USER).await;
    let after = concurrently(KEYS, 16, ask).await;
    let moved: Vec<usize> = (0..KEYS).filter(|&i| first[i] != after[i]).collect();
    assert!(
        moved.iter().all(|&i| first[i] == "c"),
        "a key of a remaining endpoint moved"
    );
    assert!(!after.iter().any(|b| b == "c"));
    assert_eq!(moved.len(), share["c"], "every key of `c` moved");
    // 1/N of the keys, plus a small tolerance for the ring's unevenness.
    assert!(
        moved.len() <= KEYS / 4 + KEYS * 3 / 100,
        "moved {} of {KEYS} keys",
        moved.len()
    );
    // Requests without the header are still served (round robin).
    assert_eq!(f.get(&[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_prefers_the_idle_endpoint_when_one_is_slow() {
    let slow = Controlled::start("slow").await;
    let fast = Controlled::start("fast").await;
    slow.set_delay(300);
    let f = fixture(
        &[slow.addr, fast.addr],
        "  loadBalancer: {type: LeastRequest}
",
    )
    .await;
    let client = f.client.clone();
    let served = concurrently(200, 8, move |_| {
        let c = client.clone();
        async move { c.get("api.example.com", "/").await.backend().to_owned() }
    })
    .await;
    let to_fast = served.iter().filter(|b| *b == "fast").count();
    assert_eq!(served.len(), 200);
    // Round robin would send half to the slow one; with 8 in flight the
    // slow one holds requests and loses nearly every draw.
    assert!(to_fast >= 160, "fast endpoint served {to_fast} of 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_limits_answer_503_at_once_with_their_reason() {
    let b = Controlled::start("api").await;
    b.set_delay(1_000);
    let f = fixture(
        &[b.addr],
        "  circuitBreaker: {maxRequests: 2}
",
    )
    .await;
    let client = f.client.clone();
    let statuses = concurrently(10, 10, move |_| {
        let c = client.clone();
        async move {
            let r = c.get("api.example.com", "/").await;
            (r.status, r.body)
        }
    })
    .await;
    let ok = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    let refused: Vec<_> = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(ok, 2, "{statuses:?}");
    assert_eq!(refused.len(), 8, "{statuses:?}");
    assert!(refused[0].1.contains("max_requests"), "{}", refused[0].1);
    assert_eq!(b.hits(), 2, "refused requests never reached the backend");
    let app = &f.app;
    assert_eq!(
        metric_sum(
            app,
            &format!(
                "sluice_upstream_overflow_total{{backend=\"{BACKEND}\",limit=\"max_requests\"}}"
            )
        )
        .await,
        8.0
    );
    let metrics = admin_get(app, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_http_requests_total")
                && l.contains("reason=\"upstream_overflow\"")
                && l.ends_with(" 8")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_policy_decisions_total")
                && l.contains("section=\"circuitBreaker\"")
                && l.contains("reason=\"upstream_overflow\"")),
        "{metrics}"
    );

    // maxConnections: two slow requests hold the two connections; the rest
    // would need a third.
    f.reload(
        &[b.addr],
        "  circuitBreaker: {maxConnections: 2}
",
    )
    .await;
    let client = f.client.clone();
    let statuses = concurrently(6, 6, move |_| {
        let c = client.clone();
        async move { c.get("api.example.com", "/").await.status }
    })
    .await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!((2..6).contains(&ok), "{statuses:?}");
    assert_eq!(
        metric_sum(
            app,
            &format!(
                "sluice_upstream_overflow_total{{backend=\"{BACKEND}\",limit=\"max_connections\"}}"
            )
        )
        .await,
        (6 - ok) as f64
    );
}

/// Polls (bounded) until `check` holds.
async fn eventually<Fut: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Fut,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

const EJECT_AFTER_3: &str = r#"  outlierDetection:
    consecutive5xx: 3
    baseEjectionTime: 2s
    maxEjectionPercent: 50
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_5xx_is_ejected_and_comes_back() {
    let backends = [
        Controlled::start("a").await,
        Controlled::start("b").await,
        Controlled::start("bad").await,
    ];
    backends[2].set_status(500);
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let f = fixture(&addrs, EJECT_AFTER_3).await;
    let mut failed = 0;
    for _ in 0..30 {
        if f.get(&[]).await.status != StatusCode::OK {
            failed += 1;
        }
    }
    assert_eq!(failed, 3, "three 5xx in a row eject it");
    assert_eq!(backends[2].hits(), 3);
    // The others got all the traffic after that.
    assert_eq!(backends[0].hits() + backends[1].hits(), 27);
    let view = upstream_view(&f.app, BACKEND).await;
    let bad = view["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == backends[2].addr.to_string())
        .unwrap()
        .clone();
    assert_eq!(bad["state"], "ejected", "{view:#}");
    assert_eq!(bad["ejections"], 1);
    assert_eq!(
        metric_sum(
            &f.app,
            &format!("sluice_upstream_ejections_total{{backend=\"{BACKEND}\",cause=\"consecutive_5xx\"}}")
        )
        .await,
        1.0
    );
    assert_eq!(
        metric_sum(&f.app, "sluice_upstream_ejected_endpoints{").await,
        1.0
    );
    // It comes back after its ejection time (2 s; polled up to 20 s).
    backends[2].set_status(200);
    let before = backends[2].hits();
    eventually(
        "the ejected endpoint to get requests again",
        Duration::from_secs(20),
        || async {
            f.get(&[]).await;
            backends[2].hits() > before
        },
    )
    .await;
    let view = upstream_view(&f.app, BACKEND).await;
    assert!(
        view["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "ready"),
        "{view:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_survives_a_reload_that_changes_another_route() {
    let backends = [Controlled::start("a").await, Controlled::start("bad").await];
    backends[1].set_status(503);
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let sections =
        "  outlierDetection: {consecutive5xx: 2, baseEjectionTime: 300s, maxEjectionPercent: 50}
";
    let f = fixture(&addrs, sections).await;
    for _ in 0..10 {
        f.get(&[]).await;
    }
    assert_eq!(backends[1].hits(), 2);
    // Another route appears (another file): the policy and backend stay.
    let next = generation(&f.app).await + 1;
    write_config(
        &f.dir,
        "other.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: shop}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [other.example.com]
  rules: [{backendRefs: [{name: api, port: 8080}]}]
"#,
    );
    wait_generation(&f.app, next).await;
    backends[1].set_status(200);
    // The other route has no policy: plain round robin over both.
    for _ in 0..2 {
        assert_eq!(
            f.client.get("other.example.com", "/").await.status,
            StatusCode::OK
        );
    }
    let hits = backends[1].hits();
    for _ in 0..10 {
        assert_eq!(f.get(&[]).await.backend(), "a");
    }
    assert_eq!(backends[1].hits(), hits, "still ejected after the reload");
    let view = upstream_view(&f.app, BACKEND).await;
    assert!(
        view["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["state"] == "ejected"),
        "{view:#}"
    );
    // A change of the section itself is new state: the endpoint is back.
    f.reload(
        &addrs,
        "  outlierDetection: {consecutive5xx: 3, baseEjectionTime: 300s, maxEjectionPercent: 50}
",
    )
    .await;
    for _ in 0..10 {
        f.get(&[]).await;
    }
    assert!(backends[1].hits() > hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_uses_every_endpoint_when_all_are_out() {
    let backends = [Controlled::start("a").await, Controlled::start("b").await];
    for b in &backends {
        b.set_status(500);
    }
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let f = fixture(
        &addrs,
        "  outlierDetection: {consecutive5xx: 1, baseEjectionTime: 300s, maxEjectionPercent: 100}
",
    )
    .await;
    f.get(&[]).await;
    f.get(&[]).await;
    // Both are ejected; requests still go to them instead of a certain 503.
    let hits = backends[0].hits() + backends[1].hits();
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let r = f.get(&[]).await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the backends' own answer"
        );
        seen.insert(r.backend().to_owned());
    }
    assert_eq!(backends[0].hits() + backends[1].hits(), hits + 10);
    assert_eq!(seen.len(), 2, "every endpoint is used: {seen:?}");
    let view = upstream_view(&f.app, BACKEND).await;
    assert_eq!(view["panic"], true, "{view:#}");
    assert_eq!(
        metric_sum(
            &f.app,
            &format!("sluice_upstream_panic_mode{{backend=\"{BACKEND}\"}}")
        )
        .await,
        1.0
    );
    assert!(metric_sum(&f.app, "sluice_upstream_panic_requests_total{").await >= 10.0);
}

/// The state the admin view gives endpoint `addr` of the backend.
async fn endpoint_state(app: &sluice::app::App, addr: std::net::SocketAddr) -> String {
    let view = upstream_view(app, BACKEND).await;
    view["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

const CHECK_FAST: &str = r#"  healthCheck:
    path: /healthz
    interval: 200ms
    timeout: 200ms
    unhealthyThreshold: 2
    healthyThreshold: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_under_load_fails_no_request_after_detection() {
    use std::sync::{
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
        Arc,
    };
    let backends = [
        Controlled::start("a").await,
        Controlled::start("b").await,
        Controlled::start("c").await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let f = fixture_rule(
        &addrs,
        "    retry: {codes: [502, 503], attempts: 2, backoff: 1ms}",
        CHECK_FAST,
    )
    .await;
    // Phase 0: all up; 1: `c` killed, not yet detected; 2: detected.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[[AtomicUsize; 2]; 3]> = Arc::new(Default::default());
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (c, phase, stop, counts) = (
            f.client.clone(),
            phase.clone(),
            stop.clone(),
            counts.clone(),
        );
        workers.push(tokio::spawn(async move {
            // Bounded: stops on the flag, or after 20,000 requests.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let start = phase.load(Ordering::SeqCst) as usize;
                let ok = c
                    .try_send(Method::GET, "api.example.com", "/", &[])
                    .await
                    .is_ok_and(|r| r.status == StatusCode::OK);
                // A request under way when `c` was killed counts as killed
                // (its connection may have been cut mid-exchange); one that
                // started after detection counts as after.
                let p = match (start, phase.load(Ordering::SeqCst)) {
                    (0, end) if end > 0 => 1,
                    _ => start,
                };
                counts[p][usize::from(!ok)].fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let served = |p: usize| counts[p][0].load(Ordering::SeqCst);
    eventually(
        "requests before the kill",
        Duration::from_secs(10),
        || async { served(0) >= 100 },
    )
    .await;
    phase.store(1, Ordering::SeqCst);
    backends[2].kill();
    eventually(
        "the killed endpoint to be unhealthy",
        Duration::from_secs(10),
        || { endpoint_state(&f.app, backends[2].addr) }.map(|s| s == "unhealthy"),
    )
    .await;
    phase.store(2, Ordering::SeqCst);
    let at_detection = served(2);
    eventually(
        "requests after detection",
        Duration::from_secs(20),
        || async { served(2) >= at_detection + 300 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let failed: Vec<usize> = (0..3)
        .map(|p| counts[p][1].load(Ordering::SeqCst))
        .collect();
    eprintln!(
        "served {:?}, failed {failed:?} (before kill, until detection, after)",
        (0..3).map(served).collect::<Vec<_>>()
    );
    assert_eq!(failed[2], 0, "no request fails once the endpoint is out");
    assert_eq!(failed[0], 0);
    assert!(
        metric_sum(
            &f.app,
            &format!(
                "sluice_upstream_health_checks_total{{backend=\"{BACKEND}\",result=\"failure\"}}"
            )
        )
        .await
            >= 2.0
    );
    assert_eq!(
        metric_sum(
            &f.app,
            &format!("sluice_upstream_unhealthy_endpoints{{backend=\"{BACKEND}\"}}")
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_when_every_endpoint_is_unhealthy_and_recovery() {
    let backends = [Controlled::start("a").await, Controlled::start("b").await];
    for b in &backends {
        b.set_status(503);
    }
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let f = fixture(&addrs, CHECK_FAST).await;
    for b in &backends {
        eventually("both endpoints unhealthy", Duration::from_secs(10), || {
            endpoint_state(&f.app, b.addr).map(|s| s == "unhealthy")
        })
        .await;
    }
    // Every endpoint is out: all are used rather than answering 503 ourselves.
    let r = f.get(&[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !r.backend().is_empty(),
        "the backend's own answer: {}",
        r.body
    );
    let view = upstream_view(&f.app, BACKEND).await;
    assert_eq!(view["panic"], true, "{view:#}");
    assert_eq!(
        metric_sum(
            &f.app,
            &format!("sluice_upstream_panic_mode{{backend=\"{BACKEND}\"}}")
        )
        .await,
        1.0
    );
    // They recover: back in the rotation, out of panic mode.
    for b in &backends {
        b.set_status(200);
    }
    for b in &backends {
        eventually(
            "the endpoints healthy again",
            Duration::from_secs(10),
            || endpoint_state(&f.app, b.addr).map(|s| s == "ready"),
        )
        .await;
    }
    assert_eq!(f.get(&[]).await.status, StatusCode::OK);
    assert_eq!(upstream_view(&f.app, BACKEND).await["panic"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_concurrent_retries() {
    let b = Controlled::start("api").await;
    b.set_status(503);
    // Slow enough that the four first attempts fail together while the one
    // retry that got the budget is still under way.
    b.set_delay(2_000);
    let f = fixture_rule(
        &[b.addr],
        "    retry: {codes: [503], attempts: 1, backoff: 1ms}",
        "  circuitBreaker: {maxRetries: 1}\n",
    )
    .await;
    let client = f.client.clone();
    let statuses = concurrently(4, 4, move |_| {
        let c = client.clone();
        async move { c.get("api.example.com", "/").await.status }
    })
    .await;
    // Every answer is the backend's own 503 (a refused retry is not a new answer).
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(b.hits(), 5, "four attempts and one retry");
    assert_eq!(
        metric_sum(
            &f.app,
            &format!(
                "sluice_upstream_overflow_total{{backend=\"{BACKEND}\",limit=\"max_retries\"}}"
            )
        )
        .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_requests_refuses_requests_waiting_for_a_connection() {
    use socket2::{Domain, Socket, Type};
    // A listener that never accepts, its accept queue filled: the kernel
    // drops further SYNs, so a new connection to it stays pending.
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    sock.bind(&any.into()).unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr)
        )
        .await
        .is_err(),
        "the stalled listener still completes connections"
    );
    let f = fixture(&[addr], "  circuitBreaker: {maxPendingRequests: 1}\n").await;
    let client = f.client.clone();
    let answers = concurrently(3, 3, move |_| {
        let c = client.clone();
        async move {
            let r = c.get("api.example.com", "/").await;
            (r.status, r.body)
        }
    })
    .await;
    // One waits for its connection (and gets the connect timeout's 503);
    // the other two are refused at once.
    assert!(answers
        .iter()
        .all(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE));
    let refused = answers
        .iter()
        .filter(|(_, b)| b.contains("max_pending_requests"))
        .count();
    assert_eq!(refused, 2, "{answers:?}");
    assert_eq!(
        metric_sum(
            &f.app,
            &format!(
                "sluice_upstream_overflow_total{{backend=\"{BACKEND}\",limit=\"max_pending_requests\"}}"
            )
        )
        .await,
        2.0
    );
    drop(fillers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_policy_keeps_its_ejections_across_a_reload_and_for_every_route() {
    let backends = [Controlled::start("a").await, Controlled::start("bad").await];
    backends[1].set_status(503);
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let port = free_port();
    let dir = config_dir();
    let gateway_policy = r#"---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: platform, namespace: infra}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  outlierDetection: {consecutive5xx: 2, baseEjectionTime: 300s, maxEjectionPercent: 50}
"#;
    write_config(&dir, "all.yaml", &config(port, &addrs, gateway_policy));
    let app = start(&dir).await;
    let c = TestClient::new(port);
    for _ in 0..10 {
        c.get("api.example.com", "/").await;
    }
    assert_eq!(backends[1].hits(), 2);
    // A new route under the same Gateway: a reload that leaves the policy
    // and the backend as they were.
    let next = generation(&app).await + 1;
    write_config(
        &dir,
        "other.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: shop}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [other.example.com]
  rules: [{backendRefs: [{name: api, port: 8080}]}]
"#,
    );
    wait_generation(&app, next).await;
    backends[1].set_status(200);
    // Still out, for the old route and for the new one the policy governs too.
    for host in ["api.example.com", "other.example.com"] {
        for _ in 0..5 {
            assert_eq!(c.get(host, "/").await.backend(), "a", "{host}");
        }
    }
    assert_eq!(backends[1].hits(), 2, "still ejected after the reload");
}
