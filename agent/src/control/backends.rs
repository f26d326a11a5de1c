//! Resolution of backendRefs and mirror targets: kind, ReferenceGrant,
//! Service and port, endpoints from EndpointSlices, the upstream protocol
//! (`appProtocol`) and the BackendTLSPolicy that covers the port. The status
//! model reports `ResolvedRefs` from the same checks.
use std::{cell::RefCell, collections::HashMap, net::SocketAddr, sync::Arc};

use crate::{
    config::{Config, Filter, HttpRoute, ObjectRef, RouteKind, RouteRule},
    snapshot::{AppProtocol, Backend, BackendGroup, BackendTarget, MirrorTarget, Unresolved},
};

use super::{
    backend_tls::TLS_APP_PROTOCOLS,
    refgrant::{Kind, ReferenceGrants},
};

/// Resolves backendRefs to endpoints through Services and EndpointSlices.
pub(super) struct BackendResolver<'a> {
    services: HashMap<&'a ObjectRef, &'a crate::config::Service>,
    slices: HashMap<&'a ObjectRef, Vec<&'a crate::config::EndpointSlice>>,
    grants: ReferenceGrants<'a>,
    tls_policies: &'a [crate::config::BackendTlsPolicy],
    /// Endpoints resolved in this compile by Service and port: every backend
    /// of a Service port shares one list.
    endpoints: RefCell<super::routes::EndpointMemo>,
    /// Resolved by earlier compiles: an equal list is shared instead of a
    /// new one, so routes compiled at different times share it too.
    previous: RefCell<super::routes::EndpointMemo>,
    /// One `Arc` per Service referenced in this compile, for the backends.
    ids: RefCell<HashMap<ObjectRef, Arc<ObjectRef>>>,
}

impl<'a> BackendResolver<'a> {
    /// A resolver that shares lists equal to those in `previous`.
    pub(super) fn with_previous(config: &'a Config, previous: super::routes::EndpointMemo) -> Self {
        let services = config.services.iter().map(|s| (&s.id, s)).collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for s in &config.endpoint_slices {
            slices.entry(&s.service).or_default().push(s);
        }
        Self {
            services,
            slices,
            grants: ReferenceGrants::new(config),
            tls_policies: &config.backend_tls_policies,
            endpoints: RefCell::default(),
            previous: RefCell::new(previous),
            ids: RefCell::default(),
        }
    }

    /// The shared `Arc` of a Service's namespace/name.
    fn id(&self, service: &ObjectRef) -> Arc<ObjectRef> {
        if let Some(id) = self.ids.borrow().get(service) {
            return id.clone();
        }
        let id = Arc::new(service.clone());
        self.ids.borrow_mut().insert(service.clone(), id.clone());
        id
    }

    /// The lists resolved by this compile and those of earlier compiles
    /// that routes kept from then may still hold (of Services that still
    /// exist), for [`Self::with_previous`].
    pub(super) fn into_endpoints(self) -> super::routes::EndpointMemo {
        let mut out = self.endpoints.into_inner();
        for (key, list) in self.previous.into_inner() {
            if self.services.contains_key(&key.0) {
                out.entry(key).or_insert(list);
            }
        }
        out
    }

    pub(super) fn group(&self, route: &HttpRoute, rule: &RouteRule) -> BackendGroup {
        let from = Kind::of_route(route.kind);
        BackendGroup::new(
            rule.backends
                .iter()
                .map(|b| {
                    let target = self.target_of_kind(
                        from,
                        &route.id,
                        b.unsupported_kind.as_deref(),
                        &b.service,
                        b.port,
                    );
                    let mut backend = Backend::new(self.id(&b.service), b.port, b.weight, target);
                    backend.filters = b.filters.clone();
                    backend.protocol = match route.kind {
                        // TLS and TCP connections (UDP datagrams) are relayed
                        // as bytes: the protocol is not looked at.
                        RouteKind::Http | RouteKind::Tls | RouteKind::Tcp | RouteKind::Udp => {
                            self.protocol(&b.service, b.port)
                        }
                        // gRPC needs HTTP/2: prior knowledge in the clear; over TLS
                        // the pool offers h2 by ALPN (and h2c is not looked at).
                        RouteKind::Grpc => AppProtocol::H2c,
                    };
                    backend
                })
                .collect(),
        )
    }

    pub(super) fn mirrors(&self, route: &HttpRoute, rule: &RouteRule) -> Vec<MirrorTarget> {
        let from = Kind::of_route(route.kind);
        rule.filters
            .iter()
            .filter_map(|f| match f {
                Filter::Mirror(m) => Some(m),
                _ => None,
            })
            .map(|m| {
                let target = self.target_of_kind(from, &route.id, None, &m.service, m.port);
                let mut backend = Backend::new(self.id(&m.service), m.port, 1, target);
                if route.kind == RouteKind::Grpc {
                    backend.protocol = AppProtocol::H2c;
                }
                MirrorTarget::new(backend, m.numerator, m.denominator)
            })
            .collect()
    }

    /// Checks a reference the way `ResolvedRefs` reports it: the kind, then
    /// the ReferenceGrant, then the Service and its port.
    pub(super) fn check(
        &self,
        route: &HttpRoute,
        unsupported_kind: Option<&str>,
        service: &ObjectRef,
        port: u16,
    ) -> Result<(&'a crate::config::Service, &'a crate::config::ServicePort), Unresolved> {
        self.check_from(
            Kind::of_route(route.kind),
            &route.id.namespace,
            unsupported_kind,
            service,
            port,
        )
    }

    /// [`Self::check`] for a reference from any kind of object (a policy's
    /// external authorization Service, say).
    pub(super) fn check_from(
        &self,
        from: Kind<'_>,
        from_ns: &str,
        unsupported_kind: Option<&str>,
        service: &ObjectRef,
        port: u16,
    ) -> Result<(&'a crate::config::Service, &'a crate::config::ServicePort), Unresolved> {
        if let Some(kind) = unsupported_kind {
            return Err(Unresolved {
                reason: "InvalidKind",
                message: format!(
                    "backend {service}: unsupported kind {kind} (supported: core Service)"
                ),
            });
        }
        if !self.grants.allows(from, from_ns, Kind::SERVICE, service) {
            return Err(Unresolved {
                reason: "RefNotPermitted",
                message: format!(
                    "backend {service}: cross-namespace reference not permitted by any \
                     ReferenceGrant in namespace {}",
                    service.namespace
                ),
            });
        }
        let Some(svc) = self.services.get(service).copied() else {
            return Err(Unresolved {
                reason: "BackendNotFound",
                message: format!("backend {service}: Service not found"),
            });
        };
        // The port of the route's transport protocol when the Service has
        // the number as both; else the one it has (files rarely say UDP).
        let udp = from == Kind::UDP_ROUTE;
        let Some(sp) = svc
            .ports
            .iter()
            .find(|p| p.port == port && p.udp == udp)
            .or_else(|| svc.ports.iter().find(|p| p.port == port))
        else {
            return Err(Unresolved {
                reason: "BackendNotFound",
                message: format!("backend {service}: Service has no port {port}"),
            });
        };
        if let Some(p) = sp.app_protocol.as_deref() {
            let covered = || {
                self.tls_policies
                    .iter()
                    .any(|t| super::backend_tls::targets(t, service, sp.name.as_deref()))
            };
            if TLS_APP_PROTOCOLS.contains(&p) && !covered() {
                return Err(Unresolved {
                    reason: "UnsupportedProtocol",
                    message: format!(
                        "backend {service}: port {port} appProtocol {p} needs TLS to the \
                         backend: attach a BackendTLSPolicy (CA and hostname to verify)"
                    ),
                });
            }
        }
        Ok((svc, sp))
    }

    /// The upstream protocol of a Service port (HTTP/1.1 when unknown).
    pub(super) fn protocol(&self, service: &ObjectRef, port: u16) -> AppProtocol {
        let app_protocol = self
            .services
            .get(service)
            .and_then(|s| {
                // HTTP is spoken over TCP: the TCP port of the number first.
                s.ports
                    .iter()
                    .find(|p| p.port == port && !p.udp)
                    .or_else(|| s.ports.iter().find(|p| p.port == port))
            })
            .and_then(|p| p.app_protocol.as_deref());
        match app_protocol {
            Some("kubernetes.io/h2c") => AppProtocol::H2c,
            _ => AppProtocol::Http1,
        }
    }

    fn target_of_kind(
        &self,
        from: Kind<'_>,
        route: &ObjectRef,
        unsupported_kind: Option<&str>,
        service: &ObjectRef,
        port: u16,
    ) -> BackendTarget {
        self.resolve(from, &route.namespace, unsupported_kind, service, port)
    }

    /// The endpoints of a Service port referenced by an object of `from`
    /// in `from_ns`.
    pub(super) fn target_from(
        &self,
        from: Kind<'_>,
        from_ns: &str,
        service: &ObjectRef,
        port: u16,
    ) -> BackendTarget {
        self.resolve(from, from_ns, None, service, port)
    }

    fn resolve(
        &self,
        from: Kind<'_>,
        from_ns: &str,
        unsupported_kind: Option<&str>,
        service: &ObjectRef,
        port: u16,
    ) -> BackendTarget {
        let (_, sp) = match self.check_from(from, from_ns, unsupported_kind, service, port) {
            Ok(x) => x,
            Err(u) => return BackendTarget::Invalid(Box::new(u)),
        };
        let key = (service.clone(), port, sp.udp);
        if let Some(e) = self.endpoints.borrow().get(&key) {
            return BackendTarget::Endpoints(e.clone());
        }
        let mut endpoints = Vec::new();
        for slice in self.slices.get(service).into_iter().flatten() {
            // The slice port for this service port: same name, else the only one.
            let slice_port = slice
                .ports
                .iter()
                .find(|p| p.name == sp.name)
                .or_else(|| (slice.ports.len() == 1).then(|| &slice.ports[0]))
                .map(|p| p.port)
                .or(sp.target_port)
                .unwrap_or(sp.port);
            endpoints.extend(
                slice
                    .addresses
                    .iter()
                    .map(|a| SocketAddr::new(*a, slice_port)),
            );
        }
        endpoints.sort();
        endpoints.dedup();
        let endpoints: Arc<[SocketAddr]> = match self.previous.borrow_mut().remove(&key) {
            Some(old) if *old == *endpoints => old,
            _ => endpoints.into(),
        };
        self.endpoints.borrow_mut().insert(key, endpoints.clone());
        BackendTarget::Endpoints(endpoints)
    }
}
