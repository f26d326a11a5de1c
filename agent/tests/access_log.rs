//! Access logs and request ids through the real app: the fields of a line,
//! the response flags, the status filter, reopening on SIGHUP, and a stalled
//! writer that never delays requests.
mod common;

use std::{path::Path, time::Duration};

use common::*;
use http::Method;
use sluice::{
    access_log::{Destination, Format, QueryMode},
    app::{self, DatapathMode, Settings},
};

struct Setup {
    app: sluice::app::App,
    client: TestClient,
    backend: std::net::SocketAddr,
}

async fn start_logging(log: &Path, tweak: impl FnOnce(&mut Settings)) -> Setup {
    let backend = echo_backend("echo").await;
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let port = free_port();
    let dir = config_dir();
    let routes = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: team}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [shop.example.com]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: team}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [broken.example.com]
  rules: [{backendRefs: [{name: dead, port: 8080}]}]
"#;
    let config = format!(
        "{}{}{}{routes}",
        gateway_yaml(port),
        service_yaml("team", "echo", backend),
        service_yaml("team", "dead", dead)
    );
    write_config(&dir, "all.yaml", &config);
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    settings.access_log.destination = Destination::File(log.to_owned());
    settings.access_log.format = Format::Json;
    tweak(&mut settings);
    let app = app::build(settings).await.expect("app starts");
    Setup {
        app,
        client: TestClient::new(port),
        backend,
    }
}

/// The JSON lines of `path` once it has at least `n` (the writer is
/// asynchronous: bounded wait).
async fn lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let mut got = Vec::new();
    for _ in 0..200 {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} access log lines, wanted {n}: {got:?}", got.len());
}

fn log_path(name: &str) -> std::path::PathBuf {
    config_dir().join(name)
}

#[tokio::test]
async fn every_request_gets_a_line_with_its_fields_and_flag() {
    let log = log_path("access.log");
    let s = start_logging(&log, |_| {}).await;
    let ok = s
        .client
        .send(
            Method::GET,
            "shop.example.com",
            // Logged as normalised, routed and forwarded.
            "/x/../orders?token=secret&page=2",
            &[
                ("user-agent", "test-agent/1"),
                ("x-forwarded-for", "198.51.100.7"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        )
        .await;
    assert_eq!(ok.status, 200);
    let not_found = s.client.get("nobody.example.com", "/").await;
    assert_eq!(not_found.status, 404);
    let unreachable = s.client.get("broken.example.com", "/x").await;
    assert_eq!(unreachable.status, 503);

    let got = lines(&log, 3).await;
    let ok_line = got
        .iter()
        .find(|l| l["authority"] == "shop.example.com")
        .expect("a line for the routed request");
    // The id the client got back is the one the backend saw and the log has.
    let id = ok.headers["x-request-id"].to_str().unwrap();
    assert_eq!(ok.seen_header("x-request-id").as_deref(), Some(id));
    assert_eq!(ok_line["request_id"], id);
    assert_eq!(ok_line["gateway"], "infra/gw");
    assert_eq!(ok_line["listener"], "http");
    assert_eq!(ok_line["route"], "team/shop");
    assert_eq!(ok_line["namespace"], "team");
    assert_eq!(ok_line["rule"], 0);
    assert_eq!(ok_line["method"], "GET");
    assert_eq!(ok_line["path"], "/orders?token=REDACTED&page=REDACTED");
    assert_eq!(ok_line["status"], 200);
    assert_eq!(ok_line["flag"], "-");
    assert_eq!(ok_line["reason"], "upstream");
    assert_eq!(ok_line["bytes_out"], ok.body.len() as u64);
    assert_eq!(ok_line["upstream"], s.backend.to_string());
    assert!(ok_line["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert!(ok_line["duration_ms"].as_f64().unwrap() >= ok_line["upstream_ms"].as_f64().unwrap());
    assert_eq!(ok_line["client"], "127.0.0.1");
    assert_eq!(ok_line["user_agent"], "test-agent/1");
    // As received (the peer is no trusted proxy, so it is not the client).
    assert_eq!(ok_line["x_forwarded_for"], "198.51.100.7");
    assert_eq!(ok_line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(ok_line["time"].as_str().unwrap().ends_with('Z'));
    assert!(ok_line.get("incomplete").is_none());

    let nr = got
        .iter()
        .find(|l| l["authority"] == "nobody.example.com")
        .expect("a line for the unrouted request");
    assert_eq!(nr["status"], 404);
    assert_eq!(nr["flag"], "NR");
    assert_eq!(nr["reason"], "no_route");
    assert!(nr.get("route").is_none());
    // Gateway-made answers carry the id too.
    assert_eq!(
        nr["request_id"],
        not_found.headers["x-request-id"].to_str().unwrap()
    );

    let uf = got
        .iter()
        .find(|l| l["authority"] == "broken.example.com")
        .expect("a line for the unreachable backend");
    assert_eq!(uf["status"], 503);
    assert_eq!(uf["flag"], "UF");
    assert_eq!(uf["route"], "team/broken");
    assert!(uf["upstream"].as_str().is_some(), "{uf}");

    let metrics = admin_get(&s.app, "/metrics").await;
    assert!(
        metrics.contains("sluice_access_log_lines_total 3"),
        "{metrics}"
    );
    s.app.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_kept_only_from_trusted_proxies_and_bodies_are_counted() {
    let log = log_path("ids.log");
    let s = start_logging(&log, |st| {
        st.access_log.query = QueryMode::Keep;
    })
    .await;
    let r = s
        .client
        .send(
            Method::GET,
            "shop.example.com",
            "/?a=1",
            &[("x-request-id", "client-chosen")],
        )
        .await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_ne!(
        id, "client-chosen",
        "an untrusted client does not choose the id"
    );
    assert_eq!(id.len(), 36);
    let posted = s
        .client
        .send_body(Method::POST, "shop.example.com", "/upload", "0123456789")
        .await;
    assert_eq!(posted.status, 200);
    let got = lines(&log, 2).await;
    assert_eq!(got[0]["path"], "/?a=1");
    let post = got.iter().find(|l| l["method"] == "POST").unwrap();
    assert_eq!(post["bytes_in"], 10);
    s.app.shutdown().await;

    let log = log_path("trusted.log");
    let s = start_logging(&log, |st| {
        st.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let r = s
        .client
        .send(
            Method::GET,
            "shop.example.com",
            "/",
            &[("x-request-id", "edge-42")],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "edge-42");
    assert_eq!(r.seen_header("x-request-id").as_deref(), Some("edge-42"));
    assert_eq!(lines(&log, 1).await[0]["request_id"], "edge-42");
    s.app.shutdown().await;
}

#[tokio::test]
async fn the_status_filter_keeps_only_errors() {
    let log = log_path("errors.log");
    let s = start_logging(&log, |st| st.access_log.min_status = 400).await;
    for _ in 0..3 {
        assert_eq!(s.client.get("shop.example.com", "/").await.status, 200);
    }
    assert_eq!(s.client.get("nobody.example.com", "/").await.status, 404);
    let got = lines(&log, 1).await;
    // The 404 was sent last; by the time it is written the 200s would be too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_after = lines(&log, 1).await;
    assert_eq!(got_after.len(), 1, "{got_after:?}");
    assert_eq!(got[0]["status"], 404);
    s.app.shutdown().await;
}

#[tokio::test]
async fn lines_of_the_last_requests_are_written_before_shutdown_returns() {
    let log = log_path("last.log");
    let s = start_logging(&log, |_| {}).await;
    for i in 0..5 {
        let status = s
            .client
            .get("shop.example.com", &format!("/last/{i}"))
            .await
            .status;
        assert_eq!(status, 200);
    }
    s.app.shutdown().await;
    // Read at once: the agent flushed the log as it stopped.
    let text = std::fs::read_to_string(&log).unwrap();
    let paths: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
        .collect();
    assert_eq!(
        paths,
        (0..5).map(|i| format!("\"/last/{i}\"")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn sighup_reopens_the_file_after_rotation() {
    let log = log_path("rotated.log");
    let s = start_logging(&log, |_| {}).await;
    s.client.get("shop.example.com", "/one").await;
    lines(&log, 1).await;
    let old = log.with_extension("log.1");
    std::fs::rename(&log, &old).unwrap();
    // SAFETY: signals this process; the app's SIGHUP handler is installed.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    // The writer looks at the reopen flag at least every half second.
    let mut reopened = false;
    for _ in 0..100 {
        s.client.get("shop.example.com", "/two").await;
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/two")) {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened, "no line in the new file after SIGHUP");
    let rotated = std::fs::read_to_string(&old).unwrap();
    assert!(rotated.contains("/one"));
    s.app.shutdown().await;
}

#[tokio::test]
async fn a_stalled_writer_drops_lines_and_never_delays_requests() {
    // A FIFO whose reader never reads: the writer thread blocks once the
    // pipe buffer (64 KiB) is full.
    let fifo = log_path("stalled.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: plain libc calls on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    assert!(reader >= 0);
    let s = start_logging(&fifo, |st| st.access_log.queue = 64).await;
    let started = std::time::Instant::now();
    let mut ok = 0;
    for _ in 0..1_500 {
        if s.client.get("shop.example.com", "/").await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1_500, "every request answered while the log is stalled");
    // Generous: 1,500 local requests take well under a second or two; a
    // writer that blocked requests would hang here for good.
    assert!(started.elapsed() < Duration::from_secs(60));
    let metrics = admin_get(&s.app, "/metrics").await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_access_log_dropped_total "))
        .expect("the dropped counter")
        .trim()
        .parse()
        .unwrap();
    assert!(dropped > 0.0, "{metrics}");
    s.app.shutdown().await;
    // SAFETY: our own descriptor.
    unsafe { libc::close(reader) };
}

#[tokio::test]
async fn a_policy_logs_a_share_of_a_route_or_only_its_errors() {
    let log = log_path("filtered.log");
    let policies = r#"---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: shop-errors, namespace: team}
spec:
  targetRefs: [{kind: HTTPRoute, name: shop}]
  accessLog: {minStatus: 400}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: broken-quiet, namespace: team}
spec:
  targetRefs: [{kind: HTTPRoute, name: broken}]
  accessLog: {samplePercent: 0}
"#;
    let s = start_logging(&log, |settings| {
        write_config(&settings.config_dir, "policies.yaml", policies)
    })
    .await;
    for _ in 0..5 {
        assert_eq!(s.client.get("shop.example.com", "/ok").await.status, 200);
        assert_eq!(s.client.get("broken.example.com", "/").await.status, 503);
    }
    // An error of the shop route is logged; so is what matches no route.
    let failed = s
        .client
        .get(
            "shop.example.com",
            "/?fail_first=1&id=filtered-log&code=500",
        )
        .await;
    assert_eq!(failed.status, 500);
    assert_eq!(s.client.get("nobody.example.com", "/").await.status, 404);
    let got = lines(&log, 2).await;
    let statuses: Vec<u64> = got.iter().map(|l| l["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [500, 404], "{got:?}");
    let admin = admin_get(&s.app, "/metrics").await;
    assert!(
        admin.contains("sluice_access_log_filtered_total 10"),
        "5 successes and 5 unsampled failures left out: {admin}"
    );
    s.app.shutdown().await;
}
