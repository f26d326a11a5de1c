//! Per-Gateway cap on requests in flight: past it the Gateway answers 503
//! with Retry-After at once, counts it, and says so on `/readyz` (which
//! stays 200); places come back as requests finish.
mod common;

use std::time::Duration;

use common::{edge::*, *};

#[tokio::test]
async fn requests_past_the_in_flight_cap_get_503_with_retry_after() {
    let backend = echo_backend("echo").await;
    let port = free_port();
    let app = start_routed(port, backend, |s| s.edge.max_in_flight_per_shard = 4).await;
    let client = TestClient::new(port);
    // Four slow requests hold every place.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get("echo.example.com", "/?delay_ms=2000").await })
        })
        .collect();
    let app_ref = &app;
    // Until all four are in flight, a quick request may still get a place.
    let mut shed = None;
    for _ in 0..100 {
        let r = client.get("echo.example.com", "/").await;
        if r.status == 503 {
            shed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = shed.expect("a fifth request was shed");
    assert_eq!(shed.headers.get("retry-after").unwrap(), "1");
    let ready = admin_get(app_ref, "/readyz").await;
    assert!(
        ready.starts_with("ready") && ready.contains("infra/gw: "),
        "{ready}"
    );
    assert!(ready.contains("requests refused"), "{ready}");
    let counted = metric(
        app_ref,
        "sluice_http_requests_total",
        &[r#"reason="overloaded""#],
    )
    .await;
    assert!(counted >= 1.0);
    for s in slow {
        assert_eq!(
            s.await.unwrap().status,
            200,
            "the requests in flight are served"
        );
    }
    assert_eq!(
        client.get("echo.example.com", "/").await.status,
        200,
        "places came back"
    );
    app.shutdown().await;
}
