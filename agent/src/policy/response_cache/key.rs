//! Cache keys. The primary key names the resource *of one route rule*
//! (route, rule, scheme, host, path and query), so two routes never share
//! an entry even for the same host and path; each policy has its own store
//! besides ([`super::store`]), so one namespace's cache can never answer
//! another's route. The secondary key is the request's values of the
//! fields the stored response's `Vary` names.
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// Which resource of which route rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseKey {
    /// `namespace/name` of the route.
    pub route: Arc<str>,
    pub rule: u32,
    pub scheme: &'static str,
    /// Lower-case, without port.
    pub host: Box<str>,
    /// Path and query as requested.
    pub target: Box<str>,
}

impl BaseKey {
    pub fn new(route: &Arc<str>, rule: u32, scheme: &'static str, host: &str, uri: &Uri) -> Self {
        Self {
            route: route.clone(),
            rule,
            scheme,
            host: host.into(),
            target: uri.path_and_query().map_or("/", |p| p.as_str()).into(),
        }
    }

    /// Bytes it holds (for the store's accounting).
    pub fn bytes(&self) -> usize {
        self.route.len() + self.host.len() + self.target.len() + 32
    }
}

/// A primary key plus a digest of the request's values of the `Vary`
/// fields (the values themselves are compared too: a digest collision
/// never serves another variant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub base: BaseKey,
    pub variant: u64,
}

/// The request's values of `names`, in order (`None`: absent).
pub type VaryValues = Vec<(HeaderName, Vec<HeaderValue>)>;

/// The values `headers` has for the `Vary` fields `names`.
pub fn vary_values(names: &[HeaderName], headers: &HeaderMap) -> VaryValues {
    names
        .iter()
        .map(|n| (n.clone(), headers.get_all(n).iter().cloned().collect()))
        .collect()
}

/// The digest of vary values (0 when the response varies on nothing).
pub fn variant(values: &VaryValues) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let as_bytes: Vec<(&str, Vec<&[u8]>)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.iter().map(HeaderValue::as_bytes).collect()))
        .collect();
    crate::policy::state::fingerprint(&as_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_routes_and_variants() {
        let uri: Uri = "/a?x=1".parse().unwrap();
        let r1: Arc<str> = Arc::from("team-a/api");
        let r2: Arc<str> = Arc::from("team-b/api");
        let a = BaseKey::new(&r1, 0, "http", "example.com", &uri);
        let b = BaseKey::new(&r2, 0, "http", "example.com", &uri);
        assert_ne!(a, b, "same host and path, another route");
        assert_eq!(&*a.target, "/a?x=1");
        let names = [HeaderName::from_static("accept-language")];
        let mut h = HeaderMap::new();
        let none = variant(&vary_values(&names, &h));
        h.insert("accept-language", HeaderValue::from_static("de"));
        let de = variant(&vary_values(&names, &h));
        h.insert("accept-language", HeaderValue::from_static("fr"));
        let fr = variant(&vary_values(&names, &h));
        assert!(none != de && de != fr && none != fr);
        assert_eq!(variant(&vary_values(&[], &h)), 0);
    }
}
