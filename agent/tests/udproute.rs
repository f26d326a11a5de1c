//! UDPRoute on UDP listeners, through the real app on loopback: datagrams
//! relayed both ways in one session per client address, weighted backends
//! over many clients, idle sessions expired (and the session bound), no
//! route / no endpoints counted, and a reload that leaves a session on its
//! backend while new sessions follow the new routes (and closes the socket
//! of a removed listener).
mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{edge::metric, l4::*, *};

struct Fixture {
    app: sluice::app::App,
    /// Listener `echo`: route `echo` to backend a (and a younger route to b).
    echo: u16,
    /// Listener `split`: a (weight 3) and b (weight 1).
    split: u16,
    /// Listener `empty`: the Service has no endpoints.
    empty: u16,
    /// Listener `orphan`: no route.
    orphan: u16,
    /// Source addresses backend a saw.
    a_sources: Sources,
    dir: std::path::PathBuf,
    /// The config written to `dir/config.yaml`.
    text: String,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

async fn fixture_with(tune: impl FnOnce(&mut sluice::app::Settings)) -> Fixture {
    let ports: Vec<u16> = (0..4).map(|_| free_udp_port()).collect();
    let (echo, split, empty, orphan) = (ports[0], ports[1], ports[2], ports[3]);
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
  - {{name: echo, port: {echo}, protocol: UDP}}
  - {{name: split, port: {split}, protocol: UDP}}
  - {{name: empty, port: {empty}, protocol: UDP}}
  - {{name: orphan, port: {orphan}, protocol: UDP}}
"#
    );
    let (a, a_sources) = udp_echo_backend("a").await;
    let (b, _) = udp_echo_backend("b").await;
    text.push_str(&service_yaml("infra", "a", a));
    text.push_str(&service_yaml("infra", "b", b));
    text.push_str(ENDPOINTLESS_SERVICE);
    let route = |name: &str, listener: &str, backends: &str| {
        l4_route_yaml(
            "gateway.networking.k8s.io/v1alpha2",
            "UDPRoute",
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
    text.push_str(&route("empty", "empty", "{name: none, port: 8080}"));
    // Younger routes on `empty` (which keeps serving the `empty` route) to
    // Services of another namespace: `c` is granted to UDPRoutes of infra,
    // `d` is not.
    for (name, service) in [("cross", "c"), ("cross-denied", "d")] {
        text.push_str(
            &route(
                name,
                "empty",
                &format!("{{name: {service}, namespace: other, port: 8080}}"),
            )
            .replace("2026-01-01", "2026-03-01"),
        );
        text.push_str(&service_yaml("other", service, a));
    }
    text.push_str(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {name: udp, namespace: other}\nspec:\n  \
         from: [{group: gateway.networking.k8s.io, kind: UDPRoute, namespace: infra}]\n  \
         to: [{group: '', kind: Service, name: c}]\n",
    );
    write_config(&dir, "config.yaml", &text);
    let mut settings = sluice::app::Settings::new(&dir);
    settings.datapath = sluice::app::DatapathMode::Userspace;
    settings.admin_addr = "127.0.0.1:0".parse().unwrap();
    tune(&mut settings);
    Fixture {
        app: sluice::app::build(settings).await.expect("app starts"),
        echo,
        split,
        empty,
        orphan,
        a_sources,
        dir,
        text,
    }
}

/// The metric once it reaches `want`, or its last value after [`WAIT`]
/// (datagrams are counted by the relay tasks, a moment after the fact).
async fn metric_reaching(app: &sluice::app::App, name: &str, labels: &[&str], want: f64) -> f64 {
    let mut v = 0.0;
    for _ in 0..100 {
        v = metric(app, name, labels).await;
        if v == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    v
}

#[tokio::test]
async fn datagrams_flow_both_ways_in_one_session_per_client() {
    let f = fixture().await;
    let one = udp_client().await;
    let two = udp_client().await;
    let mut sent = 0;
    for i in 0..5 {
        let payload = format!("one {i}");
        sent += payload.len();
        assert_eq!(
            udp_ask(&one, f.echo, payload.as_bytes(), WAIT).await,
            Some(format!("a:{payload}")),
            "the older route serves; the answer comes back to the client"
        );
    }
    // Binary, every byte value, in one datagram.
    let binary: Vec<u8> = (0..=255u8).cycle().take(1200).collect();
    two.send_to(&binary, ("127.0.0.1", f.echo)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(WAIT, two.recv_from(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    assert_eq!(
        from.port(),
        f.echo,
        "the answer comes from the listener's port"
    );
    assert_eq!(&buf[..2], b"a:");
    assert!(buf[2..n] == binary[..], "the datagram is relayed unchanged");
    sent += binary.len();

    // Two clients, two sessions: the backend saw two source addresses, the
    // five datagrams of the first client all from one.
    assert_eq!(f.a_sources.lock().unwrap().len(), 2);
    let relayed = metric_reaching(
        &f.app,
        "sluice_udp_sessions_total",
        &["route=\"infra/echo\"", "result=\"relayed\""],
        2.0,
    )
    .await;
    assert_eq!(relayed, 2.0);
    assert_eq!(metric(&f.app, "sluice_udp_sessions_active", &[]).await, 2.0);
    let up = |what| {
        metric_reaching(
            &f.app,
            what,
            &["route=\"infra/echo\"", "direction=\"upstream\""],
            if what == "sluice_udp_datagrams_total" {
                6.0
            } else {
                sent as f64
            },
        )
    };
    assert_eq!(up("sluice_udp_datagrams_total").await, 6.0);
    assert_eq!(up("sluice_udp_bytes_total").await, sent as f64);
    let down = metric_reaching(
        &f.app,
        "sluice_udp_bytes_total",
        &["route=\"infra/echo\"", "direction=\"downstream\""],
        (sent + 6 * 2) as f64,
    )
    .await;
    assert_eq!(down, (sent + 6 * 2) as f64, "each answer has `a:` more");
}

#[tokio::test]
async fn sessions_are_split_by_weight() {
    let f = fixture().await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    const N: usize = 200;
    // Every client keeps its socket: a port let go could be taken again by
    // the next client, which would then continue that address's session.
    let mut clients = Vec::new();
    for i in 0..N {
        let c = udp_client().await;
        let answer = udp_ask(&c, f.split, format!("{i}").as_bytes(), WAIT)
            .await
            .expect("an answer");
        let backend = answer.split(':').next().unwrap().to_owned();
        *counts.entry(backend).or_default() += 1;
        clients.push(c);
    }
    let a = counts.get("a").copied().unwrap_or(0);
    let b = counts.get("b").copied().unwrap_or(0);
    assert_eq!(a + b, N, "{counts:?}");
    // 3:1 with a tolerance of 10 % of the sessions.
    assert!(a.abs_diff(N * 3 / 4) <= N / 10, "{counts:?}");
    assert!(b.abs_diff(N / 4) <= N / 10, "{counts:?}");
    let relayed = metric_reaching(
        &f.app,
        "sluice_udp_sessions_total",
        &["route=\"infra/split\"", "result=\"relayed\""],
        N as f64,
    )
    .await;
    assert_eq!(relayed, N as f64);
}

#[tokio::test]
async fn no_route_and_no_endpoints_drop_the_datagram_and_are_counted() {
    let f = fixture().await;
    let c = udp_client().await;
    let quiet = Duration::from_millis(500);
    assert_eq!(udp_ask(&c, f.orphan, b"x", quiet).await, None);
    assert_eq!(udp_ask(&c, f.empty, b"y", quiet).await, None);
    let no_route = metric_reaching(
        &f.app,
        "sluice_udp_sessions_total",
        &["route=\"\"", "result=\"no_route\""],
        1.0,
    )
    .await;
    assert_eq!(no_route, 1.0);
    let no_backend = metric_reaching(
        &f.app,
        "sluice_udp_sessions_total",
        &["route=\"infra/empty\"", "result=\"no_backend\""],
        1.0,
    )
    .await;
    assert_eq!(no_backend, 1.0);
    // No session was kept for them: the next datagram is refused again.
    assert_eq!(udp_ask(&c, f.empty, b"z", quiet).await, None);
    let again = metric_reaching(
        &f.app,
        "sluice_udp_sessions_total",
        &["route=\"infra/empty\"", "result=\"no_backend\""],
        2.0,
    )
    .await;
    assert_eq!(again, 2.0);
    assert_eq!(metric(&f.app, "sluice_udp_sessions_active", &[]).await, 0.0);
}

#[tokio::test]
async fn an_idle_session_expires_and_frees_its_place() {
    // One session per listener socket at most, expired after 2 s idle.
    let f = fixture_with(|s| {
        s.edge.udp_idle_timeout = Duration::from_secs(2);
        s.edge.udp_max_sessions = 1;
    })
    .await;
    let first = udp_client().await;
    let second = udp_client().await;
    assert_eq!(
        udp_ask(&first, f.echo, b"1", WAIT).await.as_deref(),
        Some("a:1")
    );
    // The table is full: the second client's datagram is dropped, counted.
    assert_eq!(
        udp_ask(&second, f.echo, b"2", Duration::from_millis(300)).await,
        None
    );
    let limited = metric_reaching(
        &f.app,
        "sluice_udp_sessions_total",
        &["result=\"session_limit\""],
        1.0,
    )
    .await;
    assert_eq!(limited, 1.0);
    // Left alone, the first session expires.
    let active = metric_reaching(&f.app, "sluice_udp_sessions_active", &[], 0.0).await;
    assert_eq!(active, 0.0, "the idle session was closed");
    // Its place is free: the second client gets a session now.
    assert_eq!(
        udp_ask(&second, f.echo, b"3", WAIT).await.as_deref(),
        Some("a:3")
    );
    // The backend saw each session from a socket of its own: the first
    // client's, then the second's.
    assert_eq!(f.a_sources.lock().unwrap().len(), 2);
    let relayed = metric(
        &f.app,
        "sluice_udp_sessions_total",
        &["route=\"infra/echo\"", "result=\"relayed\""],
    )
    .await;
    assert_eq!(relayed, 2.0);
}

#[tokio::test]
async fn a_reload_keeps_a_session_on_its_backend() {
    let f = fixture().await;
    let kept = udp_client().await;
    assert_eq!(
        udp_ask(&kept, f.echo, b"before", WAIT).await.as_deref(),
        Some("a:before")
    );
    // The echo route now goes to b, and the split route is gone (its
    // listener stays).
    let split_route = f
        .text
        .split("---\n")
        .find(|d| d.contains("kind: UDPRoute") && d.contains("name: split,"))
        .expect("the split route")
        .to_owned();
    let text = f.text.replace(&format!("---\n{split_route}"), "").replace(
        "name: echo, namespace: infra, creationTimestamp: '2026-01-01T00:00:00Z'}\n\
             spec:\n  parentRefs: [{name: gw, sectionName: echo}]\n  \
             rules: [{backendRefs: [{name: a, port: 8080}]}]",
        "name: echo, namespace: infra, creationTimestamp: '2026-01-01T00:00:00Z'}\n\
             spec:\n  parentRefs: [{name: gw, sectionName: echo}]\n  \
             rules: [{backendRefs: [{name: b, port: 8080}]}]",
    );
    // And the orphan listener goes: its socket is closed.
    let text = text.replace(
        &format!("  - {{name: orphan, port: {}, protocol: UDP}}\n", f.orphan),
        "",
    );
    assert!(!text.contains("name: orphan"), "{text}");
    assert!(!text.contains("sectionName: split"), "{text}");
    assert!(!text.contains("[{name: a, port: 8080}]"), "{text}");
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", f.orphan)).is_err(),
        "the orphan listener holds its port before the reload"
    );
    write_config(&f.dir, "config.yaml", &text);
    // New sessions follow the new route once it is applied.
    let mut moved = false;
    let mut probes = Vec::new();
    for i in 0..100 {
        let c = udp_client().await;
        let answer = udp_ask(&c, f.echo, format!("probe {i}").as_bytes(), WAIT).await;
        if answer.is_some_and(|a| a.starts_with("b:")) {
            moved = true;
            break;
        }
        // Kept, so the next probe has an address (a session) of its own.
        probes.push(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "new sessions go to b after the reload");
    // The session opened before the reload still goes to a.
    assert_eq!(
        udp_ask(&kept, f.echo, b"after", WAIT).await.as_deref(),
        Some("a:after")
    );
    let mut released = false;
    for _ in 0..100 {
        if std::net::UdpSocket::bind(("127.0.0.1", f.orphan)).is_ok() {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(released, "the removed listener's UDP socket was closed");
    // A listener without a route any more opens no new session.
    let c = udp_client().await;
    assert_eq!(
        udp_ask(&c, f.split, b"x", Duration::from_millis(500)).await,
        None
    );
    let no_route = metric_reaching(
        &f.app,
        "sluice_udp_sessions_total",
        &["result=\"no_route\""],
        1.0,
    )
    .await;
    assert_eq!(no_route, 1.0);
}

#[tokio::test]
async fn status_accepts_the_listeners_and_counts_every_route() {
    let f = fixture().await;
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&f.app, "/status").await).unwrap();
    let listener = |name: &str| {
        status["gateways"][0]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let echo = listener("echo");
    assert_eq!(echo["supportedKinds"][0]["kind"], "UDPRoute");
    assert_eq!(echo["attachedRoutes"], 2);
    assert_eq!(listener("orphan")["attachedRoutes"], 0);
    for name in ["echo", "orphan"] {
        let accepted = listener(name)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Accepted")
            .unwrap()
            .clone();
        assert_eq!(accepted["status"], "True", "{name}: {accepted}");
    }
    assert_eq!(listener("empty")["attachedRoutes"], 3);
    let denied = route_status(&status, "UDPRoute", "cross-denied");
    assert_eq!(
        parent_condition(denied, "ResolvedRefs"),
        "False/RefNotPermitted"
    );
    // `/config` shows the UDP ports apart from the (TCP) ports.
    let config: serde_json::Value =
        serde_json::from_str(&admin_get(&f.app, "/config").await).unwrap();
    let shard = &config["shards"][0];
    let mut udp: Vec<u64> = shard["udpPorts"]
        .as_array()
        .unwrap_or_else(|| panic!("udpPorts in {config}"))
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    udp.sort_unstable();
    let mut want: Vec<u64> = [f.echo, f.split, f.empty, f.orphan]
        .iter()
        .map(|p| u64::from(*p))
        .collect();
    want.sort_unstable();
    assert_eq!(udp, want);
    assert_eq!(shard["ports"], serde_json::json!([]));
    // The status page's data: UDP backends are relayed datagrams.
    let overview: serde_json::Value =
        serde_json::from_str(&admin_get(&f.app, "/api/overview").await).unwrap();
    let upstream = overview["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "infra/a:8080")
        .unwrap_or_else(|| panic!("infra/a:8080 in {overview}"))
        .clone();
    assert_eq!(upstream["protocol"], "udp");
    for name in ["echo", "echo-younger", "split", "cross"] {
        let r = route_status(&status, "UDPRoute", name);
        assert_eq!(parent_condition(r, "Accepted"), "True/Accepted", "{name}");
        assert_eq!(
            parent_condition(r, "ResolvedRefs"),
            "True/ResolvedRefs",
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_wildcard_listener_answers_from_the_address_the_client_sent_to() {
    // A Gateway without addresses binds 0.0.0.0. A client that sends to
    // 127.0.0.2 and is connected to it (as DNS resolvers are) accepts only
    // answers from 127.0.0.2; the kernel would pick 127.0.0.1 as the source
    // of a reply to 127.0.0.1 unless the relay says which address to use.
    let port = free_udp_port();
    let dir = config_dir();
    let (a, _) = udp_echo_backend("a").await;
    let mut text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
         metadata: {{name: sluice}}\nspec: {{controllerName: sluice.dev/gateway-controller}}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: gw, namespace: infra}}\n\
         spec:\n  gatewayClassName: sluice\n  listeners: [{{name: dns, port: {port}, protocol: UDP}}]\n\
         ---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\n\
         metadata: {{name: dns, namespace: infra}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: a, port: 8080}}]}}]\n"
    );
    text.push_str(&service_yaml("infra", "a", a));
    write_config(&dir, "config.yaml", &text);
    let _app = start(&dir).await;
    for target in ["127.0.0.2", "127.0.0.1", "127.0.0.3"] {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect((target, port)).await.unwrap();
        client.send(b"query").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, client.recv(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!("no answer from {target} (it came from elsewhere, or not at all)")
            })
            .unwrap();
        assert_eq!(&buf[..n], b"a:query", "{target}");
        // A second datagram of the session is answered the same way.
        client.send(b"again").await.unwrap();
        let n = tokio::time::timeout(WAIT, client.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no second answer from {target}"))
            .unwrap();
        assert_eq!(&buf[..n], b"a:again", "{target}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
