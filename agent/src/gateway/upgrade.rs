//! HTTP/1.1 protocol upgrades (WebSocket and others) passed through: the
//! Upgrade request goes to the backend on a connection of its own, and once
//! both sides have switched protocols the two connections are spliced.
use std::{net::SocketAddr, time::Duration};

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::{forward::strip_hop_by_hop, Body};
use crate::{
    config::ObjectRef,
    policy::{Reason, Rejection},
    snapshot::upstream_tls::UpstreamTls,
};

/// A backend connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Longest wait for the backend's TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade`
/// with an `Upgrade` header). `h2c` upgrades are the server's own business
/// and never forwarded.
pub fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = req.headers().get(header::UPGRADE)?;
    let is_h2c = upgrade
        .to_str()
        .is_ok_and(|u| u.trim().eq_ignore_ascii_case("h2c"));
    (connection_upgrade && !is_h2c).then(|| upgrade.clone())
}

/// Sends the upgrade request (already rewritten for the backend, hop-by-hop
/// headers removed) and, on `101 Switching Protocols`, splices the
/// downstream and upstream connections in a task of their own.
pub async fn forward(
    mut upstream: Request<Body>,
    protocol: HeaderValue,
    endpoint: SocketAddr,
    tls: Option<&UpstreamTls>,
    downstream: OnUpgrade,
    route: &ObjectRef,
    shard: crate::snapshot::ShardId,
) -> Result<Response<Body>, Rejection> {
    let unavailable = |reason| Rejection::new(reason, "upstream unavailable");
    upstream
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    upstream
        .headers_mut()
        .insert(header::UPGRADE, protocol.clone());
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%route, %endpoint, error = %e, "upgrade: backend connect failed");
            return Err(unavailable(Reason::UpstreamConnect));
        }
        Err(_) => return Err(unavailable(Reason::UpstreamConnect)),
    };
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some(tls) => match super::upstream_tls::connect_for_upgrade(tls, tcp).await {
            Ok(s) => Box::new(s),
            Err(e) => {
                tracing::warn!(%route, %endpoint, policy = %tls.policy, error = %e, "upgrade: backend TLS handshake failed");
                return Err(unavailable(Reason::UpstreamError));
            }
        },
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%route, %endpoint, error = %e, "upgrade: backend handshake failed");
                return Err(unavailable(Reason::UpstreamError));
            }
        };
    // The shard's work like its connections' (gateway::fair): a tenant
    // flooding over WebSockets waits its turn too.
    tokio::spawn(super::fair::Fair::new(shard, async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade: backend connection ended with error");
        }
    }));
    let mut response = match sender.send_request(upstream).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%route, %endpoint, error = %e, "upgrade: backend request failed");
            return Err(unavailable(Reason::UpstreamError));
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The backend declined: an ordinary response.
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let route = route.clone();
    tokio::spawn(super::fair::Fair::new(shard, async move {
        let (down, up) = match tokio::join!(downstream, upstream_upgrade) {
            (Ok(d), Ok(u)) => (d, u),
            (d, u) => {
                tracing::debug!(%route, downstream = ?d.err(), upstream = ?u.err(), "upgrade not completed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((to_backend, to_client)) => {
                tracing::debug!(%route, to_backend, to_client, "upgraded connection closed")
            }
            Err(e) => tracing::debug!(%route, error = %e, "upgraded connection ended with error"),
        }
    }));
    // 101 keeps Connection/Upgrade (they describe the switch) and anything
    // else the backend said, e.g. Sec-WebSocket-Accept.
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol);
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_upgrades_but_not_h2c() {
        let req = |conn: &str, up: &str, version| {
            Request::builder()
                .version(version)
                .header("connection", conn)
                .header("upgrade", up)
                .body(())
                .unwrap()
        };
        let v11 = http::Version::HTTP_11;
        assert_eq!(
            upgrade_protocol(&req("keep-alive, Upgrade", "websocket", v11)).unwrap(),
            "websocket"
        );
        assert!(upgrade_protocol(&req("keep-alive", "websocket", v11)).is_none());
        assert!(upgrade_protocol(&req("upgrade", "h2c", v11)).is_none());
        assert!(upgrade_protocol(&req("upgrade", "websocket", http::Version::HTTP_10)).is_none());
    }
}
