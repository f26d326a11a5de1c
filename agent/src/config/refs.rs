//! Conversion of the objects that references between other objects resolve
//! to or are checked against: Secret (certificates named by listeners),
//! ReferenceGrant (permission for a reference across namespaces) and
//! Namespace (labels matched by `allowedRoutes` selectors). They carry no
//! routing of their own, so they are kept apart from the Gateway, route and
//! backend conversions.
use super::{
    model, resources as wire,
    validate::{ns, Doc},
};

/// Label Kubernetes puts on every Namespace, holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub(super) fn namespace(n: wire::Namespace) -> model::Namespace {
    let mut labels = n.metadata.labels;
    // Kubernetes sets this label on every Namespace; selectors rely on it.
    labels.insert(NAMESPACE_NAME_LABEL.into(), n.metadata.name.clone());
    model::Namespace {
        name: n.metadata.name,
        labels,
    }
}

/// A Secret: `data` is base64 (whitespace ignored), `stringData` plain and
/// overriding `data`, as the API server merges them.
pub(super) fn secret(doc: &mut Doc<'_>, s: wire::Secret) -> Option<model::Secret> {
    let before = doc.errors.len();
    let mut data = std::collections::BTreeMap::new();
    for (key, value) in &s.data {
        match base64_decode(value) {
            Some(bytes) => {
                data.insert(key.clone(), bytes);
            }
            None => doc.err(format!("data[{key}]"), "not valid base64"),
        }
    }
    for (key, value) in s.string_data {
        data.insert(key, value.into_bytes());
    }
    (doc.errors.len() == before).then(|| model::Secret {
        id: model::ObjectRef::new(ns(&s.metadata), &s.metadata.name),
        kind: s.kind.unwrap_or_else(|| "Opaque".into()),
        data,
    })
}

/// Standard base64 (RFC 4648 §4) with optional padding; ASCII whitespace is
/// skipped. `None` on any other character or a dangling 6-bit group.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits, mut padding) = (0u32, 0u32, 0usize);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            b if b.is_ascii_whitespace() => continue,
            _ => return None,
        };
        if padding > 0 {
            return None; // data after padding
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 2 or 4 leftover bits are a partial final group; 6 cannot be.
    (bits < 6 && padding <= 2).then_some(out)
}

pub(super) fn reference_grant(
    doc: &mut Doc<'_>,
    g: wire::ReferenceGrant,
) -> Option<model::ReferenceGrant> {
    let before = doc.errors.len();
    if g.spec.from.is_empty() {
        doc.err("spec.from", "at least one entry is required");
    }
    if g.spec.to.is_empty() {
        doc.err("spec.to", "at least one entry is required");
    }
    let from = g
        .spec
        .from
        .iter()
        .map(|f| model::GrantFrom {
            group: f.group.clone(),
            kind: f.kind.clone(),
            namespace: f.namespace.clone(),
        })
        .collect();
    let to = g
        .spec
        .to
        .iter()
        .map(|t| model::GrantTo {
            group: t.group.clone(),
            kind: t.kind.clone(),
            name: t.name.clone().filter(|n| !n.is_empty()),
        })
        .collect();
    (doc.errors.len() == before).then(|| model::ReferenceGrant {
        id: model::ObjectRef::new(ns(&g.metadata), &g.metadata.name),
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        assert_eq!(super::base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::base64_decode("aGVs\nbG8").unwrap(), b"hello");
        assert_eq!(super::base64_decode("").unwrap(), b"");
        assert_eq!(super::base64_decode("/+8=").unwrap(), [0xff, 0xef]);
        assert!(super::base64_decode("aGVs*G8=").is_none());
        assert!(super::base64_decode("a").is_none());
        assert!(super::base64_decode("aG=Vs").is_none());
    }
}
