//! Config loading: YAML text → validated domain types, exactly as the
//! directory source and `sluice check-config` read a file. Bad input must be
//! a typed, located error (never a panic); a config that validates must
//! compile into a snapshot; reading a file document by document (the
//! directory source's cache) must accept what reading it whole accepts; and
//! an HTTPRoute the typed fast path decodes must equal the `Value` path's.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sluice::{
    config::{self, Config, ConfigError},
    control::{compile, ShardIds},
};

/// Every object of a config: kinds with names by name, the rest counted.
fn objects(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(
        c.gateway_classes
            .iter()
            .map(|g| format!("GatewayClass {}", g.name)),
    );
    out.extend(c.gateways.iter().map(|g| format!("Gateway {}", g.id)));
    out.extend(c.routes.iter().map(|r| format!("{:?} {}", r.kind, r.id)));
    out.extend(c.services.iter().map(|s| format!("Service {}", s.id)));
    out.extend(c.secrets.iter().map(|s| format!("Secret {}", s.id)));
    out.extend(c.config_maps.iter().map(|m| format!("ConfigMap {}", m.id)));
    out.push(format!(
        "{} EndpointSlices, {} SluicePolicies, {} ReferenceGrants, {} BackendTLSPolicies",
        c.endpoint_slices.len(),
        c.policies.len(),
        c.reference_grants.len(),
        c.backend_tls_policies.len()
    ));
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    // HTTPRoute documents decoded straight into their wire type (the
    // directory source's fast path) give exactly what the `Value` path gives.
    if let Err(e) = config::check_typed_routes(path, text) {
        panic!("{e}");
    }
    let by_document = config::load_text(path, text);
    match &by_document {
        Ok(cfg) => {
            // What validates is what the agent compiles on a reload.
            let compiled = compile(cfg, &mut ShardIds::default(), 1);
            for shard in &compiled.snapshot.shards {
                assert!(
                    cfg.gateways.iter().any(|g| g.id == shard.gateway),
                    "shard for a Gateway that is not in the config: {}",
                    shard.gateway
                );
            }
        }
        Err(ConfigError::Invalid(errors)) => {
            assert!(!errors.is_empty(), "an invalid config names its errors");
            for e in errors {
                assert_eq!(e.location.file, path, "{e}");
            }
        }
        Err(other) => panic!("reading text gave a non-validation error: {other}"),
    }
    // The same text parsed in one go (`parse_documents`): what it accepts,
    // the document-by-document reading accepts too, with the same objects.
    if let Ok(whole) = config::parse_documents([(path, text)]) {
        match &by_document {
            Ok(cfg) => assert_eq!(objects(cfg), objects(&whole)),
            Err(e) => panic!("accepted whole but not document by document: {e}"),
        }
    }
});
