//! Request-path micro-benchmark: `cargo bench -p sluice --bench request_path`.
//!
//! Runs the gateway's real per-request code — `Proxy::handle`: listener and
//! route match, the policy fast path (no policy attached: one
//! `RoutePolicy::is_empty` check), the rule's filters, the backend choice,
//! the upstream request head (hop-by-hop headers, `X-Forwarded-*`), the
//! response header filters, the request metrics — without sockets: the
//! upstream pool is in its canned mode and answers `200 ok` at once, and the
//! response body is read to its end. A regression anywhere on that path
//! shows here long before a load test would notice it.
//!
//! Cases, each for a snapshot with the measured route alone and with 5,000
//! more routes (own hostnames, as in `cargo xtask bench proxy --routes`):
//! - `plain`: HTTP/1.1-style request (Host header), PathPrefix route;
//! - `filters`: the same route's second rule with a RequestHeaderModifier,
//!   a ResponseHeaderModifier and a URLRewrite (ReplacePrefixMatch);
//! - `h2`: the authority in the URI (HTTP/2 `:authority`), plain rule;
//! - `no-route`: a path no rule matches (the gateway's own 404).
//!
//! After criterion's report, a summary prints ns per request of each case
//! and the 5,000-route ÷ 1-route ratio (target: within 5 %).
use std::{hint::black_box, path::Path, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::Criterion;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use sluice::{
    config::load_dir,
    control::{compile, ShardIds},
    gateway::{ConnInfo, Proxy},
    metrics::Metrics,
};

/// The measured route's hostname.
const HOST: &str = "bench.example.com";
/// Listener port.
const PORT: u16 = 8080;

fn config(extra_routes: usize) -> String {
    let mut s = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: bench}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: http, port: {PORT}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: bench}}
spec: {{ports: [{{port: 80, targetPort: 9000}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: backend-1, namespace: bench, labels: {{kubernetes.io/service-name: backend}}}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"]}}]
ports: [{{port: 9000}}]
"#
    );
    let mut hosts: Vec<String> = (0..extra_routes)
        .map(|i| format!("r{i}.routes.example.com"))
        .collect();
    hosts.insert(hosts.len() / 2, HOST.to_owned());
    for (i, host) in hosts.iter().enumerate() {
        s.push_str(&format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{i}, namespace: bench}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [{host}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /bench}}}}]
    backendRefs: [{{name: backend, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /filtered}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: x-tenant, value: bench}}]
        remove: [x-debug]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{{name: x-served-by, value: sluice}}]
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}
    backendRefs: [{{name: backend, port: 80}}]
"#
        ));
    }
    s
}

/// A proxy serving the config with `extra_routes` more routes, and the
/// connection requests come on.
struct Fixture {
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
}

impl Fixture {
    fn new(dir: &Path, extra_routes: usize) -> Self {
        std::fs::create_dir_all(dir).expect("bench dir");
        std::fs::write(dir.join("bench.yaml"), config(extra_routes)).expect("write config");
        let cfg = load_dir(dir).expect("valid config");
        let compiled = compile(&cfg, &mut ShardIds::default(), 1);
        let shard = compiled.snapshot.shards.first().expect("one shard").id;
        let routes: usize = compiled.snapshot.shards[0]
            .listeners
            .iter()
            .map(|l| l.routes.len())
            .sum();
        assert_eq!(routes, 2 * (extra_routes + 1), "{:?}", compiled.warnings);
        let snapshot = Arc::new(ArcSwap::from_pointee(compiled.snapshot));
        let proxy = Proxy::new(snapshot, Metrics::default())
            .with_canned_upstream(Bytes::from_static(b"ok"));
        let conn = ConnInfo::new(
            shard,
            ([127, 0, 0, 1], PORT).into(),
            ([127, 0, 0, 1], 40_000).into(),
            None,
        );
        Self {
            proxy: Arc::new(proxy),
            conn: Arc::new(conn),
        }
    }
}

#[derive(Clone, Copy)]
enum Case {
    Plain,
    Filters,
    H2,
    NoRoute,
}

impl Case {
    const ALL: [Case; 4] = [Case::Plain, Case::Filters, Case::H2, Case::NoRoute];

    fn name(self) -> &'static str {
        match self {
            Case::Plain => "plain",
            Case::Filters => "filters",
            Case::H2 => "h2",
            Case::NoRoute => "no-route",
        }
    }

    /// A request as hyper hands it to the gateway, with what wrk and curl send.
    fn request(self) -> Request<Empty<Bytes>> {
        let (uri, version) = match self {
            Case::Plain => ("/bench/hello".to_owned(), http::Version::HTTP_11),
            Case::Filters => ("/filtered/users?id=7".to_owned(), http::Version::HTTP_11),
            Case::H2 => (format!("http://{HOST}/bench/hello"), http::Version::HTTP_2),
            Case::NoRoute => ("/elsewhere".to_owned(), http::Version::HTTP_11),
        };
        let mut b = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .version(version)
            .header("user-agent", "bench/1.0")
            .header("accept", "*/*")
            .header("x-debug", "1");
        if version == http::Version::HTTP_11 {
            b = b.header("host", HOST);
        }
        b.body(Empty::new()).expect("valid request")
    }
}

/// One request through the gateway, its response body read to the end.
async fn one(f: &Fixture, case: Case) -> u16 {
    // As the server does: the request's future boxed once.
    let resp = Box::pin(f.proxy.clone().handle(f.conn.clone(), case.request()))
        .await
        .unwrap_or_else(|never| match never {});
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body");
    black_box(body);
    status
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn fixtures() -> Vec<(usize, Fixture)> {
    let root = std::env::temp_dir().join(format!("sluice-bench-request-{}", std::process::id()));
    let out = [0, 5_000]
        .into_iter()
        .map(|extra| (extra, Fixture::new(&root.join(extra.to_string()), extra)))
        .collect();
    let _ = std::fs::remove_dir_all(&root);
    out
}

fn request_path(c: &mut Criterion, fixtures: &[(usize, Fixture)]) {
    let rt = runtime();
    for (extra, f) in fixtures {
        // What each case answers, checked once: the bench measures the right path.
        for (case, want) in Case::ALL.into_iter().zip([200, 200, 200, 404]) {
            assert_eq!(rt.block_on(one(f, case)), want, "{}", case.name());
        }
        let mut group = c.benchmark_group(format!("request_path/{} routes", extra + 1));
        for case in Case::ALL {
            group.bench_function(case.name(), |b| b.iter(|| rt.block_on(one(f, case))));
        }
        group.finish();
    }
}

/// ns per request: the best of 5 runs of `n` requests.
fn ns_per_request(rt: &tokio::runtime::Runtime, f: &Fixture, case: Case, n: u32) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..n {
                    black_box(one(f, case).await);
                }
            });
            start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn summary(fixtures: &[(usize, Fixture)]) {
    let rt = runtime();
    println!("\nrequest path without sockets, ns per request (best of 5 × 100,000):\n");
    println!("| case | 1 route | 5,001 routes | 5,001 ÷ 1 (target ≤ 1.05) |");
    println!("|---|---:|---:|---:|");
    for case in Case::ALL {
        let ns: Vec<f64> = fixtures
            .iter()
            .map(|(_, f)| ns_per_request(&rt, f, case, 100_000))
            .collect();
        println!(
            "| {} | {:.0} | {:.0} | {:.3} |",
            case.name(),
            ns[0],
            ns[1],
            ns[1] / ns[0]
        );
    }
}

fn main() {
    let fixtures = fixtures();
    let mut c = Criterion::default().configure_from_args();
    request_path(&mut c, &fixtures);
    c.final_summary();
    // Only for a plain `cargo bench` run: test mode (`cargo test
    // --benches`), a filter or `--profile-time` (profilers) skip it.
    if std::env::args().skip(1).all(|a| a == "--bench") {
        summary(&fixtures);
    }
}
