//! `healthCheck` (active): a task per (policy, backend, endpoint) asks the
//! endpoint `GET path` every `interval`; `unhealthyThreshold` failures in a
//! row take it out of the rotation, `healthyThreshold` successes in a row
//! bring it back. A check fails when no connection can be made, no answer
//! comes within `timeout`, or the status is not one of `expectedStatuses`.
//!
//! The tasks belong to the backend's [`super::BackendState`] (one per
//! endpoint, whatever the number of workers, routes or Gateways that use
//! it): started when a compile first lists the endpoint, stopped when the
//! endpoint leaves or the state is dropped (policy or backend gone). An
//! endpoint starts healthy, so a new configuration never answers 503 while
//! its first checks are under way.
use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::{endpoint::EndpointState, BackendState};

/// The `healthCheck` section.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheckSpec {
    /// Path (and query) of the request.
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
    /// Failures in a row that take a healthy endpoint out.
    pub unhealthy_threshold: u32,
    /// Statuses that pass (default 200).
    pub expected_statuses: Vec<u16>,
}

/// Why a check failed (logged).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP exchange: {0}")]
    Http(#[source] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("status {0} is not expected")]
    Status(StatusCode),
}

impl HealthCheckSpec {
    /// One check of `addr`.
    pub async fn check(&self, addr: SocketAddr) -> Result<(), CheckError> {
        match tokio::time::timeout(self.timeout, self.exchange(addr)).await {
            Ok(Ok(status)) if self.expected_statuses.contains(&status.as_u16()) => Ok(()),
            Ok(Ok(status)) => Err(CheckError::Status(status)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CheckError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, addr: SocketAddr) -> Result<StatusCode, CheckError> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(CheckError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(CheckError::Http)?;
        // The connection ends with this check (dropped with `tx`).
        let conn = tokio::spawn(conn);
        let req = Request::get(self.path.as_str())
            .header(http::header::HOST, addr.to_string())
            .header(http::header::USER_AGENT, "sluice-health-check")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let resp = tx.send_request(req).await.map_err(CheckError::Http)?;
        let status = resp.status();
        // Read (bounded by the timeout) so the backend sees a complete exchange.
        let _ = resp.into_body().collect().await;
        drop(tx);
        conn.abort();
        Ok(status)
    }

    /// Records a check's result on `ep`; `Some(healthy)` when its state
    /// changed.
    pub fn record(&self, ep: &EndpointState, passed: bool) -> Option<bool> {
        let healthy = ep.healthy.load(Ordering::Relaxed);
        if passed {
            ep.check_failures.store(0, Ordering::Relaxed);
            let n = ep.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
            if !healthy && n >= self.healthy_threshold {
                ep.healthy.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            ep.check_successes.store(0, Ordering::Relaxed);
            let n = ep.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if healthy && n >= self.unhealthy_threshold {
                ep.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

/// Checks `ep` every `spec.interval` for as long as the backend state
/// lives (the task is also aborted when the endpoint leaves).
pub(super) async fn run(spec: HealthCheckSpec, ep: Arc<EndpointState>, state: Weak<BackendState>) {
    let mut every = tokio::time::interval(spec.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let result = spec.check(ep.addr).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        state.counted.checks[usize::from(result.is_err())].inc();
        match spec.record(&ep, result.is_ok()) {
            Some(true) => {
                tracing::info!(backend = %state.name, endpoint = %ep.addr, "endpoint healthy again: back in the rotation");
                state.recount_unhealthy();
            }
            Some(false) => {
                tracing::warn!(
                    backend = %state.name,
                    endpoint = %ep.addr,
                    error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                    "endpoint unhealthy: out of the rotation"
                );
                state.recount_unhealthy();
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HealthCheckSpec {
        HealthCheckSpec {
            path: http::uri::PathAndQuery::from_static("/healthz"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_statuses: vec![200],
        }
    }

    #[test]
    fn thresholds_decide_the_transitions() {
        let (s, e) = (spec(), EndpointState::new("10.0.0.1:80".parse().unwrap()));
        assert_eq!(s.record(&e, false), None);
        assert_eq!(s.record(&e, false), None);
        assert_eq!(s.record(&e, true), None, "a success resets the failures");
        assert_eq!(s.record(&e, false), None);
        assert_eq!(s.record(&e, false), None);
        assert_eq!(s.record(&e, false), Some(false));
        assert!(!e.is_healthy());
        assert_eq!(s.record(&e, false), None, "already out");
        assert_eq!(s.record(&e, true), None);
        assert_eq!(s.record(&e, true), Some(true));
        assert!(e.is_healthy());
    }

    #[tokio::test]
    async fn a_check_passes_on_an_expected_status_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in [200u16, 503] {
                let (stream, _) = listener.accept().await.unwrap();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    assert_eq!(req.uri().path(), "/healthz");
                    let mut r = http::Response::new(http_body_util::Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        });
        assert!(spec().check(addr).await.is_ok());
        assert!(matches!(
            spec().check(addr).await,
            Err(CheckError::Status(StatusCode::SERVICE_UNAVAILABLE))
        ));
        // Nothing listens there any more: the connection is refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(matches!(
            spec().check(closed).await,
            Err(CheckError::Connect(_))
        ));
    }
}
