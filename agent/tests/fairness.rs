//! Fair sharing between Gateways (`gateway::fair`) through the real app: a
//! Gateway flooded next to a quiet one has its work deferred — counted in
//! `sluice_fair_deferred_polls_total` — while every request of the quiet one
//! is answered; a flood with no other Gateway wanting the worker is never
//! deferred (work-conserving). No timing is asserted: the benchmark
//! (`cargo xtask bench isolation`) measures the latency it buys.
mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{edge::*, *};
use sluice::app;

fn config(flooded: u16, quiet: u16, backend: std::net::SocketAddr) -> String {
    format!(
        r#"{}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: quiet, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: http, port: {quiet}, protocol: HTTP}}]
{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}, {{name: quiet}}]
  rules: [{{backendRefs: [{{name: echo, port: 8080}}]}}]
"#,
        gateway_yaml(flooded),
        service_yaml("infra", "echo", backend)
    )
}

/// `connections` clients sending requests back to back to `port` until
/// `stop`; the number answered 200.
fn flood(
    port: u16,
    connections: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..connections)
        .map(|_| {
            let (client, stop) = (TestClient::new(port), stop.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                // Bounded however long the test takes to stop it.
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if client.get("echo.example.com", "/").await.status == 200 {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect()
}

async fn deferred(app: &app::App) -> f64 {
    metric(app, "sluice_fair_deferred_polls_total", &[]).await
}

#[tokio::test]
async fn a_flooded_gateway_waits_its_turn_and_the_quiet_one_is_served() {
    let backend = echo_backend("echo").await;
    let (flooded, quiet) = (free_port(), free_port());
    let dir = config_dir();
    write_config(&dir, "all.yaml", &config(flooded, quiet, backend));
    let app = start(&dir).await;
    let client = TestClient::new(quiet);
    assert_eq!(client.get("echo.example.com", "/").await.status, 200);

    // The quiet Gateway has not been used for longer than a share is kept
    // (1 s): alone, the flood keeps the whole worker.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let before = deferred(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = flood(flooded, 32, &stop);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    let mut alone = 0;
    for c in clients {
        alone += c.await.unwrap();
    }
    assert!(alone > 0, "the flood was served");
    assert_eq!(
        deferred(&app).await,
        before,
        "nothing deferred while one Gateway has the worker to itself"
    );

    // Now the quiet Gateway wants its share during a flood.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = flood(flooded, 32, &stop);
    let answered = Arc::new(AtomicU64::new(0));
    for _ in 0..50 {
        let r = client.get("echo.example.com", "/").await;
        assert_eq!(r.status, 200, "every quiet request is answered: {}", r.body);
        answered.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    for c in clients {
        served += c.await.unwrap();
    }
    assert_eq!(answered.load(Ordering::Relaxed), 50);
    assert!(served > 0, "the flooded Gateway is slowed, not starved");
    let after = deferred(&app).await;
    assert!(
        after > before,
        "the flooded Gateway's work was deferred behind the quiet one's ({before} → {after})"
    );
}
