//! Raw TCP and TLS cases of the GATEWAY-TLS and GATEWAY-TCP profiles, and the
//! backend they talk to: upstream `echo-basic` in its TCP mode (Deployments
//! that set `TCP_ECHO_SERVER`), which greets every connection, answers
//! `PING`, `IS_TLS` and `TEST` (a JSON line naming its pod and namespace and,
//! on its TLS port, the SNI it saw) line by line.
//!
//! Client side, three procedures of upstream's `conformance/utils/tcp` and
//! `utils/tls`: a TCP or TLS exchange with that server through the Gateway
//! (`tcp` cases), N one-shot `TEST` exchanges whose pods must all belong to
//! one backend (`tcp.samples`) or follow weights (`weights`), and a TLS dial
//! that the Gateway must reject (`tls_rejected`).
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use super::{
    cases::Case,
    certs::{GeneratedSecret, SuiteCerts},
    runner::futures_join_all,
    stats::{backend_of, judge_weights},
};

/// The greeting line of upstream's TCP echo server.
pub const WELCOME: &str = "Gateway API Test TCP Server\n";
/// echo-basic's default plain TCP port (`TCP_PORT`); Service `targetPort`s
/// name it.
pub const PLAIN_PORT: u16 = 3000;
/// echo-basic's default TLS port (`TLS_PORT`).
pub const TLS_PORT: u16 = 8443;

/// A `tcp` case: one exchange with the TCP echo server through the Gateway.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TcpCase {
    /// Dial TLS (upstream `useTLS`) instead of plain TCP.
    #[serde(default)]
    pub tls: bool,
    /// TLS server name sent by the client.
    #[serde(default)]
    pub sni: Option<String>,
    /// ConfigMap (`{namespace, name}`) whose `ca.crt` the client trusts.
    #[serde(default)]
    pub ca_config_map: Option<Value>,
    /// The echo server must say whether it saw TLS (`IS_TLS`): true behind a
    /// Passthrough listener, false behind Terminate or TCP.
    #[serde(default)]
    pub backend_is_tls: bool,
    /// The SNI the echo server must report (`tls.serverName`); unchecked
    /// when unset (upstream `Hostname`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// After the exchange, that many plain one-shot `TEST` exchanges; every
    /// answering pod must belong to the case's `backend`.
    #[serde(default)]
    pub samples: Option<usize>,
}

/// A `tls_rejected` case: a TLS dial with this SNI must eventually be
/// rejected by the Gateway (connection closed or reset during the handshake).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsRejected {
    pub sni: String,
}

/// What the TCP echo server reports (`TEST`), upstream's field names.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Assertions {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub ingress: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub tcpport: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tlsport: String,
    #[serde(rename = "isTLS", default)]
    pub is_tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsAssertions>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsAssertions {
    #[serde(default)]
    pub version: String,
    #[serde(rename = "serverName", default)]
    pub server_name: String,
    #[serde(rename = "cipherSuite", default)]
    pub cipher_suite: String,
}

/// A Service whose Deployment runs echo-basic's TCP server.
pub fn is_tcp_echo_backend(docs: &[Value], service: &(String, String)) -> bool {
    super::tls_backends::deployment(docs, service)
        .and_then(|d| {
            d.get("spec")?
                .get("template")?
                .get("spec")?
                .get("containers")
        })
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("env").and_then(Value::as_sequence))
        .flatten()
        .any(|e| e.get("name").and_then(Value::as_str) == Some("TCP_ECHO_SERVER"))
}

/// The TLS config of a TCP echo backend's TLS port: the Service's generated
/// certificate, no ALPN (echo-basic's TCP server announces none).
pub fn tcp_echo_tls(
    docs: &[Value],
    service: &(String, String),
    certs: &SuiteCerts,
) -> Result<Option<Arc<ServerConfig>>> {
    Ok(
        super::tls_backends::server_config(docs, service, certs)?.map(|c| {
            let mut c = (*c).clone();
            c.alpn_protocols.clear();
            Arc::new(c)
        }),
    )
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Serves the TCP echo protocol on `listener`; with `tls`, every connection
/// is a TLS one (echo-basic's TLS port).
pub async fn serve_tcp_echo(
    listener: TcpListener,
    identity: Assertions,
    tls: Option<Arc<ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let identity = Arc::new(identity);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, identity) = (acceptor.clone(), identity.clone());
        tokio::spawn(async move {
            let mut a = (*identity).clone();
            let io: Box<dyn Io> = match acceptor {
                Some(acc) => {
                    let Ok(s) = acc.accept(stream).await else {
                        return;
                    };
                    let conn = s.get_ref().1;
                    a.is_tls = true;
                    a.tls = Some(TlsAssertions {
                        version: conn
                            .protocol_version()
                            .map(|v| format!("{v:?}"))
                            .unwrap_or_default(),
                        server_name: conn.server_name().unwrap_or_default().to_owned(),
                        cipher_suite: conn
                            .negotiated_cipher_suite()
                            .map(|c| format!("{:?}", c.suite()))
                            .unwrap_or_default(),
                    });
                    Box::new(s)
                }
                None => Box::new(stream),
            };
            let _ = echo_session(io, &a).await;
        });
    }
}

async fn echo_session(io: Box<dyn Io>, a: &Assertions) -> std::io::Result<()> {
    let payload = serde_json::to_string(a).map_err(std::io::Error::other)?;
    let mut io = BufReader::new(io);
    io.write_all(WELCOME.as_bytes()).await?;
    io.flush().await?;
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let answer = match line.trim_end_matches(['\r', '\n']) {
            "TEST" => format!("{payload}\n"),
            "IS_TLS" => format!("{}\n", a.is_tls),
            "PING" => "PONG\n".to_owned(),
            _ => continue,
        };
        io.write_all(answer.as_bytes()).await?;
        io.flush().await?;
    }
}

/// Where and how a case dials.
pub struct Target<'a> {
    pub dial: SocketAddr,
    pub certs: &'a SuiteCerts,
    pub request_timeout: Duration,
    pub max_time: Duration,
}

/// The client config trusting only `ca` (a ConfigMap), or every runner CA.
fn client_config(
    certs: &SuiteCerts,
    ca: Option<&Value>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let trusted = match ca {
        None => None,
        Some(r) => {
            let (ns, name) = (
                r.get("namespace").and_then(Value::as_str).unwrap_or(""),
                r.get("name").and_then(Value::as_str).unwrap_or(""),
            );
            let m = certs
                .config_maps
                .iter()
                .find(|c| c.namespace == ns && c.name == name)
                .ok_or_else(|| format!("ConfigMap {ns}/{name} is not generated by the runner"))?;
            // Only `ca_der` is read: the client trusts exactly this CA.
            Some(GeneratedSecret {
                namespace: ns.into(),
                name: name.into(),
                sans: Vec::new(),
                cert_pem: String::new(),
                cert_der: Vec::new(),
                key_pem: String::new(),
                key_der: Vec::new(),
                ca_der: m.cert_der.clone(),
            })
        }
    };
    let (config, _) = certs.client_config(trusted.as_ref(), None, &[])?;
    Ok(Arc::new(config))
}

async fn dial(
    t: &Target<'_>,
    tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
) -> Result<Box<dyn Io>, std::io::Error> {
    let tcp = tokio::time::timeout(t.request_timeout, TcpStream::connect(t.dial))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let Some((config, sni)) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let s = tokio::time::timeout(
        t.request_timeout,
        tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Box::new(s))
}

async fn read_line(io: &mut BufReader<Box<dyn Io>>, timeout: Duration) -> Result<String, String> {
    let mut line = String::new();
    match tokio::time::timeout(timeout, io.read_line(&mut line)).await {
        Err(_) => Err("no answer in time".into()),
        Ok(Err(e)) => Err(format!("reading: {e}")),
        Ok(Ok(0)) => Err(format!("connection closed (read {line:?})")),
        Ok(Ok(_)) => Ok(line),
    }
}

async fn send(io: &mut BufReader<Box<dyn Io>>, cmd: &str) -> Result<(), String> {
    io.get_mut()
        .write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(|e| format!("writing {cmd}: {e}"))
}

/// One upstream `WaitForValidTCPResponse` attempt: greeting, `PING`,
/// `IS_TLS`, `TEST`. Transport errors are retried by the caller; the answers
/// are judged once ([`judge`]).
async fn exchange(io: Box<dyn Io>, timeout: Duration) -> Result<[String; 4], String> {
    let mut io = BufReader::new(io);
    let welcome = read_line(&mut io, timeout).await?;
    send(&mut io, "PING").await?;
    let pong = read_line(&mut io, timeout).await?;
    send(&mut io, "IS_TLS").await?;
    let is_tls = read_line(&mut io, timeout).await?;
    send(&mut io, "TEST").await?;
    let test = read_line(&mut io, timeout).await?;
    Ok([welcome, pong, is_tls, test])
}

/// Judges the answers of one exchange as upstream's assertions do.
pub fn judge(
    tcp: &TcpCase,
    backend: Option<&str>,
    namespace: &str,
    [welcome, pong, is_tls, test]: &[String; 4],
) -> Result<Assertions, String> {
    let mut problems = Vec::new();
    if welcome != WELCOME {
        problems.push(format!("greeting {welcome:?}"));
    }
    if pong != "PONG\n" {
        problems.push(format!("PING answered {pong:?}"));
    }
    if is_tls.trim_end() != tcp.backend_is_tls.to_string() {
        problems.push(format!(
            "IS_TLS answered {:?}, expected {}",
            is_tls.trim_end(),
            tcp.backend_is_tls
        ));
    }
    let a: Assertions = serde_json::from_str(test.trim_end())
        .map_err(|e| format!("TEST answered {test:?}: {e}"))?;
    if a.namespace != namespace {
        problems.push(format!(
            "namespace {:?}, expected {namespace:?}",
            a.namespace
        ));
    }
    if let Some(b) = backend {
        if !a.pod.starts_with(&format!("{b}-")) {
            problems.push(format!("pod {:?} is not of backend {b}", a.pod));
        }
    }
    if let Some(sn) = &tcp.server_name {
        let got = a.tls.as_ref().map(|t| t.server_name.as_str());
        if got != Some(sn.as_str()) {
            problems.push(format!("backend saw SNI {got:?}, expected {sn:?}"));
        }
    }
    if problems.is_empty() {
        Ok(a)
    } else {
        Err(problems.join("; "))
    }
}

/// A `tcp` case: upstream `MakeTCPRequestAndExpectEventuallyValidResponse`
/// (connection and read errors are retried every second within `max_time`;
/// the first complete exchange is judged, as upstream's non-fatal asserts
/// do), then `samples`; with `weights`, upstream's weighted distribution
/// instead.
pub async fn run_case(c: &Case, tcp: &TcpCase, t: &Target<'_>) -> Result<(), String> {
    let config = if tcp.tls {
        Some(client_config(t.certs, tcp.ca_config_map.as_ref())?)
    } else {
        None
    };
    let sni = tcp.sni.clone().unwrap_or_default();
    let deadline = Instant::now() + t.max_time;
    if !c.weights.is_empty() {
        // Upstream `ExpectAddressBeAvailable` (a TCP connection succeeds),
        // then only the distribution is judged.
        while let Err(e) = dial(t, None).await {
            if Instant::now() >= deadline {
                return Err(format!("connecting to {}: {e}", t.dial));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        return check_weights(&c.weights, t).await;
    }
    loop {
        let attempt = match dial(t, config.as_ref().map(|c| (c, sni.as_str()))).await {
            Ok(io) => exchange(io, t.request_timeout).await,
            Err(e) => Err(format!("connecting to {}: {e}", t.dial)),
        };
        match attempt {
            Ok(answers) => {
                judge(tcp, c.backend.as_deref(), &c.namespace, &answers)?;
                break;
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    if let Some(n) = tcp.samples {
        let backend = c.backend.as_deref().unwrap_or("");
        for i in 0..n {
            let pod = echo_once(t).await.map_err(|e| format!("sample {i}: {e}"))?;
            if !pod.starts_with(&format!("{backend}-")) {
                return Err(format!(
                    "sample {}/{n} reached pod {pod:?}, expected backend {backend}",
                    i + 1
                ));
            }
        }
    }
    Ok(())
}

/// Upstream `EchoSendOnce`: plain TCP, greeting, `TEST`, the pod name.
pub async fn echo_once(t: &Target<'_>) -> Result<String, String> {
    let io = dial(t, None)
        .await
        .map_err(|e| format!("connecting to {}: {e}", t.dial))?;
    let mut io = BufReader::new(io);
    let welcome = read_line(&mut io, t.request_timeout).await?;
    if welcome != WELCOME {
        return Err(format!("unexpected greeting {welcome:?}"));
    }
    send(&mut io, "TEST").await?;
    let line = read_line(&mut io, t.request_timeout).await?;
    let a: Assertions = serde_json::from_str(line.trim_end())
        .map_err(|e| format!("TEST answered {line:?}: {e}"))?;
    if a.pod.is_empty() {
        return Err(format!("TEST answer without a pod: {line:?}"));
    }
    Ok(a.pod)
}

/// Upstream `TestWeightedDistribution` with `EchoSendOnce` as sender: 500
/// exchanges, 10 at a time; any error fails the batch; up to 10 batches.
async fn check_weights(weights: &BTreeMap<String, u32>, t: &Target<'_>) -> Result<(), String> {
    const TOTAL: usize = 500;
    const CONCURRENCY: usize = 10;
    let mut last = String::new();
    for _batch in 0..10 {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut failure = None;
        for _chunk in 0..TOTAL / CONCURRENCY {
            for r in futures_join_all((0..CONCURRENCY).map(|_| echo_once(t))).await {
                match r {
                    Ok(pod) => *counts.entry(backend_of(&pod)).or_default() += 1,
                    Err(e) => failure = Some(e),
                }
            }
        }
        last = match failure {
            Some(e) => format!("error while sending requests: {e}"),
            None => match judge_weights(&counts, weights, TOTAL) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
        };
    }
    Err(format!("weighted distribution: {last}"))
}

/// Upstream's `isConnectionRejected`: the handshake ended by EOF or reset.
fn rejected(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), UnexpectedEof | ConnectionReset)
}

/// Upstream `MakeTLSConnectionAndExpectEventuallyConnectionRejection`: every
/// second within `max_time`, a TLS dial with `sni`; passes once the Gateway
/// closes or resets the connection during the handshake. A completed
/// handshake, a certificate error or a refused connection is retried.
pub async fn run_rejection(r: &TlsRejected, t: &Target<'_>) -> Result<(), String> {
    let config = client_config(t.certs, None)?;
    let deadline = Instant::now() + t.max_time;
    loop {
        let last = match dial(t, Some((&config, &r.sni))).await {
            Ok(_) => format!("TLS connection with SNI {} was accepted", r.sni),
            Err(e) if rejected(&e) => return Ok(()),
            Err(e) => format!("TLS dial with SNI {}: {e} (not a rejection)", r.sni),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Assertions {
        Assertions {
            namespace: "infra".into(),
            service: "tcp-backend".into(),
            pod: "tcp-backend-5c9d7f8b4-conf0".into(),
            tcpport: "3000".into(),
            ..Default::default()
        }
    }

    async fn target_for(identity: Assertions) -> (SocketAddr, SuiteCerts) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve_tcp_echo(l, identity, None));
        (addr, SuiteCerts::default())
    }

    fn t(dial: SocketAddr, certs: &SuiteCerts) -> Target<'_> {
        Target {
            dial,
            certs,
            request_timeout: Duration::from_secs(2),
            max_time: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn plain_exchange_is_judged_like_upstream() {
        let (addr, certs) = target_for(identity()).await;
        let case = Case {
            backend: Some("tcp-backend".into()),
            namespace: "infra".into(),
            ..Default::default()
        };
        let tcp = TcpCase {
            samples: Some(3),
            ..Default::default()
        };
        run_case(&case, &tcp, &t(addr, &certs)).await.unwrap();
        assert_eq!(
            echo_once(&t(addr, &certs)).await.unwrap(),
            "tcp-backend-5c9d7f8b4-conf0"
        );
        // Wrong backend, namespace or TLS expectation each fail.
        let other = Case {
            backend: Some("tcp-backend-2".into()),
            namespace: "other".into(),
            ..case.clone()
        };
        let e = run_case(&other, &TcpCase::default(), &t(addr, &certs))
            .await
            .unwrap_err();
        assert!(
            e.contains("namespace") && e.contains("not of backend"),
            "{e}"
        );
        let tls = TcpCase {
            backend_is_tls: true,
            ..Default::default()
        };
        let e = run_case(&case, &tls, &t(addr, &certs)).await.unwrap_err();
        assert!(e.contains("IS_TLS"), "{e}");
    }

    #[test]
    fn server_name_is_compared_when_given() {
        let a = Assertions {
            tls: Some(TlsAssertions {
                server_name: "abc.example.com".into(),
                ..Default::default()
            }),
            ..identity()
        };
        let answers = |tls: &str| {
            [
                WELCOME.to_owned(),
                "PONG\n".to_owned(),
                format!("{tls}\n"),
                serde_json::to_string(&a).unwrap(),
            ]
        };
        let tcp = TcpCase {
            backend_is_tls: true,
            server_name: Some("abc.example.com".into()),
            ..Default::default()
        };
        judge(&tcp, Some("tcp-backend"), "infra", &answers("true")).unwrap();
        let other = TcpCase {
            server_name: Some("other.example.com".into()),
            ..tcp
        };
        let e = judge(&other, None, "infra", &answers("false")).unwrap_err();
        assert!(e.contains("SNI") && e.contains("IS_TLS"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_handshake_is_a_rejection_an_open_port_is_not() {
        // A server that closes every connection at once: rejected.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closing = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        let certs = SuiteCerts::default();
        let r = TlsRejected {
            sni: "non.matching.com".into(),
        };
        run_rejection(&r, &t(closing, &certs)).await.unwrap();
        // A server that speaks (not TLS) is not a rejection.
        let (echo, certs) = target_for(identity()).await;
        let e = run_rejection(&r, &t(echo, &certs)).await.unwrap_err();
        assert!(e.contains("not a rejection"), "{e}");
    }

    #[test]
    fn tcp_echo_ports_map_by_target_port_and_create_stamps_creation_order() {
        use super::super::manifests::{self, CREATED_BEFORE, CREATED_BY_STEP};
        let docs = manifests::parse_docs(
            "apiVersion: v1\nkind: Service\nmetadata: {name: tcp-backend, namespace: infra}\n\
             spec: {ports: [{name: plain, port: 3000, targetPort: 3000}, {name: tls, port: 8443, targetPort: 8443}]}\n\
             ---\napiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\n\
             metadata: {name: older, namespace: infra}\nspec: {}\n",
            "c",
        )
        .unwrap();
        let key = ("infra".to_owned(), "tcp-backend".to_owned());
        let backends = BTreeMap::from([(key.clone(), 4000)]);
        let ports = BTreeMap::from([
            (("infra".into(), "tcp-backend".into(), PLAIN_PORT), 4000),
            (("infra".into(), "tcp-backend".into(), TLS_PORT), 4443),
        ]);
        let p = manifests::prepare_with(&docs, 0, &backends, &ports).unwrap();
        let yaml = p.to_yaml().unwrap();
        assert!(
            yaml.contains("port: 4000") && yaml.contains("port: 4443"),
            "{yaml}"
        );

        let mut docs = docs;
        let newer: Value = serde_yaml::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\n\
             metadata: {name: newer, namespace: infra}\nspec: {}\n",
        )
        .unwrap();
        manifests::create(&mut docs, &newer).unwrap();
        let stamp = |i: usize| {
            docs[i]["metadata"]["creationTimestamp"]
                .as_str()
                .map(str::to_owned)
        };
        assert_eq!(stamp(0), None, "only Gateway API objects are stamped");
        assert_eq!(stamp(1).as_deref(), Some(CREATED_BEFORE));
        assert_eq!(stamp(2).as_deref(), Some(CREATED_BY_STEP));
        assert_eq!(docs[2]["metadata"]["generation"].as_i64(), Some(1));
        assert!(
            manifests::create(&mut docs, &newer).is_err(),
            "creating twice"
        );
    }
}
