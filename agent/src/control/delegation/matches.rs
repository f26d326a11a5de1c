//! The match and hostname arithmetic of delegation: what part of a parent
//! rule's requests a child rule gets.
use std::sync::Arc;

use crate::config::{Hostname, PathMatch, RouteMatch};

/// The hostnames a child serves under a parent: the pairwise intersections
/// (either side empty: the other); `None` when they do not meet.
pub(super) fn intersect_hostnames(
    parent: &[Hostname],
    child: &[Hostname],
) -> Option<Vec<Hostname>> {
    if parent.is_empty() {
        return Some(child.to_vec());
    }
    if child.is_empty() {
        return Some(parent.to_vec());
    }
    let mut v: Vec<Hostname> = parent
        .iter()
        .flat_map(|p| child.iter().filter_map(|c| Hostname::intersect(p, c)))
        .collect();
    v.sort();
    v.dedup();
    (!v.is_empty()).then_some(v)
}

pub(super) fn show_hostnames(h: &[Hostname]) -> String {
    h.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_path(p: &PathMatch) -> String {
    match p {
        PathMatch::Exact(s) => format!("Exact {s}"),
        PathMatch::Prefix(s) => format!("PathPrefix {s}"),
        PathMatch::Regex(r) => format!("RegularExpression {}", r.as_str()),
    }
}

/// Whether `path` lies within the element-wise prefix `prefix`.
fn within(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The effective match of child match `child` under parent match `parent`:
/// the child's path when it lies within the parent's, with both sides'
/// method, header and query conditions; an error when they contradict. A
/// child rule written without matches takes the parent's match.
pub(super) fn constrain(
    parent: &Arc<RouteMatch>,
    child: &Arc<RouteMatch>,
) -> Result<Arc<RouteMatch>, String> {
    if Arc::ptr_eq(child, &RouteMatch::any_path()) {
        return Ok(parent.clone());
    }
    let outside = || {
        format!(
            "path {} is not within the parent's {}",
            show_path(&child.path),
            show_path(&parent.path)
        )
    };
    let path = match (&parent.path, &child.path) {
        (PathMatch::Prefix(p), PathMatch::Prefix(c) | PathMatch::Exact(c)) if within(p, c) => {
            child.path.clone()
        }
        (PathMatch::Exact(p), PathMatch::Exact(c)) if p == c => child.path.clone(),
        (PathMatch::Exact(p), PathMatch::Prefix(c)) if within(c, p) => parent.path.clone(),
        (PathMatch::Regex(p), PathMatch::Regex(c)) if p == c => child.path.clone(),
        (_, PathMatch::Regex(_)) => {
            return Err(format!(
                "{} (a regular expression cannot be checked against the parent's path)",
                outside()
            ))
        }
        _ => return Err(outside()),
    };
    let method = match (&parent.method, &child.method) {
        (Some(p), Some(c)) if p != c => {
            return Err(format!("method {c} contradicts the parent's method {p}"))
        }
        (p, c) => c.clone().or_else(|| p.clone()),
    };
    let mut headers = child.headers.to_vec();
    for ph in &parent.headers {
        match headers.iter().find(|h| h.name == ph.name) {
            Some(h) if h.value != ph.value => {
                return Err(format!("header match {} contradicts the parent's", ph.name))
            }
            Some(_) => {}
            None => headers.push(ph.clone()),
        }
    }
    let mut query_params = child.query_params.to_vec();
    for pq in &parent.query_params {
        match query_params.iter().find(|q| q.name == pq.name) {
            Some(q) if q.value != pq.value => {
                return Err(format!(
                    "query parameter match {} contradicts the parent's",
                    pq.name
                ))
            }
            Some(_) => {}
            None => query_params.push(pq.clone()),
        }
    }
    Ok(Arc::new(RouteMatch {
        path,
        method,
        headers: headers.into_boxed_slice(),
        query_params: query_params.into_boxed_slice(),
        grpc: None,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{HeaderMatch, StringMatch};

    fn prefix(p: &str) -> Arc<RouteMatch> {
        Arc::new(RouteMatch::path(PathMatch::Prefix(p.into())))
    }

    #[test]
    fn paths_within_a_prefix_are_element_wise() {
        assert!(within("/", "/anything"));
        assert!(within("/orders", "/orders"));
        assert!(within("/orders", "/orders/"));
        assert!(within("/orders", "/orders/returns"));
        assert!(!within("/orders", "/ordersx"));
        assert!(!within("/orders", "/order"));
        assert!(!within("/orders/returns", "/orders"));
    }

    #[test]
    fn a_child_match_is_constrained_by_its_parent() {
        let exact = Arc::new(RouteMatch::path(PathMatch::Exact("/orders/1".into())));
        assert_eq!(
            constrain(&prefix("/orders"), &exact).unwrap().path,
            exact.path
        );
        assert!(constrain(&prefix("/payments"), &exact).is_err());
        // Under an exact parent, a covering prefix narrows to the exact path.
        let c = constrain(&exact, &prefix("/orders")).unwrap();
        assert_eq!(c.path, PathMatch::Exact("/orders/1".into()));
        // Omitted matches take the parent's, the very same one.
        let p = prefix("/orders");
        assert!(Arc::ptr_eq(
            &constrain(&p, &RouteMatch::any_path()).unwrap(),
            &p
        ));
        // An explicit "/" is a path outside /orders.
        assert!(constrain(&p, &prefix("/")).is_err());
        // The parent's header is added; another value of it contradicts.
        let mut parent = RouteMatch::path(PathMatch::Prefix("/orders".into()));
        parent.headers = Box::new([HeaderMatch {
            name: http::HeaderName::from_static("x-v"),
            value: StringMatch::Exact("2".into()),
        }]);
        let parent = Arc::new(parent);
        let c = constrain(&parent, &prefix("/orders/a")).unwrap();
        assert_eq!(c.headers, parent.headers);
        let mut child = RouteMatch::path(PathMatch::Prefix("/orders/a".into()));
        child.headers = Box::new([HeaderMatch {
            name: http::HeaderName::from_static("x-v"),
            value: StringMatch::Exact("1".into()),
        }]);
        assert!(constrain(&parent, &Arc::new(child)).is_err());
    }

    #[test]
    fn hostnames_intersect() {
        let h = |s: &str| match s.strip_prefix('*') {
            Some(suffix) => Hostname::Wildcard(suffix.into()),
            None => Hostname::Exact(s.into()),
        };
        assert_eq!(
            intersect_hostnames(&[h("*.example.com")], &[h("api.example.com")]),
            Some(vec![h("api.example.com")])
        );
        assert_eq!(
            intersect_hostnames(&[h("a.example.com")], &[h("b.example.com")]),
            None
        );
        assert_eq!(
            intersect_hostnames(&[], &[h("b.example.com")]),
            Some(vec![h("b.example.com")])
        );
    }
}
