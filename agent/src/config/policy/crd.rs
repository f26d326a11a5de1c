//! The SluicePolicy CustomResourceDefinition, generated from [`super::wire`]
//! so that the schema the API server enforces and the types the agent reads
//! are one definition. `cargo xtask gen-crd` writes it to [`CRD_PATH`]; a
//! test fails when the committed file differs.
use kube::CustomResourceExt;

use super::wire::SluicePolicy;

/// Where the CRD is committed, relative to the workspace root.
pub const CRD_PATH: &str = "deploy/daemonset/crds/sluice.dev_sluicepolicies.yaml";

/// Errors generating the CRD.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("serializing the SluicePolicy CRD as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// The CRD as YAML, with a header saying where it comes from.
pub fn crd_yaml() -> Result<String, CrdError> {
    let body = serde_yaml::to_string(&SluicePolicy::crd())?;
    Ok(format!(
        "# Generated from agent/src/config/policy/wire.rs by `cargo xtask gen-crd`; do not edit.\n\
         # A test (config::policy::crd) fails when this file and the Rust types disagree.\n\
         {body}"
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn workspace_file(path: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    #[test]
    fn committed_crd_is_the_generated_one() {
        let committed = workspace_file(CRD_PATH);
        let generated = crd_yaml().unwrap();
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .map_or_else(
                    || "length differs".to_owned(),
                    |i| format!("first difference at line {}", i + 1),
                );
            panic!("{CRD_PATH} is not what the Rust types generate ({line}); run `cargo xtask gen-crd`");
        }
    }

    #[test]
    fn example_policies_load_through_the_agent_conversion() {
        let path = "deploy/daemonset/examples/sluicepolicy.yaml";
        let text = workspace_file(path);
        let config = crate::config::parse_documents([(Path::new(path), text.as_str())])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.policies.len(), 3);
        // Every section appears in the examples, and none was read as empty.
        let mut seen = std::collections::BTreeSet::new();
        for p in &config.policies {
            assert!(p.invalid.is_none() && !p.targets.is_empty());
            for (level, s) in [("", &p.defaults), ("override.", &p.overrides)] {
                let set = [
                    ("jwt", s.jwt.is_some()),
                    ("apiKeys", s.api_keys.is_some()),
                    ("basicAuth", s.basic_auth.is_some()),
                    ("extAuth", s.ext_auth.is_some()),
                    ("authentication", s.authentication.is_some()),
                    ("authorization", s.authorization.is_some()),
                    ("ipAllow", s.ip_allow.is_some()),
                    ("ipDeny", s.ip_deny.is_some()),
                    ("limits", s.limits.is_some()),
                    ("transform", s.transform.is_some()),
                    ("cors", s.cors.is_some()),
                    ("rateLimit", s.rate_limit.is_some()),
                    ("connection", s.connection.is_some()),
                ];
                seen.extend(
                    set.iter()
                        .filter(|(_, on)| *on)
                        .map(|(name, _)| format!("{level}{name}")),
                );
            }
        }
        let bare: std::collections::BTreeSet<&str> = seen
            .iter()
            .map(|s| s.trim_start_matches("override."))
            .collect();
        assert!(seen.iter().any(|s| s.starts_with("override.")));
        for section in [
            "jwt",
            "apiKeys",
            "basicAuth",
            "extAuth",
            "authentication",
            "authorization",
            "ipAllow",
            "ipDeny",
            "limits",
            "transform",
            "cors",
            "rateLimit",
            "connection",
        ] {
            assert!(bare.contains(section), "{section} missing from {seen:?}");
        }
    }
}
