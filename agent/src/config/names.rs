//! Object and listener names as Kubernetes and the Gateway API define them.
//! The API server refuses other names; a directory, Consul or etcd source
//! has no API server in front of it, so the same rules are checked here —
//! a name like `web gw` or `a"b` is refused with the rule it breaks rather
//! than served under a name no cluster would accept (and written into
//! metric labels, log lines and status as it is).

/// Longest DNS-1123 subdomain (object names, listener names).
const SUBDOMAIN_MAX: usize = 253;
/// Longest DNS-1123 label (namespace names).
const LABEL_MAX: usize = 63;

/// Why `name` is not a DNS-1123 label (lower-case letters, digits and
/// `-`, starting and ending with a letter or digit, at most 63
/// characters), or `None` when it is one.
pub(super) fn label_error(name: &str) -> Option<String> {
    if name.len() > LABEL_MAX {
        return Some(format!("{name:?} is longer than {LABEL_MAX} characters"));
    }
    if label_shape(name) {
        None
    } else {
        Some(format!(
            "{name:?} is not a DNS-1123 label (lower-case letters, digits and '-', \
             starting and ending with a letter or digit)"
        ))
    }
}

/// Why `name` is not a DNS-1123 subdomain (labels of lower-case letters,
/// digits and `-` joined by `.`, at most 253 characters; what Kubernetes
/// asks of most object names and the Gateway API of listener names), or
/// `None` when it is one.
pub(super) fn subdomain_error(name: &str) -> Option<String> {
    if name.len() > SUBDOMAIN_MAX {
        return Some(format!(
            "{name:?} is longer than {SUBDOMAIN_MAX} characters"
        ));
    }
    if name.split('.').all(label_shape) {
        None
    } else {
        Some(format!(
            "{name:?} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit)"
        ))
    }
}

fn label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => edge(first) && edge(last) && b.iter().all(inner),
        _ => false,
    }
}

/// The errors of a document's `metadata.name` and `metadata.namespace`
/// (`kind` Namespace names are labels), as `(field, message)`. A name that
/// is not a string is left to the document's decoding, which reports it.
pub(super) fn metadata_errors(
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    let name_error = match name {
        Some(n) if kind == "Namespace" => label_error(n),
        Some(n) => subdomain_error(n),
        None => None,
    };
    errors.extend(name_error.map(|e| ("metadata.name", e)));
    errors.extend(
        namespace
            .and_then(label_error)
            .map(|e| ("metadata.namespace", e)),
    );
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_pass() {
        for ok in ["a", "web", "gw-1", "0abc", "api.v1.example", "a-b.c-d"] {
            assert_eq!(subdomain_error(ok), None, "{ok}");
        }
        for ok in ["default", "team-a", "x1"] {
            assert_eq!(label_error(ok), None, "{ok}");
        }
        assert_eq!(subdomain_error(&"a".repeat(253)), None);
        assert_eq!(label_error(&"a".repeat(63)), None);
    }

    #[test]
    fn other_names_are_refused_with_the_rule() {
        for bad in [
            "", "Web", "web gw", "a\"b", "-a", "a-", "a..b", ".a", "a.", "a_b", "é", "a\\b",
        ] {
            let e = subdomain_error(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(e.contains("DNS-1123 subdomain"), "{e}");
        }
        for bad in ["a.b", "Team", "", "a b"] {
            assert!(label_error(bad).is_some(), "{bad:?} passed");
        }
        assert!(subdomain_error(&"a".repeat(254))
            .unwrap()
            .contains("longer than 253"));
        assert!(label_error(&"a".repeat(64))
            .unwrap()
            .contains("longer than 63"));
    }

    #[test]
    fn metadata_checks_name_and_namespace() {
        assert!(metadata_errors("Gateway", Some("gw"), Some("team-a")).is_empty());
        assert!(metadata_errors("Namespace", Some("team-a"), None).is_empty());
        assert!(metadata_errors("Gateway", None, None).is_empty());
        let e = metadata_errors("Gateway", Some("Gw"), Some("team.a"));
        assert_eq!(
            e.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            ["metadata.name", "metadata.namespace"]
        );
        // A namespace's own name is a label, not a subdomain.
        assert_eq!(metadata_errors("Namespace", Some("a.b"), None).len(), 1);
    }
}
