//! Which nodes serve a Gateway: the annotation `sluice.dev/node-selector`
//! holds a label selector in the usual syntax (`role=infra,zone in (a,b)`,
//! `!key`, `key!=v`, `key notin (...)`), matched against the labels of the
//! agent's own Node (`--node-name`, watched). A Gateway without the
//! annotation is served on every node; a Gateway whose selector does not
//! match is not served here (its sockets, routes and eBPF state stay off this
//! node); an invalid selector leaves the Gateway out with the error on its
//! status. Without a Node object (missing, or no RBAC to read it) the node
//! has no labels.
use std::collections::{BTreeMap, BTreeSet};

use ::kube::{
    api::DynamicObject,
    core::{Expression, Selector, SelectorExt},
};

/// The Gateway annotation naming the nodes that serve it.
pub const NODE_SELECTOR_ANNOTATION: &str = "sluice.dev/node-selector";

/// Of the Node only its name and labels are read.
pub fn trim(obj: &mut DynamicObject) {
    let m = &mut obj.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    m.finalizers = None;
    obj.data = serde_json::Value::Object(Default::default());
}

/// Where a Gateway is served, as far as this node is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Here,
    Elsewhere,
    /// The annotation does not parse; the message says why.
    Invalid(String),
}

/// Decides for one Gateway object.
pub fn select(gateway: &DynamicObject, node_labels: &BTreeMap<String, String>) -> Selection {
    let Some(text) = gateway
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_SELECTOR_ANNOTATION))
    else {
        return Selection::Here;
    };
    match parse(text) {
        Ok(s) if s.matches(node_labels) => Selection::Here,
        Ok(_) => Selection::Elsewhere,
        Err(e) => Selection::Invalid(e),
    }
}

/// Parses a label selector string. An empty one selects every node.
pub fn parse(text: &str) -> Result<Selector, String> {
    let mut exprs = Vec::new();
    for term in split_terms(text)? {
        let term = term.trim();
        if term.is_empty() {
            if text.trim().is_empty() {
                continue;
            }
            return Err(format!("empty requirement in {text:?}"));
        }
        exprs.push(requirement(term)?);
    }
    Ok(exprs.into_iter().collect())
}

/// Splits at the commas that are not inside a `(...)` value set.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err(format!("nested '(' in {text:?}")),
            ')' if depth == 1 => depth = 0,
            ')' => return Err(format!("unbalanced ')' in {text:?}")),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unclosed '(' in {text:?}"));
    }
    out.push(&text[start..]);
    Ok(out)
}

fn requirement(term: &str) -> Result<Expression, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_of(key.trim())?));
    }
    for (op, neq) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = term.split_once(op) {
            let (key, value) = (key_of(k.trim())?, value_of(v.trim())?);
            return Ok(if neq {
                Expression::NotEqual(key, value)
            } else {
                Expression::Equal(key, value)
            });
        }
    }
    if let Some((k, rest)) = term.split_once(char::is_whitespace) {
        let rest = rest.trim_start();
        let (notin, set) = if let Some(s) = rest.strip_prefix("notin") {
            (true, s)
        } else if let Some(s) = rest.strip_prefix("in") {
            (false, s)
        } else {
            return Err(format!(
                "{term:?}: expected `in (...)` or `notin (...)` after the key"
            ));
        };
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("{term:?}: the values must be in parentheses"))?;
        let values: BTreeSet<String> = inner
            .split(',')
            .map(|v| value_of(v.trim()))
            .collect::<Result<_, _>>()?;
        let key = key_of(k.trim())?;
        return Ok(if notin {
            Expression::NotIn(key, values)
        } else {
            Expression::In(key, values)
        });
    }
    Ok(Expression::Exists(key_of(term)?))
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters (alphanumerics, `-`, `_`, `.`, alphanumeric at both ends).
fn key_of(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if !prefix_ok || name.is_empty() || !label_value_ok(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(key.to_owned())
}

fn value_of(value: &str) -> Result<String, String> {
    if value.is_empty() || label_value_ok(value) {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

fn label_value_ok(v: &str) -> bool {
    v.len() <= 63
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_syntax_and_matching() {
        let infra_a = labels(&[("role", "infra"), ("zone", "a")]);
        let infra_c = labels(&[("role", "infra"), ("zone", "c")]);
        let s = parse("role=infra, zone in (a, b)").unwrap();
        assert!(s.matches(&infra_a));
        assert!(!s.matches(&infra_c));
        assert!(parse("zone notin (a,b)").unwrap().matches(&infra_c));
        assert!(parse("!gpu,role==infra").unwrap().matches(&infra_a));
        assert!(!parse("role!=infra").unwrap().matches(&infra_a));
        assert!(parse("node-role.kubernetes.io/infra")
            .unwrap()
            .matches(&labels(&[("node-role.kubernetes.io/infra", "")])));
        assert!(parse("").unwrap().matches(&BTreeMap::new()));
        for bad in [
            "zone in (a",
            "zone in a,b",
            "role=in fra",
            "zone within (a)",
            "-bad=x",
            "a,,b",
            "Foo.Com/x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn gateways_select_by_annotation() {
        let gw = |annotation: Option<&str>| {
            let mut g = DynamicObject::new("gw", &super::super::watch::Kind::Gateway.resource());
            g.metadata.annotations =
                annotation.map(|a| [(NODE_SELECTOR_ANNOTATION.to_string(), a.to_string())].into());
            g
        };
        let node = labels(&[("role", "infra")]);
        assert_eq!(select(&gw(None), &node), Selection::Here);
        assert_eq!(select(&gw(Some("role=infra")), &node), Selection::Here);
        assert_eq!(select(&gw(Some("role=edge")), &node), Selection::Elsewhere);
        assert!(matches!(
            select(&gw(Some("role in (")), &node),
            Selection::Invalid(m) if m.contains("unclosed")
        ));
    }
}
