//! Hot reload of the config directory: changes apply without failed
//! requests; an invalid change is rejected whole and the old config serves on.
mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use http::{Method, StatusCode};

fn route(backend: &str, extra_rule: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: {backend}, port: 8080}}]
{extra_rule}"#
    )
}

struct Fixture {
    app: sluice::app::App,
    client: TestClient,
    dir: std::path::PathBuf,
    base: String,
}

async fn fixture() -> Fixture {
    let v1 = echo_backend("v1").await;
    let v2 = echo_backend("v2").await;
    let port = free_port();
    let dir = config_dir();
    let base = format!(
        "{}{}{}",
        gateway_yaml(port),
        service_yaml("infra", "v1", v1),
        service_yaml("infra", "v2", v2)
    );
    write_config(&dir, "base.yaml", &base);
    write_config(&dir, "route.yaml", &route("v1", ""));
    let app = start(&dir).await;
    Fixture {
        app,
        client: TestClient::new(port),
        dir,
        base,
    }
}

async fn config_json(app: &sluice::app::App) -> serde_json::Value {
    serde_json::from_str(&admin_get(app, "/config").await).expect("/config is JSON")
}

/// Polls `/config` until `done` holds (bounded; panics with the last state).
async fn wait_config(
    app: &sluice::app::App,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        last = config_json(app).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}; last /config: {last:#}");
}

async fn wait_generation(app: &sluice::app::App, generation: u64) {
    wait_config(app, &format!("generation {generation}"), |c| {
        c["generation"].as_u64() >= Some(generation)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_concurrent_requests_fail_no_request() {
    let f = fixture().await;
    assert_eq!(f.client.get("x", "/").await.backend(), "v1");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (c, stop, ok, failures) =
            (f.client.clone(), stop.clone(), ok.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.try_send(Method::GET, "x", "/", &[]).await {
                    Ok(r) if r.status == StatusCode::OK && ["v1", "v2"].contains(&r.backend()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", r.status, r.body)),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    let extra = r#"  - matches: [{path: {type: PathPrefix, value: /extra}}]
    backendRefs: [{name: v1, port: 8080}]
"#;
    let mut generation = 1;
    for i in 0..6 {
        let backend = if i % 2 == 0 { "v2" } else { "v1" };
        let extra = if i % 3 == 0 { extra } else { "" };
        write_config(&f.dir, "route.yaml", &route(backend, extra));
        generation += 1;
        wait_generation(&f.app, generation).await;
        assert_eq!(
            f.client.get("x", "/").await.backend(),
            backend,
            "change {i} in effect"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    let metrics = admin_get(&f.app, "/metrics").await;
    assert!(
        metrics.contains(r#"sluice_config_reloads_total{result="applied"} 7"#),
        "{metrics}"
    );
    f.app.shutdown().await;
}

#[tokio::test]
async fn invalid_change_is_rejected_and_old_config_keeps_serving() {
    let f = fixture().await;
    assert_eq!(f.client.get("x", "/").await.backend(), "v1");
    // Valid YAML, invalid HTTPRoute: a bad status code in a second document,
    // while the first document alone would switch to v2.
    let bad = format!(
        "{}---\n{}",
        route("v2", ""),
        route("v2", "").replace("name: r,", "name: r2,").replace(
            "  - backendRefs",
            "  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 399}}]\n    backendRefs"
        )
    );
    write_config(&f.dir, "route.yaml", &bad);
    let cfg = wait_config(&f.app, "a rejection", |c| !c["lastRejection"].is_null()).await;
    let rejection = cfg["lastRejection"].as_str().unwrap();
    assert!(rejection.contains("route.yaml: document 2"), "{rejection}");
    assert!(
        rejection.contains("spec.rules[0].filters[0].requestRedirect.statusCode"),
        "{rejection}"
    );
    assert_eq!(cfg["generation"], 1);
    assert_eq!(
        f.client.get("x", "/").await.backend(),
        "v1",
        "old config still serves"
    );
    let metrics = admin_get(&f.app, "/metrics").await;
    assert!(
        metrics.contains(r#"sluice_config_reloads_total{result="rejected"} 1"#),
        "{metrics}"
    );

    // Broken YAML is rejected the same way.
    write_config(&f.dir, "route.yaml", "kind: [unclosed");
    wait_config(&f.app, "a YAML rejection", |c| {
        c["lastRejection"]
            .as_str()
            .is_some_and(|r| r.contains("not valid YAML"))
    })
    .await;
    assert_eq!(f.client.get("x", "/").await.backend(), "v1");

    // Fixing it applies.
    write_config(&f.dir, "route.yaml", &route("v2", ""));
    wait_generation(&f.app, 2).await;
    assert_eq!(f.client.get("x", "/").await.backend(), "v2");
    f.app.shutdown().await;
}

#[tokio::test]
async fn gateways_and_listeners_added_and_removed_by_reload() {
    let f = fixture().await;
    let port2 = free_port();
    let gw2 = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw2, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: http, port: {port2}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r2, namespace: infra}}
spec:
  parentRefs: [{{name: gw2}}]
  rules: [{{backendRefs: [{{name: v2, port: 8080}}]}}]
"#
    );
    write_config(&f.dir, "gw2.yaml", &gw2);
    wait_generation(&f.app, 2).await;
    let c2 = TestClient::new(port2);
    assert_eq!(c2.get("x", "/").await.backend(), "v2");
    assert_eq!(f.app.shards_now().await.len(), 2);

    // A second listener port on the first Gateway.
    let port3 = free_port();
    let extra_listener = f.base.replacen(
        "    allowedRoutes: {namespaces: {from: All}}\n",
        &format!("    allowedRoutes: {{namespaces: {{from: All}}}}\n  - {{name: extra, port: {port3}, protocol: HTTP}}\n"),
        1,
    );
    write_config(&f.dir, "base.yaml", &extra_listener);
    wait_generation(&f.app, 3).await;
    assert_eq!(TestClient::new(port3).get("x", "/").await.backend(), "v1");

    // Removing the second Gateway closes its socket; the first one keeps serving.
    std::fs::remove_file(f.dir.join("gw2.yaml")).unwrap();
    wait_generation(&f.app, 4).await;
    // A file written as temp + rename can take the watcher's 5 ms quiet
    // period twice, so generation 4 may have come before the removal: wait
    // for the removal itself (bounded).
    let mut shards = f.app.shards_now().await.len();
    for _ in 0..200 {
        if shards == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        shards = f.app.shards_now().await.len();
    }
    assert_eq!(shards, 1);
    let mut refused = false;
    for _ in 0..100 {
        if TestClient::new(port2)
            .try_send(Method::GET, "x", "/", &[])
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "port {port2} still accepts after its Gateway was removed"
    );
    assert_eq!(f.client.get("x", "/").await.backend(), "v1");
    f.app.shutdown().await;
}

#[tokio::test]
async fn moving_a_listener_address_between_gateways_is_rejected_clearly() {
    let f = fixture().await;
    // Renaming the Gateway in one change: the new one wants the address the
    // old one still serves until the change is in effect.
    write_config(
        &f.dir,
        "base.yaml",
        &f.base.replace("name: gw,", "name: gw-renamed,"),
    );
    write_config(
        &f.dir,
        "route.yaml",
        &route("v2", "").replace("{name: gw}", "{name: gw-renamed}"),
    );
    let cfg = wait_config(&f.app, "a rejection", |c| !c["lastRejection"].is_null()).await;
    let rejection = cfg["lastRejection"].as_str().unwrap();
    assert!(
        rejection.contains("still served by Gateway infra/gw"),
        "{rejection}"
    );
    assert_eq!(
        f.client.get("x", "/").await.backend(),
        "v1",
        "old config still serves"
    );
    f.app.shutdown().await;
}
