//! `cargo xtask bench policy`: what each policy section costs per request,
//! next to the same route without policy, in one run.
//!
//! One Sluice (release, `--worker-threads 1`, userspace datapath) pinned to
//! `--proxy-cpu` serves one route per scenario (by Host) to an nginx backend
//! answering `200 ok`; wrk (one thread, `--connections` keep-alive
//! connections) and the backend share the other CPU. Scenarios: no policy;
//! JWT RS256 and ES256, each with one repeated token (served from the
//! verified-token cache) and with fresh tokens (a new token per request from
//! a pool larger than the cache, so every request is a signature check); an
//! API key; Basic auth (bcrypt, repeated credentials: cached); and an
//! external authorization call to the backend; rate limits: a local (GCRA)
//! rule and a cluster rule counted in a Redis the benchmark starts (batched
//! sync), each with a limit the load never reaches, so every request pays
//! the check and the RateLimit headers; the response cache: a route whose
//! answers Sluice stores (`cache` with `defaultTtl`), so every measured
//! request is a hit, next to the backend asked directly and to nginx with
//! `proxy_cache` (one worker, on the proxy CPU like Sluice) in front of the
//! same backend. Rounds are interleaved with
//! the order rotated; each row is the median round by req/s. The issue's
//! target: JWT with repeat tokens costs at most 10 % of the no-policy req/s.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use ring::signature::KeyPair as _;

use crate::bench_proxy::{
    check_interrupted, clock_ticks, http_status, install_signal_handlers, nginx_common,
    nginx_temp_paths, parse_wrk, pinned, port_open, usage, wait_until, which, Proc, WRK_SCRIPT,
};
use crate::plot::{BarSeries, Figure, Panel};

/// Options of the policy benchmark.
pub struct Options {
    pub seconds: u32,
    pub rounds: u32,
    pub connections: u32,
    /// Distinct tokens per fresh-token scenario (more than the verified-token
    /// cache holds, so nearly every request verifies a signature).
    pub fresh_tokens: usize,
    pub proxy_cpu: u32,
    pub load_cpu: u32,
    pub sluice_bin: Option<PathBuf>,
    /// Write the figures (`target/bench/policy.json`) and a chart of them.
    pub plot: bool,
}

const GATEWAY_PORT: u16 = 18600;
const ADMIN_PORT: u16 = 18601;
const BACKEND_PORT: u16 = 18602;
const REDIS_PORT: u16 = 18603;
/// nginx with `proxy_cache` in front of the backend (the cache-hit anchor).
const NGINX_CACHE_PORT: u16 = 18604;
/// A second Sluice whose cluster rules make one Redis call per request
/// (`--ratelimit-naive-cluster`): the baseline of the batched limiter.
const NAIVE_GATEWAY_PORT: u16 = 18605;
const NAIVE_ADMIN_PORT: u16 = 18606;
const ISSUER: &str = "https://idp.bench";
/// The bcrypt hash (cost 10) of `bench-secret` for user `bench`.
const HTPASSWD: &str = "bench:$2b$10$OKtG6bJPfEIloX1dypstYeAASPQSC7M0scDHE07yLjHRxsq/l8DKu";

/// Which process serves a scenario (its CPU time is the one counted).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    Sluice,
    /// The backend asked directly (no proxy).
    Backend,
    NginxCache,
    /// The second Sluice, with the naive cluster limiter.
    SluiceNaive,
}

/// One measured scenario: a Host, and how wrk sends requests.
struct Scenario {
    label: &'static str,
    served: Served,
    host: &'static str,
    headers: Vec<String>,
    /// A Lua file that sends a fresh token per request.
    script: Option<PathBuf>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(i: usize) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "aud": "bench", "sub": format!("user-{i}"),
        "exp": 4_102_444_800u64, "groups": ["bench"],
    })
}

/// RS256 (the committed test key) and ES256 (generated) signing keys and
/// their JWKS documents.
struct Keys {
    rsa: jsonwebtoken::EncodingKey,
    rsa_jwks: String,
    ec: jsonwebtoken::EncodingKey,
    ec_jwks: String,
}

fn keys(root: &Path) -> Result<Keys> {
    let data = root.join("agent/tests/data");
    let pem = std::fs::read(data.join("jwt-rsa-1.pem")).context("test RSA key")?;
    let rsa_jwks = std::fs::read_to_string(data.join("jwt-rsa-1.jwks.json"))?;
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng)
        .map_err(|_| anyhow::anyhow!("generating an ECDSA key"))?;
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("reading the ECDSA key"))?;
    let point = pair.public_key().as_ref();
    let ec_jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    }]})
    .to_string();
    Ok(Keys {
        rsa: jsonwebtoken::EncodingKey::from_rsa_pem(&pem)?,
        rsa_jwks: rsa_jwks.trim().to_owned(),
        ec: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
        ec_jwks,
    })
}

fn token(
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    kid: &str,
    i: usize,
) -> Result<String> {
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = Some(kid.into());
    Ok(jsonwebtoken::encode(&h, &claims(i), key)?)
}

fn route(name: &str, host: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: backend, port: 80}}]}}]\n"
    )
}

fn jwt_policy(name: &str, route: &str, jwks: &str) -> String {
    format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}]\n  jwt:\n    providers:\n\
         \x20   - name: idp\n      issuer: {ISSUER}\n      audiences: [bench]\n      jwks: {{inline: '{jwks}'}}\n      \
         claimToHeaders: [{{claim: sub, header: x-user}}]\n"
    )
}

fn sluice_config(keys: &Keys) -> String {
    let mut s = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: sluice}}\n\
         spec: {{controllerName: sluice.dev/gateway-controller}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: bench}}\n\
         spec:\n  gatewayClassName: sluice\n  addresses: [{{value: 127.0.0.1}}]\n  \
         listeners: [{{name: http, port: {GATEWAY_PORT}, protocol: HTTP}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: bench}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: backend-1, namespace: bench, labels: {{kubernetes.io/service-name: backend}}}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {BACKEND_PORT}}}]\n"
    );
    for (name, host) in [
        ("none", "none.bench"),
        ("jwt-rs", "jwt-rs.bench"),
        ("jwt-es", "jwt-es.bench"),
        ("key", "key.bench"),
        ("basic", "basic.bench"),
        ("ext", "ext.bench"),
        ("rl-local", "rl-local.bench"),
        ("rl-cluster", "rl-cluster.bench"),
        ("cache", "cache.bench"),
    ] {
        s.push_str(&route(name, host));
    }
    s.push_str(&jwt_policy("jwt-rs", "jwt-rs", &keys.rsa_jwks));
    s.push_str(&jwt_policy("jwt-es", "jwt-es", &keys.ec_jwks));
    s.push_str(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: keys, namespace: bench}\nstringData: {client: bench-key-1}\n\
         ---\napiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {name: key, namespace: bench}\n\
         spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: key}]\n  \
         apiKeys: {secretRefs: [{name: keys}], clientIdHeader: x-client}\n",
    );
    s.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: bench}}\nstringData:\n  auth: '{HTPASSWD}'\n\
         ---\napiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {{name: basic, namespace: bench}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: basic}}]\n  \
         basicAuth: {{secretRef: {{name: users}}}}\n"
    ));
    s.push_str(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {name: ext, namespace: bench}\n\
         spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: ext}]\n  \
         extAuth: {protocol: HTTP, backendRef: {name: backend, port: 80}, http: {path: /auth}}\n",
    );
    // Limits far above what one proxy CPU serves: the cost of an admitted request.
    for (name, rule) in [
        (
            "rl-local",
            "local: [{name: per-source, requests: 1000000, unit: Second, key: {sourceAddress: {}}}]",
        ),
        (
            "rl-cluster",
            "cluster: [{name: fleet, requests: 1000000000, unit: Minute}]",
        ),
    ] {
        s.push_str(&format!(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {{name: {name}, namespace: bench}}\n\
             spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {name}}}]\n  \
             rateLimit: {{{rule}}}\n"
        ));
    }
    // The backend sends no freshness: defaultTtl makes its answer a hit for the run.
    s.push_str(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: SluicePolicy\nmetadata: {name: cache, namespace: bench}\n\
         spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: cache}]\n  \
         cache: {defaultTtl: 1h}\n",
    );
    s
}

/// nginx with `proxy_cache` in front of the backend, stored for an hour
/// like Sluice's `defaultTtl`, keep-alive to the backend.
fn nginx_cache_config(dir: &Path) -> String {
    format!(
        "{}http {{\n  access_log off;\n{}  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
         proxy_cache_path {}/nginx-cache levels=1 keys_zone=bench:10m max_size=64m;\n\
         upstream backend {{ server 127.0.0.1:{BACKEND_PORT}; keepalive 32; }}\n\
         server {{\n    listen 127.0.0.1:{NGINX_CACHE_PORT} default_server;\n    \
         location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      \
         proxy_set_header Connection \"\";\n      proxy_cache bench;\n      proxy_cache_valid 200 1h;\n      \
         add_header X-Cache-Status $upstream_cache_status;\n    }}\n  }}\n}}\n",
        nginx_common(dir, "nginx-cache"),
        nginx_temp_paths(dir, "nginx-cache"),
        dir.display(),
    )
}

/// The backend: `200 ok` from memory, and 200 (allow) for the external
/// authorization calls under /auth.
fn backend_config(dir: &Path) -> String {
    format!(
        "{}http {{\n  access_log off;\n{}  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
         server {{\n    listen 127.0.0.1:{BACKEND_PORT} default_server;\n    \
         location /auth/ {{ return 200; }}\n    \
         location / {{ default_type text/plain; return 200 \"ok\"; }}\n  }}\n}}\n",
        nginx_common(dir, "backend"),
        nginx_temp_paths(dir, "backend"),
    )
}

/// A wrk script sending each request with the next token of `tokens`, and
/// printing the percentiles as the proxy bench's script does.
fn fresh_token_script(tokens: &Path) -> String {
    format!(
        "local tokens = {{}}\nfor line in io.lines(\"{}\") do tokens[#tokens + 1] = line end\n\
         local i = 0\nrequest = function()\n  i = i + 1\n  \
         return wrk.format(nil, nil, {{[\"Authorization\"] = \"Bearer \" .. tokens[(i % #tokens) + 1]}})\nend\n{WRK_SCRIPT}",
        tokens.display()
    )
}

#[derive(Clone, Debug)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_per_100k: f64,
    errors: u64,
}

fn run_wrk(opts: &Options, s: &Scenario, dir: &Path, served_by: &Proc) -> Result<Sample> {
    check_interrupted()?;
    let base = dir.join("percentiles.lua");
    let script = s.script.clone().unwrap_or(base);
    let mut cmd = pinned(&opts.load_cpu.to_string(), &which("wrk"));
    cmd.args(["-t1", "--latency"])
        .arg(format!("-c{}", opts.connections))
        .arg(format!("-d{}s", opts.seconds))
        .arg("-s")
        .arg(&script)
        .arg("-H")
        .arg(format!("Host: {}", s.host));
    for h in &s.headers {
        cmd.arg("-H").arg(h);
    }
    let port = match s.served {
        Served::Sluice => GATEWAY_PORT,
        Served::Backend => BACKEND_PORT,
        Served::NginxCache => NGINX_CACHE_PORT,
        Served::SluiceNaive => NAIVE_GATEWAY_PORT,
    };
    cmd.arg(format!("http://127.0.0.1:{port}/"));
    let tree = served_by.tree();
    let tick = clock_ticks();
    let (cpu0, _) = usage(&tree, tick);
    let out = cmd.output().context("running wrk")?;
    let (cpu1, _) = usage(&tree, tick);
    let text = String::from_utf8_lossy(&out.stdout);
    let (requests, wall, socket_errors, status_errors, p) =
        parse_wrk(&text).with_context(|| format!("wrk output for {}: {text}", s.label))?;
    Ok(Sample {
        rps: requests as f64 / wall.max(1e-9),
        p50_us: p[0],
        p99_us: p[2],
        cpu_per_100k: (cpu1 - cpu0) / (requests.max(1) as f64) * 100_000.0,
        errors: socket_errors + status_errors,
    })
}

fn median(mut v: Vec<Sample>) -> Sample {
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    v[v.len() / 2].clone()
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    install_signal_handlers();
    crate::setup::ensure_tools(
        "bench policy",
        &[
            ("nginx", "nginx", "the backend"),
            (
                "wrk",
                "wrk",
                "HTTP/1.1 load generator (with Lua for tokens and percentiles)",
            ),
            (
                "redis-server",
                "redis-server",
                "the cluster store of the cluster rate-limit scenario",
            ),
        ],
    )?;
    let sluice = crate::bench_proxy::sluice_binary(root, opts.sluice_bin.as_deref())?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-policy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = run_in(root, opts, &sluice, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(root: &Path, opts: &Options, sluice_bin: &Path, dir: &Path) -> Result<()> {
    let keys = keys(root)?;
    eprintln!(
        "bench policy: signing {} fresh tokens per algorithm...",
        opts.fresh_tokens
    );
    let mut rs_tokens = String::new();
    let mut es_tokens = String::new();
    for i in 0..opts.fresh_tokens {
        rs_tokens.push_str(&token(
            &keys.rsa,
            jsonwebtoken::Algorithm::RS256,
            "rsa-1",
            i,
        )?);
        rs_tokens.push('\n');
        es_tokens.push_str(&token(&keys.ec, jsonwebtoken::Algorithm::ES256, "ec-1", i)?);
        es_tokens.push('\n');
    }
    std::fs::write(dir.join("rs.tokens"), rs_tokens)?;
    std::fs::write(dir.join("es.tokens"), es_tokens)?;
    std::fs::write(dir.join("percentiles.lua"), WRK_SCRIPT)?;
    std::fs::write(
        dir.join("rs-fresh.lua"),
        fresh_token_script(&dir.join("rs.tokens")),
    )?;
    std::fs::write(
        dir.join("es-fresh.lua"),
        fresh_token_script(&dir.join("es.tokens")),
    )?;

    let backend = crate::bench_proxy::start_backend(
        dir,
        &backend_config(dir),
        Some(&opts.load_cpu.to_string()),
        || port_open(BACKEND_PORT),
    )?;

    let mut cmd = pinned(&opts.load_cpu.to_string(), &which("redis-server"));
    cmd.args(["--bind", "127.0.0.1", "--port", &REDIS_PORT.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir);
    let mut redis = Proc::spawn("redis", cmd, &dir.join("redis.log"))?;
    wait_until("redis", &mut redis, Duration::from_secs(20), || {
        port_open(REDIS_PORT)
    })?;

    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(format!("nginx-cache-tmp/{t}")))?;
    }
    std::fs::create_dir_all(dir.join("nginx-cache"))?;
    std::fs::write(dir.join("nginx-cache.conf"), nginx_cache_config(dir))?;
    let mut cmd = pinned(&opts.proxy_cpu.to_string(), &which("nginx"));
    cmd.arg("-c")
        .arg(dir.join("nginx-cache.conf"))
        .arg("-p")
        .arg(dir);
    let mut nginx_cache = Proc::spawn("nginx-cache", cmd, &dir.join("nginx-cache.log"))?;
    wait_until(
        "nginx-cache",
        &mut nginx_cache,
        Duration::from_secs(20),
        || port_open(NGINX_CACHE_PORT),
    )?;

    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("bench.yaml"), sluice_config(&keys))?;
    let mut cmd = pinned(&opts.proxy_cpu.to_string(), sluice_bin);
    cmd.arg("--config-dir")
        .arg(&config)
        .args(["--datapath", "userspace", "--worker-threads", "1"])
        .arg(format!("--redis-url=redis://127.0.0.1:{REDIS_PORT}"))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{ADMIN_PORT}"))
        .env("RUST_LOG", "warn");
    let mut sluice = Proc::spawn("sluice", cmd, &dir.join("sluice.log"))?;
    wait_until("sluice", &mut sluice, Duration::from_secs(60), || {
        http_status(ADMIN_PORT, "/readyz") == Some(200)
    })?;

    // The same config on its own port, cluster rules one Redis call per request.
    let naive_config = dir.join("config-naive");
    std::fs::create_dir_all(&naive_config)?;
    std::fs::write(
        naive_config.join("bench.yaml"),
        sluice_config(&keys).replace(
            &format!("port: {GATEWAY_PORT}"),
            &format!("port: {NAIVE_GATEWAY_PORT}"),
        ),
    )?;
    let mut cmd = pinned(&opts.proxy_cpu.to_string(), sluice_bin);
    cmd.arg("--config-dir")
        .arg(&naive_config)
        .args(["--datapath", "userspace", "--worker-threads", "1"])
        .arg(format!("--redis-url=redis://127.0.0.1:{REDIS_PORT}"))
        .arg("--ratelimit-naive-cluster")
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{NAIVE_ADMIN_PORT}"))
        .env("RUST_LOG", "warn");
    let mut naive = Proc::spawn("sluice-naive", cmd, &dir.join("sluice-naive.log"))?;
    wait_until("sluice-naive", &mut naive, Duration::from_secs(60), || {
        http_status(NAIVE_ADMIN_PORT, "/readyz") == Some(200)
    })?;

    let bearer = |t: String| format!("Authorization: Bearer {t}");
    let basic = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bench:bench-secret")
    );
    let scenarios = vec![
        Scenario {
            label: "no policy",
            served: Served::Sluice,
            host: "none.bench",
            headers: vec![],
            script: None,
        },
        Scenario {
            label: "JWT RS256, repeat token",
            served: Served::Sluice,
            host: "jwt-rs.bench",
            headers: vec![bearer(token(
                &keys.rsa,
                jsonwebtoken::Algorithm::RS256,
                "rsa-1",
                0,
            )?)],
            script: None,
        },
        Scenario {
            label: "JWT RS256, fresh tokens",
            served: Served::Sluice,
            host: "jwt-rs.bench",
            headers: vec![],
            script: Some(dir.join("rs-fresh.lua")),
        },
        Scenario {
            label: "JWT ES256, repeat token",
            served: Served::Sluice,
            host: "jwt-es.bench",
            headers: vec![bearer(token(
                &keys.ec,
                jsonwebtoken::Algorithm::ES256,
                "ec-1",
                0,
            )?)],
            script: None,
        },
        Scenario {
            label: "JWT ES256, fresh tokens",
            served: Served::Sluice,
            host: "jwt-es.bench",
            headers: vec![],
            script: Some(dir.join("es-fresh.lua")),
        },
        Scenario {
            label: "API key",
            served: Served::Sluice,
            host: "key.bench",
            headers: vec!["x-api-key: bench-key-1".into()],
            script: None,
        },
        Scenario {
            label: "Basic auth (bcrypt, cached)",
            served: Served::Sluice,
            host: "basic.bench",
            headers: vec![basic],
            script: None,
        },
        Scenario {
            label: "external auth (HTTP call)",
            served: Served::Sluice,
            host: "ext.bench",
            headers: vec![],
            script: None,
        },
        Scenario {
            label: "rate limit, local (GCRA)",
            served: Served::Sluice,
            host: "rl-local.bench",
            headers: vec![],
            script: None,
        },
        Scenario {
            label: "rate limit, cluster (Redis, batched)",
            served: Served::Sluice,
            host: "rl-cluster.bench",
            headers: vec![],
            script: None,
        },
        Scenario {
            label: "rate limit, cluster (Redis, one call per request)",
            served: Served::SluiceNaive,
            host: "rl-cluster.bench",
            headers: vec![],
            script: None,
        },
        Scenario {
            label: "response cache, hit",
            served: Served::Sluice,
            host: "cache.bench",
            headers: vec![],
            script: None,
        },
        Scenario {
            label: "anchor: backend direct (no proxy)",
            served: Served::Backend,
            host: "none.bench",
            headers: vec![],
            script: None,
        },
        Scenario {
            label: "anchor: nginx proxy_cache, hit",
            served: Served::NginxCache,
            host: "none.bench",
            headers: vec![],
            script: None,
        },
    ];
    // Every scenario must answer 200 before any load (a 401 would be fast and wrong).
    for s in &scenarios {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Host: {}", s.host));
        for h in &s.headers {
            c.arg("-H").arg(h);
        }
        if s.script.is_some() {
            let first = std::fs::read_to_string(dir.join(if s.host.starts_with("jwt-rs") {
                "rs.tokens"
            } else {
                "es.tokens"
            }))?;
            c.arg("-H")
                .arg(bearer(first.lines().next().unwrap_or("").to_owned()));
        }
        let port = match s.served {
            Served::Sluice => GATEWAY_PORT,
            Served::Backend => BACKEND_PORT,
            Served::NginxCache => NGINX_CACHE_PORT,
            Served::SluiceNaive => NAIVE_GATEWAY_PORT,
        };
        let out = c.arg(format!("http://127.0.0.1:{port}/")).output()?;
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(
            code == "200",
            "{}: expected 200 before the load, got {code}",
            s.label
        );
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); scenarios.len()];
    for round in 0..opts.rounds as usize {
        for k in 0..scenarios.len() {
            let i = (k + round) % scenarios.len();
            sluice.ensure_running()?;
            nginx_cache.ensure_running()?;
            naive.ensure_running()?;
            let served_by = match scenarios[i].served {
                Served::Sluice => &sluice,
                Served::Backend => &backend,
                Served::NginxCache => &nginx_cache,
                Served::SluiceNaive => &naive,
            };
            let s = run_wrk(opts, &scenarios[i], dir, served_by)?;
            eprintln!(
                "round {}: {:<38} {:>9.0} req/s  p99 {:>6.0} µs",
                round + 1,
                scenarios[i].label,
                s.rps,
                s.p99_us
            );
            samples[i].push(s);
        }
    }
    let medians: Vec<Sample> = samples.into_iter().map(median).collect();
    let base = medians[0].rps;
    println!(
        "\n## Policy cost per request ({} rounds × {} s, {} connections, Sluice on CPU {}, wrk + backend on CPU {})\n",
        opts.rounds, opts.seconds, opts.connections, opts.proxy_cpu, opts.load_cpu
    );
    println!("| scenario | req/s | × no policy | p50 | p99 | CPU s / 100k req | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (s, m) in scenarios.iter().zip(&medians) {
        println!(
            "| {} | {:.0} | {:.2}× | {:.0} µs | {:.0} µs | {:.2} | {} |",
            s.label,
            m.rps,
            m.rps / base,
            m.p50_us,
            m.p99_us,
            m.cpu_per_100k,
            m.errors
        );
    }
    let jwt = medians[1].rps.min(medians[3].rps) / base;
    println!(
        "\nTarget: JWT with repeat tokens ≥ 0.90× the no-policy req/s — measured {:.2}× ({})",
        jwt,
        if jwt >= 0.9 { "met" } else { "MISSED" }
    );
    let row = |label: &str| {
        scenarios
            .iter()
            .position(|s| s.label == label)
            .map(|i| &medians[i])
    };
    if let (Some(batched), Some(naive)) = (
        row("rate limit, cluster (Redis, batched)"),
        row("rate limit, cluster (Redis, one call per request)"),
    ) {
        println!(
            "Cluster rate limit, batched sync against one Redis call per request: {:.2}× the \
             req/s, p99 {:.0} µs against {:.0} µs",
            batched.rps / naive.rps.max(1e-9),
            batched.p99_us,
            naive.p99_us
        );
    }
    if opts.plot {
        figure(opts, &scenarios, &medians).write(root, "policy")?;
    }
    if let (Some(hit), Some(nginx), Some(direct)) = (
        row("response cache, hit"),
        row("anchor: nginx proxy_cache, hit"),
        row("anchor: backend direct (no proxy)"),
    ) {
        println!(
            "Response cache hit: {:.2}× nginx proxy_cache req/s, CPU per request {:.2}× nginx's; \
             {:.2}× the backend asked directly (CPU of each row: the process that served it)",
            hit.rps / nginx.rps.max(1e-9),
            hit.cpu_per_100k / nginx.cpu_per_100k.max(1e-9),
            hit.rps / direct.rps.max(1e-9),
        );
    }
    Ok(())
}

/// Each scenario's req/s relative to the no-policy route, and its p99.
fn figure(opts: &Options, scenarios: &[Scenario], medians: &[Sample]) -> Figure {
    let mut fig = Figure::new("bench policy: per-request cost of each SluicePolicy section");
    fig.notes.push(format!(
        "{} rounds × {} s, {} connections (wrk); Sluice on CPU {}, wrk + backend on CPU {}; median round",
        opts.rounds, opts.seconds, opts.connections, opts.proxy_cpu, opts.load_cpu
    ));
    let base = medians[0].rps.max(1e-9);
    let categories: Vec<String> = scenarios.iter().map(|s| s.label.to_owned()).collect();
    fig.panels.push(Panel::Bars {
        title: "req/s relative to the same route without policy (dashed: 1.0)".into(),
        y_label: "req/s ÷ no policy".into(),
        categories: categories.clone(),
        series: vec![BarSeries {
            name: "req/s ratio".into(),
            values: medians.iter().map(|m| Some(m.rps / base)).collect(),
        }],
        reference: Some(1.0),
        log_y: false,
    });
    fig.panels.push(Panel::Bars {
        title: "Latency".into(),
        y_label: "latency (µs)".into(),
        categories,
        series: vec![
            BarSeries {
                name: "p50".into(),
                values: medians.iter().map(|m| Some(m.p50_us)).collect(),
            },
            BarSeries {
                name: "p99".into(),
                values: medians.iter().map(|m| Some(m.p99_us)).collect(),
            },
        ],
        reference: None,
        log_y: true,
    });
    fig
}
