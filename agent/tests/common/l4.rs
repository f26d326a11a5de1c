//! TLS Passthrough, TCP and UDP test harness: backends that speak raw bytes
//! (TCP and UDP echo) or terminate TLS themselves, clients that verify the
//! backend's certificate through the gateway, and route status from admin
//! `/status`. Everything stays on 127.0.0.1.
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream, UdpSocket},
};
use tokio_rustls::client::TlsStream;

use super::grpc::TestCert;

/// How long a test waits for any one read or connection (generous: the
/// machine is shared; tests never assert how fast it was).
pub const WAIT: Duration = Duration::from_secs(10);

/// A TCP backend: on each connection it sends `name\n`, echoes what it
/// receives until the client closes its sending side, then sends `bye\n`
/// and closes. The `bye` after the client's half-close shows that the
/// half-close went through and the other direction stayed open.
pub async fn tcp_echo_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.write_all(b"bye\n").await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Source addresses a [`udp_echo_backend`] has received datagrams from.
pub type Sources = Arc<std::sync::Mutex<Vec<SocketAddr>>>;

/// A UDP backend: answers every datagram with `name:` and the datagram, to
/// its sender. Returns its address and the distinct source addresses seen,
/// in order (one per gateway session).
pub async fn udp_echo_backend(name: &'static str) -> (SocketAddr, Sources) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let sources: Sources = Arc::default();
    let seen = sources.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            {
                let mut seen = seen.lock().unwrap();
                if !seen.contains(&from) {
                    seen.push(from);
                }
            }
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    (addr, sources)
}

/// A port free for both TCP and UDP on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    loop {
        let port = super::free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A client socket of its own (its own source port: a session of its own).
pub async fn udp_client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind client")
}

/// Sends `payload` to the gateway's `port` and returns the answer, or
/// `None` when none comes within `within`.
pub async fn udp_ask(
    client: &UdpSocket,
    port: u16,
    payload: &[u8],
    within: Duration,
) -> Option<String> {
    client
        .send_to(payload, ("127.0.0.1", port))
        .await
        .expect("send");
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(within, client.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// A TLS backend with a certificate for `names` from a CA of its own: after
/// the handshake it behaves as [`tcp_echo_backend`] inside TLS. Returns its
/// address and the certificate (the client trusts only this CA).
pub async fn tls_echo_backend(name: &'static str, names: &str) -> (SocketAddr, TestCert) {
    let cert = TestCert::new(names);
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.leaf_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.leaf.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = s.write_all(b"bye\n").await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, cert)
}

/// How the client's bytes leave it, to exercise ClientHello reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// As the TLS library writes them.
    Whole,
    /// Every write one byte (each its own `write` on a no-delay socket, so
    /// the ClientHello leaves in many segments).
    OneByteWrites,
    /// The first TLS record (the ClientHello) re-framed into records of at
    /// most this many payload bytes (valid TLS: a handshake message may span
    /// records).
    SmallRecords(usize),
}

/// Connects through the gateway at `port` with TLS, `server_name` as SNI
/// (an IP address sends none), trusting only `ca`: a handshake that
/// succeeds was answered by the backend holding that CA's certificate.
pub async fn tls_connect(
    port: u16,
    server_name: &str,
    ca: &rcgen::Certificate,
    framing: Framing,
) -> std::io::Result<TlsStream<Shaped>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("name");
    let io = Shaped {
        inner: tcp,
        framing,
        first_record: Vec::new(),
        pending: Vec::new(),
    };
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, io),
    )
    .await
    .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// A TCP stream whose writes are shaped by a [`Framing`].
pub struct Shaped {
    pub inner: TcpStream,
    framing: Framing,
    /// [`Framing::SmallRecords`]: the first record, until it is complete.
    first_record: Vec<u8>,
    /// Bytes accepted from the caller, not yet written.
    pending: Vec<u8>,
}

impl Shaped {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Shaped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shaped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        match self.framing {
            Framing::Whole => Pin::new(&mut self.inner).poll_write(cx, buf),
            Framing::OneByteWrites => {
                Pin::new(&mut self.inner).poll_write(cx, &buf[..buf.len().min(1)])
            }
            Framing::SmallRecords(size) => {
                self.first_record.extend_from_slice(buf);
                let r = &self.first_record;
                if r.len() >= 5 {
                    let len = usize::from(u16::from_be_bytes([r[3], r[4]]));
                    if r.len() >= 5 + len {
                        let mut out = Vec::new();
                        for chunk in r[5..5 + len].chunks(size.max(1)) {
                            out.extend_from_slice(&r[..3]);
                            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                            out.extend_from_slice(chunk);
                        }
                        out.extend_from_slice(&r[5 + len..]);
                        self.pending = out;
                        self.first_record.clear();
                        self.framing = Framing::Whole;
                        // Written now if the socket takes it; else by flush.
                        let _ = self.drain(cx);
                    }
                }
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads one `\n`-terminated line (without the newline), bounded by [`WAIT`].
pub async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut line = Vec::new();
    let read = async {
        loop {
            let mut b = [0u8; 1];
            if s.read(&mut b).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            if b[0] == b'\n' {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            line.push(b[0]);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .map_err(|_| std::io::Error::other("no line in time"))?
}

/// Whether the gateway closes `s` (EOF or reset) without sending a byte,
/// waiting at most `within`.
pub async fn closed_without_data<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A Service in `infra` without endpoints (its routes have no backend).
pub const ENDPOINTLESS_SERVICE: &str = "---\napiVersion: v1\nkind: Service\n\
    metadata: {name: none, namespace: infra}\nspec: {ports: [{name: http, port: 8080}]}\n";

/// An L4 route (`apiVersion`/`kind`, e.g. `gateway.networking.k8s.io/v1`
/// `TCPRoute`) in `infra` on listener `listener` of Gateway `gw`, one rule
/// with `backends` (YAML flow items), created 2026-01-01.
pub fn l4_route_yaml(
    api_version: &str,
    kind: &str,
    name: &str,
    listener: &str,
    backends: &str,
) -> String {
    format!(
        "---\napiVersion: {api_version}\nkind: {kind}\n\
         metadata: {{name: {name}, namespace: infra, creationTimestamp: '2026-01-01T00:00:00Z'}}\n\
         spec:\n  parentRefs: [{{name: gw, sectionName: {listener}}}]\n  \
         rules: [{{backendRefs: [{backends}]}}]\n"
    )
}

/// The route `name` of `kind` in admin `/status`.
pub fn route_status<'a>(
    status: &'a serde_json::Value,
    kind: &str,
    name: &str,
) -> &'a serde_json::Value {
    status["httpRoutes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name && r["kind"] == kind)
        .unwrap_or_else(|| panic!("{kind} {name} in {status}"))
}

/// `status/reason` of condition `kind` of a route's first parent.
pub fn parent_condition(route: &serde_json::Value, kind: &str) -> String {
    let c = route["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("{kind} in {route}"));
    format!(
        "{}/{}",
        c["status"].as_str().unwrap(),
        c["reason"].as_str().unwrap()
    )
}
