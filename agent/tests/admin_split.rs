//! The admin split: the probes-and-metrics listener (`--metrics-addr`)
//! never serves the config, status, status page or any mutating call; the
//! loopback admin listener still serves everything.
mod common;

use bytes::Bytes;
use common::{edge::start_routed, *};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

async fn status(method: Method, url: String) -> StatusCode {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.expect("admin request");
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn the_metrics_listener_serves_only_probes_and_metrics() {
    let backend = echo_backend("echo").await;
    let app = start_routed(free_port(), backend, |s| {
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let public = app.metrics_addr.expect("metrics listener bound");
    let admin = app.admin_addr;
    assert_ne!(public, admin);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            status(Method::GET, format!("http://{public}{path}")).await,
            StatusCode::OK,
            "{path}"
        );
    }
    for (method, path) in [
        (Method::GET, "/config"),
        (Method::GET, "/status"),
        (Method::GET, "/"),
        (Method::GET, "/api/overview"),
        (Method::POST, "/reconcile"),
    ] {
        assert_eq!(
            status(method.clone(), format!("http://{public}{path}")).await,
            StatusCode::FORBIDDEN,
            "{method} {path} on the metrics listener"
        );
    }
    // The loopback admin listener is unchanged.
    for path in ["/config", "/status", "/", "/api/overview", "/metrics"] {
        assert_eq!(
            status(Method::GET, format!("http://{admin}{path}")).await,
            StatusCode::OK,
            "{path}"
        );
    }
    assert!(admin_get(&app, "/metrics")
        .await
        .contains("sluice_http_timeouts"));
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_metrics_address_there_is_no_second_listener() {
    let backend = echo_backend("echo").await;
    let app = start_routed(free_port(), backend, |_| {}).await;
    assert_eq!(app.metrics_addr, None);
    app.shutdown().await;
}
