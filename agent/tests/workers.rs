//! `--worker-threads N` > 1: the data path on a runtime per worker thread
//! (thread per core). The workers are process-wide, so this test binary
//! holds this one test only.
mod common;

use common::*;
use sluice::gateway::workers::{self, Workers};

#[tokio::test]
async fn requests_are_served_by_the_worker_runtimes() {
    let workers = Workers::start(2).expect("worker threads");
    assert_eq!(workers::handles().len(), 2);
    let backend = echo_backend("echo").await;
    let port = free_port();
    let dir = config_dir();
    let route = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [echo.example.com]
  rules: [{backendRefs: [{name: echo, port: 8080}]}]
"#;
    write_config(
        &dir,
        "all.yaml",
        &format!(
            "{}{}{route}",
            gateway_yaml(port),
            service_yaml("infra", "echo", backend)
        ),
    );
    let app = start(&dir).await;
    // Each worker runs an accept loop on the shard's socket; the test's own
    // runtime runs none.
    for h in workers::handles() {
        assert!(
            h.metrics().num_alive_tasks() >= 1,
            "an accept loop per worker"
        );
    }
    // Several connections at once (a client each), several requests each.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let client = TestClient::new(port);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..5 {
                    let r = client.get("echo.example.com", &format!("/n/{i}")).await;
                    statuses.push((r.status.as_u16(), r.backend().to_owned()));
                }
                statuses
            })
        })
        .collect();
    for c in clients {
        for (status, backend) in c.await.expect("client task") {
            assert_eq!((status, backend.as_str()), (200, "echo"));
        }
    }
    let r = TestClient::new(port).get("other.example.com", "/").await;
    assert_eq!(r.status.as_u16(), 404);
    app.shutdown().await;
    // The accept loops ended with the app.
    for h in workers::handles() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while h.metrics().num_alive_tasks() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(h.metrics().num_alive_tasks(), 0, "worker tasks left");
    }
    workers.stop();
}
