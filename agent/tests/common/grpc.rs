//! A real gRPC backend and client (tonic with prost messages, no generated
//! code): the backend answers every unary call on every path with who it
//! is, the path it saw and the request headers; the client calls through
//! the gateway over HTTP/2 with prior knowledge under a chosen authority.
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{uri::PathAndQuery, Request, Response, Uri};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tonic::{codec::ProstCodec, Status};

/// What the client sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// What the backend answers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The backend's name.
    #[prost(string, tag = "1")]
    pub backend: String,
    /// The `:path` it was called on (`/service/method`).
    #[prost(string, tag = "2")]
    pub path: String,
    /// The request message, echoed.
    #[prost(string, tag = "3")]
    pub message: String,
    /// Request headers as `name=value` (metadata, `te`, `content-type`).
    #[prost(string, repeated, tag = "4")]
    pub headers: Vec<String>,
}

impl EchoReply {
    /// The value of a request header the backend saw.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find_map(|h| h.strip_prefix(name)?.strip_prefix('='))
    }
}

/// The unary handler for one call: knows the backend and the path.
#[derive(Clone)]
struct Echo {
    backend: &'static str,
    path: String,
    log: super::Recorded,
}

impl tonic::server::UnaryService<EchoRequest> for Echo {
    type Response = EchoReply;
    type Future = Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<EchoReply>, Status>> + Send>,
    >;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        let (backend, path, log) = (self.backend, self.path.clone(), self.log.clone());
        Box::pin(async move {
            let headers = request
                .metadata()
                .clone()
                .into_headers()
                .iter()
                .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
                .collect();
            let message = request.into_inner().message;
            log.lock().unwrap().push(format!("{path} {message}"));
            if message == "fail" {
                return Err(Status::not_found("the backend said so"));
            }
            let mut response = tonic::Response::new(EchoReply {
                backend: backend.into(),
                path,
                message,
                headers,
            });
            response
                .metadata_mut()
                .insert("x-backend", backend.parse().unwrap());
            Ok(response)
        })
    }
}

/// Starts a gRPC backend named `name` on 127.0.0.1 that speaks HTTP/2 only
/// (prior knowledge), as gRPC servers do.
pub async fn grpc_backend(name: &'static str) -> SocketAddr {
    grpc_recording_backend(name).await.0
}

/// Like [`grpc_backend`], also recording each call as `path message`.
pub async fn grpc_recording_backend(name: &'static str) -> (SocketAddr, super::Recorded) {
    let seen = super::Recorded::default();
    let log = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, name, log.clone()));
        }
    });
    (addr, seen)
}

/// A gRPC backend behind TLS (ALPN `h2` only, as gRPC servers do) with a
/// certificate for `hostname` from a CA of its own; returns the CA's PEM.
pub async fn grpc_tls_backend(name: &'static str, hostname: &str) -> (SocketAddr, String) {
    let cert = TestCert::new(hostname);
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.leaf_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.leaf.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let addr = listener.local_addr().expect("addr");
    let log = super::Recorded::default();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls, name, log).await;
                }
            });
        }
    });
    (addr, cert.ca.pem())
}

/// A CA of its own and a certificate for one hostname signed by it.
pub struct TestCert {
    pub ca: rcgen::Certificate,
    pub leaf: rcgen::Certificate,
    pub leaf_key: rcgen::KeyPair,
}

impl TestCert {
    pub fn new(hostname: &str) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![hostname.to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        Self { ca, leaf, leaf_key }
    }

    /// A `kubernetes.io/tls` Secret `infra/name` with the certificate.
    pub fn secret_yaml(&self, name: &str) -> String {
        self.secret_yaml_in("infra", name)
    }

    /// A `kubernetes.io/tls` Secret `namespace/name` with the certificate.
    pub fn secret_yaml_in(&self, namespace: &str, name: &str) -> String {
        let indent = |t: &str| -> String { t.lines().map(|l| format!("    {l}\n")).collect() };
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
             type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&self.leaf.pem()),
            indent(&self.leaf_key.serialize_pem())
        )
    }
}

/// Serves one connection: HTTP/2 only, every path answered by [`Echo`].
async fn serve<T>(io: T, name: &'static str, log: super::Recorded)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let echo = Echo {
            backend: name,
            path: req.uri().path().to_owned(),
            log: log.clone(),
        };
        async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            Ok::<_, std::convert::Infallible>(grpc.unary(echo, req).await)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// One HTTP/2 connection as the service a tonic client sends on.
#[derive(Clone)]
pub struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower_service::Service<Request<tonic::body::Body>> for H2 {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A gRPC client of the gateway on 127.0.0.1:`port`, sending `authority`
/// as `:authority` (the host the routes are chosen by).
pub struct GrpcClient {
    grpc: tonic::client::Grpc<H2>,
}

impl GrpcClient {
    pub async fn connect(port: u16, authority: &str) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the gateway");
        Self::over(tcp, "http", authority).await
    }

    /// Over TLS (ALPN h2) to an HTTPS listener, trusting `ca`; SNI is the
    /// authority's host.
    pub async fn connect_tls(port: u16, authority: &str, ca: &rcgen::Certificate) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the gateway");
        let host = authority.split(':').next().unwrap_or(authority).to_owned();
        let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        Self::over(tls, "https", authority).await
    }

    async fn over<T>(io: T, scheme: &str, authority: &str) -> Self
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let origin: Uri = format!("{scheme}://{authority}").parse().expect("origin");
        Self {
            grpc: tonic::client::Grpc::with_origin(H2(send), origin),
        }
    }

    /// Calls `path` (`/service/method`) with `message` and the metadata
    /// `headers`.
    pub async fn call(
        &mut self,
        path: &str,
        message: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<tonic::Response<EchoReply>, Status> {
        let mut request = tonic::Request::new(EchoRequest {
            message: message.into(),
        });
        for (k, v) in headers {
            request
                .metadata_mut()
                .insert(*k, v.parse().expect("metadata value"));
        }
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("not ready: {e}")))?;
        let path: PathAndQuery = path.parse().expect("path");
        self.grpc
            .unary(
                request,
                path,
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
    }

    /// Calls and expects success: the reply.
    pub async fn ok(&mut self, path: &str, headers: &[(&'static str, &str)]) -> EchoReply {
        match self.call(path, "hi", headers).await {
            Ok(r) => r.into_inner(),
            Err(s) => panic!("{path}: {s:?}"),
        }
    }
}
