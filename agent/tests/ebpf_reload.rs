//! Hot reload with the eBPF datapath: Gateways added and removed at run time
//! get steering sockets in the SockMap and listener entries in the maps.
//! Runs in a private network namespace; skipped (with a message) when not
//! root or when the eBPF programs cannot be loaded here.
mod common;

use std::time::Duration;

use common::*;
use http::Method;
use sluice::app::{self, DatapathMode, Settings};

fn gateway(name: &str, port: u16) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: infra}}
spec:
  parentRefs: [{{name: {name}}}]
  rules: [{{backendRefs: [{{name: v1, port: 8080}}]}}]
"#
    )
}

async fn scenario() {
    let v1 = echo_backend("v1").await;
    let dir = config_dir();
    let class =
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sluice}\n\
                 spec: {controllerName: sluice.dev/gateway-controller}\n";
    write_config(
        &dir,
        "base.yaml",
        &format!(
            "{class}{}{}",
            service_yaml("infra", "v1", v1),
            gateway("gw1", 80)
        ),
    );
    let mut settings = Settings::new(&dir);
    settings.datapath = DatapathMode::Ebpf;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    // Nothing pinned: this test is about reload, not hand-over, and must not
    // leave state in the host's bpffs.
    settings.bpffs = None;
    let app = match app::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            skip(&format!("eBPF datapath unavailable here: {e}"));
            return;
        }
    };
    // Port 80 has no socket of its own: sk_lookup steers it to the shard.
    assert_eq!(TestClient::new(80).get("x", "/").await.backend(), "v1");

    write_config(&dir, "gw2.yaml", &gateway("gw2", 81));
    let mut served = false;
    for _ in 0..200 {
        if TestClient::new(81)
            .try_send(Method::GET, "x", "/", &[])
            .await
            .is_ok_and(|r| r.backend() == "v1")
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "a Gateway added by reload is steered");
    assert_eq!(app.shards_now().await.len(), 2);

    std::fs::remove_file(dir.join("gw2.yaml")).unwrap();
    let mut refused = false;
    for _ in 0..200 {
        if TestClient::new(81)
            .try_send(Method::GET, "x", "/", &[])
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused, "a Gateway removed by reload is no longer steered");
    assert_eq!(TestClient::new(80).get("x", "/").await.backend(), "v1");
    app.shutdown().await;
}

/// Outside CI a missing capability skips loudly; with CI=true it fails.
fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("privileged test cannot run in CI: {why}");
    }
    eprintln!("\n!!! SKIPPED ebpf_reload: {why}\n");
}

#[test]
fn ebpf_reload_steers_added_gateways_and_drops_removed_ones() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root for a network namespace and eBPF");
        return;
    }
    // The network namespace is per thread: everything (runtime included)
    // runs on this one thread.
    std::thread::spawn(|| {
        // SAFETY: unshare affects only the calling thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            skip("cannot create a network namespace");
            return;
        }
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            skip("cannot bring up lo in the namespace");
            return;
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario());
    })
    .join()
    .expect("scenario thread");
}
