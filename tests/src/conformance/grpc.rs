//! The GATEWAY-GRPC side of the runner: which Services get the gRPC echo
//! backend, and how a `grpc` case is replayed (upstream
//! `conformance/utils/grpc`: `MakeRequestAndExpectEventuallyConsistentResponse`
//! and the weighted-distribution sender of `grpcroute-weight`).
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_yaml::Value;

use super::{
    cases::{Case, GrpcCall},
    runner::futures_join_all,
    stats::{backend_of, judge_weights, Jitter},
    tls_backends::deployment,
};
use crate::grpc::{call, code_name, code_of, Call, Reply, SERVICE};

/// Upstream batch size and parallelism of the distribution check.
const REQUESTS: usize = 500;
const CONCURRENCY: usize = 10;

/// A Service is served by the gRPC echo backend when the Deployment it
/// selects sets `GRPC_ECHO_SERVER` in a container's environment: that is
/// what switches upstream's `echo-basic` image to its gRPC server (the
/// `grpc-infra-backend-v*` Deployments of the base manifests).
pub fn is_grpc_backend(docs: &[Value], service: &(String, String)) -> bool {
    let Some(dep) = deployment(docs, service) else {
        return false;
    };
    dep.get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
        .and_then(|p| p.get("containers"))
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("env").and_then(Value::as_sequence))
        .flatten()
        .any(|e| e.get("name").and_then(Value::as_str) == Some("GRPC_ECHO_SERVER"))
}

/// The expected gRPC status of a case (OK unless `grpc_status` says otherwise).
pub fn expected_code(c: &Case) -> Result<u32, String> {
    match &c.grpc_status {
        None => Ok(0),
        Some(n) => code_of(n).ok_or_else(|| format!("unknown gRPC status {n:?} in the case")),
    }
}

/// The call of a case; `host` is the authority upstream's client uses when
/// the case names none (the Gateway address, `ip:port`).
pub fn call_of(g: &GrpcCall, dial: SocketAddr, host: &str) -> Call {
    Call {
        dial,
        authority: g.authority.clone().unwrap_or_else(|| host.to_owned()),
        method: g.method.clone(),
        metadata: g.metadata.clone(),
    }
}

/// Upstream `compareResponse`: the code must match; for OK the fully
/// qualified method must be the one called, the namespace (when expected)
/// equal and the pod start with `backend`. Returns the pod.
pub fn compare(c: &Case, call: &Call, reply: &Reply) -> Result<String, String> {
    let want = expected_code(c)?;
    if reply.code != want {
        return Err(format!(
            "expected gRPC status {} ({want}), got {} ({}){}",
            code_name(want),
            code_name(reply.code),
            reply.code,
            if reply.message.is_empty() {
                String::new()
            } else {
                format!(": {}", reply.message)
            }
        ));
    }
    if reply.code != 0 {
        return Ok(String::new());
    }
    let a = reply
        .assertions
        .as_ref()
        .ok_or("OK without an EchoResponse")?;
    let method = format!("/{SERVICE}/{}", call.method);
    if a.fully_qualified_method != method {
        return Err(format!(
            "expected method {method}, the backend saw {}",
            a.fully_qualified_method
        ));
    }
    if !c.namespace.is_empty() && a.namespace != c.namespace {
        return Err(format!(
            "expected namespace {}, got {}",
            c.namespace, a.namespace
        ));
    }
    let backend = c.backend.as_deref().unwrap_or("");
    if !a.pod.starts_with(backend) {
        return Err(format!(
            "expected pod name to start with {backend}, got {}",
            a.pod
        ));
    }
    Ok(a.pod.clone())
}

/// Replays a `grpc` case: `required` passing calls in a row within `max`
/// (a failure resets the count and waits 1 s), then the weighted
/// distribution when the case has `weights`.
pub async fn run_case(
    c: &Case,
    g: &GrpcCall,
    dial: SocketAddr,
    host: &str,
    timeout: Duration,
    max: Duration,
    required: usize,
) -> Result<(), String> {
    let base = call_of(g, dial, host);
    let deadline = Instant::now() + max;
    let mut ok = 0;
    loop {
        let result = call(&base, timeout)
            .await
            .and_then(|r| compare(c, &base, &r));
        match result {
            Ok(_) => {
                ok += 1;
                if ok >= required {
                    break;
                }
            }
            Err(e) => {
                ok = 0;
                if Instant::now() >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    if !c.weights.is_empty() {
        check_weights(c, &base, timeout).await?;
    }
    Ok(())
}

/// Upstream `grpcroute-weight`: up to 10 batches of 500 calls (10 at a
/// time), each with probability 1/2 carrying `x-jitter` metadata; every call
/// must answer OK; the pods' backends must match the weights (see
/// [`judge_weights`]).
async fn check_weights(c: &Case, base: &Call, timeout: Duration) -> Result<(), String> {
    let mut jitter = Jitter(0x2545_f491_4f6c_dd1d);
    let mut last = String::new();
    for _batch in 0..10 {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut failure = None;
        for _chunk in 0..REQUESTS / CONCURRENCY {
            let mut calls = Vec::new();
            for _ in 0..CONCURRENCY {
                let n = jitter.next();
                let mut one = base.clone();
                if n.is_multiple_of(2) {
                    one.metadata
                        .insert("x-jitter".into(), (n % 10_000).to_string());
                }
                calls.push(one);
            }
            let replies = futures_join_all(calls.iter().map(|one| call(one, timeout))).await;
            for (one, r) in calls.iter().zip(replies) {
                match r.and_then(|r| compare(c, one, &r)) {
                    Ok(pod) => *counts.entry(backend_of(&pod)).or_default() += 1,
                    Err(e) => failure = Some(e),
                }
            }
        }
        last = match failure {
            Some(e) => e,
            None => match judge_weights(&counts, &c.weights, REQUESTS) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
        };
    }
    Err(format!("weighted distribution: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Assertions;

    fn case(yaml: &str) -> Case {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn grpc_backends_are_recognised_by_their_deployment() {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(
            r#"
kind: Service
apiVersion: v1
metadata: {name: g, namespace: ns}
spec: {selector: {app: g}}
---
kind: Deployment
apiVersion: apps/v1
metadata: {name: g, namespace: ns}
spec: {template: {metadata: {labels: {app: g}}, spec: {containers: [{env: [{name: GRPC_ECHO_SERVER, value: "1"}]}]}}}
---
kind: Service
apiVersion: v1
metadata: {name: h, namespace: ns}
spec: {selector: {app: h}}
---
kind: Deployment
apiVersion: apps/v1
metadata: {name: h, namespace: ns}
spec: {template: {metadata: {labels: {app: h}}, spec: {containers: [{env: [{name: POD_NAME}]}]}}}
"#,
        )
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
        assert!(is_grpc_backend(&docs, &("ns".into(), "g".into())));
        assert!(!is_grpc_backend(&docs, &("ns".into(), "h".into())));
        assert!(!is_grpc_backend(&docs, &("ns".into(), "missing".into())));
    }

    use serde::Deserialize;

    #[test]
    fn comparison_follows_upstream() {
        let c = case("{grpc: {method: Echo}, backend: b-v1, namespace: ns}");
        let call = call_of(
            c.grpc.as_ref().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
            "1.2.3.4:80",
        );
        assert_eq!(call.authority, "1.2.3.4:80");
        let ok = |pod: &str, ns: &str, method: &str| Reply {
            code: 0,
            message: String::new(),
            assertions: Some(Assertions {
                fully_qualified_method: format!("/{SERVICE}/{method}"),
                pod: pod.into(),
                namespace: ns.into(),
                ..Default::default()
            }),
        };
        assert_eq!(
            compare(&c, &call, &ok("b-v1-x-y", "ns", "Echo")).unwrap(),
            "b-v1-x-y"
        );
        assert!(compare(&c, &call, &ok("b-v2-x-y", "ns", "Echo")).is_err());
        assert!(compare(&c, &call, &ok("b-v1-x-y", "other", "Echo")).is_err());
        assert!(compare(&c, &call, &ok("b-v1-x-y", "ns", "EchoTwo")).is_err());
        let unimplemented = Reply {
            code: 12,
            message: String::new(),
            assertions: None,
        };
        assert!(compare(&c, &call, &unimplemented).is_err());
        let c = case("{grpc: {method: EchoThree}, grpc_status: Unimplemented}");
        assert!(compare(&c, &call, &unimplemented).is_ok());
        assert!(compare(&c, &call, &ok("b-v1-x-y", "ns", "EchoThree")).is_err());
    }
}
