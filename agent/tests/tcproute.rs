//! TCPRoute on TCP listeners, through the real app on loopback: raw byte
//! streams relayed both ways (half-close included), weighted backends over
//! many connections, and connections closed when no backend can take them.
mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{edge::metric, l4::*, *};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

struct Fixture {
    app: sluice::app::App,
    /// Listener `echo`: one route to backend a.
    echo: u16,
    /// Listener `split`: a (weight 3) and b (weight 1).
    split: u16,
    /// Listener `dead`: the backend's endpoint refuses connections.
    dead: u16,
    /// Listener `empty`: the Service has no endpoints.
    empty: u16,
    dir: std::path::PathBuf,
    /// The config written to `dir/config.yaml`.
    text: String,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

async fn fixture_with(tune: impl FnOnce(&mut sluice::app::Settings)) -> Fixture {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let (echo, split, dead, empty) = (ports[0], ports[1], ports[2], ports[3]);
    let dir = config_dir();
    let mut text = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: sluice
  addresses: [{{value: 127.0.0.1}}]
  listeners:
  - {{name: echo, port: {echo}, protocol: TCP}}
  - {{name: split, port: {split}, protocol: TCP}}
  - {{name: dead, port: {dead}, protocol: TCP}}
  - {{name: empty, port: {empty}, protocol: TCP}}
"#
    );
    text.push_str(&service_yaml("infra", "a", tcp_echo_backend("a").await));
    text.push_str(&service_yaml("infra", "b", tcp_echo_backend("b").await));
    // Nothing listens there: taken and let go.
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    text.push_str(&service_yaml("infra", "closed", closed));
    text.push_str(ENDPOINTLESS_SERVICE);
    let route = |name: &str, listener: &str, backends: &str| {
        l4_route_yaml(
            "gateway.networking.k8s.io/v1",
            "TCPRoute",
            name,
            listener,
            backends,
        )
    };
    text.push_str(&route("echo", "echo", "{name: a, port: 8080}"));
    // A younger route on the same listener: attached, but the older serves.
    text.push_str(
        &route("echo-younger", "echo", "{name: b, port: 8080}").replace("2026-01-01", "2026-02-01"),
    );
    text.push_str(&route(
        "split",
        "split",
        "{name: a, port: 8080, weight: 3}, {name: b, port: 8080, weight: 1}",
    ));
    text.push_str(&route("dead", "dead", "{name: closed, port: 8080}"));
    text.push_str(&route("empty", "empty", "{name: none, port: 8080}"));
    write_config(&dir, "config.yaml", &text);
    let mut settings = sluice::app::Settings::new(&dir);
    settings.datapath = sluice::app::DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    tune(&mut settings);
    Fixture {
        app: sluice::app::build(settings).await.expect("app starts"),
        echo,
        split,
        dead,
        empty,
        dir,
        text,
    }
}

async fn connect(port: u16) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect in time")
        .expect("connect")
}

#[tokio::test]
async fn bytes_flow_both_ways_and_a_half_close_passes_through() {
    let f = fixture().await;
    let mut s = connect(f.echo).await;
    assert_eq!(
        read_line(&mut s).await.unwrap(),
        "a",
        "the older route serves"
    );
    // Binary data, every byte value, in one go and back.
    let data: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        // Half-close: the backend sees EOF and still answers.
        w.shutdown().await.unwrap();
        w
    });
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(WAIT, r.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert!(back == data, "the echo is the bytes sent");
    let _w = writer.await.unwrap();
    assert_eq!(read_line(&mut r).await.unwrap(), "bye");
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    assert!(rest.is_empty());

    // Counted by route once the connection is over.
    let mut up = 0.0;
    for _ in 0..50 {
        up = metric(
            &f.app,
            "sluice_l4_bytes_total",
            &["route=\"infra/echo\"", "direction=\"upstream\""],
        )
        .await;
        if up > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up, data.len() as f64);
    let down = metric(
        &f.app,
        "sluice_l4_bytes_total",
        &["route=\"infra/echo\"", "direction=\"downstream\""],
    )
    .await;
    assert_eq!(down, (2 + data.len() + 4) as f64, "a\\n + echo + bye\\n");
}

#[tokio::test]
async fn connections_are_split_by_weight() {
    let f = fixture().await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    const N: usize = 200;
    for _ in 0..N {
        let mut s = connect(f.split).await;
        let name = read_line(&mut s).await.expect("greeting");
        *counts.entry(name).or_default() += 1;
    }
    let a = counts.get("a").copied().unwrap_or(0);
    let b = counts.get("b").copied().unwrap_or(0);
    assert_eq!(a + b, N, "{counts:?}");
    // 3:1 with a tolerance of 10 % of the connections.
    assert!(a.abs_diff(N * 3 / 4) <= N / 10, "{counts:?}");
    assert!(b.abs_diff(N / 4) <= N / 10, "{counts:?}");
    let relayed = metric(
        &f.app,
        "sluice_l4_connections_total",
        &["route=\"infra/split\"", "result=\"relayed\""],
    )
    .await;
    assert_eq!(relayed, N as f64);
}

#[tokio::test]
async fn no_reachable_backend_closes_the_client_connection() {
    let f = fixture().await;
    for port in [f.dead, f.empty] {
        let mut s = connect(port).await;
        assert!(
            closed_without_data(&mut s, WAIT).await,
            "port {port}: closed without a byte"
        );
    }
    let failed = metric(
        &f.app,
        "sluice_l4_connections_total",
        &["route=\"infra/dead\"", "result=\"connect_failure\""],
    )
    .await;
    assert_eq!(failed, 1.0);
    let empty = metric(
        &f.app,
        "sluice_l4_connections_total",
        &["route=\"infra/empty\"", "result=\"no_backend\""],
    )
    .await;
    assert_eq!(empty, 1.0);
}

#[tokio::test]
async fn status_counts_every_route_of_a_listener() {
    let f = fixture().await;
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&f.app, "/status").await).unwrap();
    let listener = status["gateways"][0]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(listener["supportedKinds"][0]["kind"], "TCPRoute");
    assert_eq!(listener["attachedRoutes"], 2);
    // The status page's data: the routes and their backends, relayed.
    let overview: serde_json::Value =
        serde_json::from_str(&admin_get(&f.app, "/api/overview").await).unwrap();
    let upstream = overview["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "infra/a:8080")
        .unwrap_or_else(|| panic!("infra/a:8080 in {overview}"))
        .clone();
    assert_eq!(upstream["protocol"], "tcp");
    assert!(upstream["usedBy"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "infra/split"));
    for name in ["echo", "echo-younger", "dead"] {
        let r = route_status(&status, "TCPRoute", name);
        assert_eq!(parent_condition(r, "Accepted"), "True/Accepted", "{name}");
        assert_eq!(
            parent_condition(r, "ResolvedRefs"),
            "True/ResolvedRefs",
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_reload_leaves_relayed_connections_alone() {
    let f = fixture().await;
    let mut s = connect(f.echo).await;
    assert_eq!(read_line(&mut s).await.unwrap(), "a");
    // A new config without the `split` listener: the shard's listener set
    // changes, its sockets are replaced.
    let text = f
        .text
        .replace(
            &format!("  - {{name: split, port: {}, protocol: TCP}}\n", f.split),
            "",
        )
        .replace("sectionName: split}", "sectionName: echo}");
    assert_ne!(text, f.text);
    write_config(&f.dir, "config.yaml", &text);
    let mut gone = false;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", f.split)).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the reload removed the split listener");
    // The connection relayed before the reload still carries bytes both ways.
    s.write_all(b"after reload\n").await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "after reload");
    // And new connections to the kept listener are served.
    let mut n = connect(f.echo).await;
    assert_eq!(read_line(&mut n).await.unwrap(), "a");
}

#[tokio::test]
async fn an_idle_relay_is_closed_and_a_busy_one_is_not() {
    let f = fixture_with(|s| s.edge.l4_idle_timeout = Duration::from_secs(3)).await;
    let mut busy = connect(f.echo).await;
    let mut quiet = connect(f.echo).await;
    assert_eq!(read_line(&mut busy).await.unwrap(), "a");
    assert_eq!(read_line(&mut quiet).await.unwrap(), "a");
    // The busy one sends a line every 200 ms for longer than the idle
    // timeout and gets each back; the quiet one is closed meanwhile.
    for i in 0..20 {
        busy.write_all(format!("ping {i}\n").as_bytes())
            .await
            .unwrap();
        let mut back = vec![0u8; format!("ping {i}\n").len()];
        tokio::time::timeout(WAIT, busy.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("the busy relay stays open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, quiet.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_))) && rest.is_empty(),
        "the idle relay was closed: {closed:?} {rest:?}"
    );
    let counted = metric(
        &f.app,
        "sluice_http_timeouts_total",
        &["reason=\"l4_idle\""],
    )
    .await;
    assert!(counted >= 1.0, "the quiet relay's close is counted");
    // And the busy one is still open (it was never idle for 3 s).
    busy.write_all(b"still\n").await.unwrap();
    let mut back = [0u8; 6];
    tokio::time::timeout(WAIT, busy.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("the busy relay is open");
}
