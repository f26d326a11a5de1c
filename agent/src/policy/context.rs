//! What the phases know about one request: where it comes from, who it is
//! (once authenticated), and the edits authentication asks for.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{header, HeaderMap, HeaderName, HeaderValue, Uri};

use super::Rejection;

/// Per-request facts the policy sections read and fill in.
#[derive(Debug)]
pub struct RequestCtx<'a> {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client: the peer, or with `--trusted-proxies` the address the
    /// nearest untrusted hop reported in `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// The caller's Kubernetes namespace (pod identity), when known.
    pub source_namespace: Option<Arc<str>>,
    /// Request host, lower-case, without port.
    pub host: &'a str,
    /// The request's `Origin`, kept for the CORS response headers.
    pub origin: Option<HeaderValue>,
    /// Who the request is, as established by authentication.
    pub identity: Identity,
    /// Response header values rendered at request time (templates that
    /// refer to the request are resolved while it is still here).
    pub response_edits: Vec<HeaderEdit>,
    /// What the rate-limit rules said, for the response headers.
    pub rate_limit: Option<Box<super::ratelimit::report::Report>>,
}

impl<'a> RequestCtx<'a> {
    pub fn new(peer: SocketAddr, client_ip: IpAddr, host: &'a str) -> Self {
        Self {
            peer,
            client_ip,
            source_namespace: None,
            host,
            origin: None,
            identity: Identity::default(),
            response_edits: Vec::new(),
            rate_limit: None,
        }
    }
}

/// The authenticated identity of a request.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Claims of a verified JWT (shared with the verified-token cache).
    pub claims: Option<Arc<serde_json::Value>>,
    /// The API-key client id.
    pub api_client: Option<Arc<str>>,
    /// The Basic-auth user name.
    pub user: Option<Arc<str>>,
}

impl Identity {
    /// A claim by dotted path (`realm.role`); a name that exists literally
    /// with dots (`https://example.com/roles`) wins over the nested reading.
    pub fn claim(&self, path: &str) -> Option<&serde_json::Value> {
        let claims = self.claims.as_deref()?;
        if let Some(v) = claims.get(path) {
            return Some(v);
        }
        let mut v = claims;
        for part in path.split('.') {
            v = v.get(part)?;
        }
        Some(v)
    }

    /// The principal for logs: the JWT `sub`, else the client id, else the user.
    pub fn principal(&self) -> Option<String> {
        if let Some(sub) = self.claim("sub").and_then(|s| s.as_str()) {
            return Some(sub.to_owned());
        }
        self.api_client
            .as_deref()
            .or(self.user.as_deref())
            .map(str::to_owned)
    }
}

/// What one authentication section concluded.
#[derive(Debug)]
pub enum AuthnOutcome {
    /// A valid credential; identity recorded in the context.
    Authenticated,
    /// No credential, and this section lets such requests pass (JWT
    /// `Optional`/`Permissive`).
    Anonymous,
    /// No credential; this rejection (with its challenge) applies unless
    /// another section suffices (`require: Any`).
    Missing(Rejection),
    /// A credential that is present but wrong: always rejected.
    Failed(Rejection),
}

/// A change to a header map.
#[derive(Debug, Clone)]
pub enum HeaderEdit {
    Remove(HeaderName),
    /// Replaces every value.
    Set(HeaderName, HeaderValue),
    Append(HeaderName, HeaderValue),
}

impl HeaderEdit {
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            HeaderEdit::Remove(n) => {
                headers.remove(n);
            }
            HeaderEdit::Set(n, v) => {
                headers.insert(n.clone(), v.clone());
            }
            HeaderEdit::Append(n, v) => {
                headers.append(n.clone(), v.clone());
            }
        }
    }
}

/// Edits that authentication sections ask for, applied together once the
/// phase has passed: sections read credentials from the untouched request
/// (JWT and Basic may both look at `Authorization`).
#[derive(Debug, Default)]
pub struct Edits {
    headers: Vec<HeaderEdit>,
    query_params: Vec<String>,
    cookies: Vec<String>,
}

impl Edits {
    pub fn header(&mut self, edit: HeaderEdit) {
        self.headers.push(edit);
    }

    /// Removes a query parameter (every occurrence) from the request target.
    pub fn remove_query_param(&mut self, name: &str) {
        self.query_params.push(name.to_owned());
    }

    /// Removes a cookie from the `Cookie` header(s).
    pub fn remove_cookie(&mut self, name: &str) {
        self.cookies.push(name.to_owned());
    }

    pub fn apply(self, headers: &mut HeaderMap, uri: &mut Uri) {
        if !self.cookies.is_empty() {
            strip_cookies(headers, &self.cookies);
        }
        if !self.query_params.is_empty() {
            if let Some(stripped) = strip_query(uri, &self.query_params) {
                *uri = stripped;
            }
        }
        for e in &self.headers {
            e.apply(headers);
        }
    }
}

fn strip_cookies(headers: &mut HeaderMap, names: &[String]) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| {
            let name = c.split_once('=').map_or(*c, |(n, _)| n).trim();
            !names.iter().any(|x| x == name)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

fn strip_query(uri: &Uri, names: &[String]) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(n, _)| n);
            !names.iter().any(|x| x == name)
        })
        .collect();
    let mut pq = uri.path().to_owned();
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_literal_claims() {
        let id = Identity {
            claims: Some(Arc::new(serde_json::json!({
                "sub": "alice",
                "realm": {"role": "admin"},
                "https://x.example/roles": ["a"],
            }))),
            ..Identity::default()
        };
        assert_eq!(id.claim("realm.role").unwrap(), "admin");
        assert!(id.claim("https://x.example/roles").unwrap().is_array());
        assert!(id.claim("realm.missing").is_none());
        assert_eq!(id.principal().as_deref(), Some("alice"));
    }

    #[test]
    fn edits_strip_cookie_query_and_set_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; token=xyz; b=2"),
        );
        h.insert("x-user", HeaderValue::from_static("forged"));
        let mut uri: Uri = "/p?access_token=t&x=1&access_token=u".parse().unwrap();
        let mut e = Edits::default();
        e.remove_cookie("token");
        e.remove_query_param("access_token");
        e.header(HeaderEdit::Set(
            HeaderName::from_static("x-user"),
            HeaderValue::from_static("alice"),
        ));
        e.apply(&mut h, &mut uri);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        assert_eq!(uri.to_string(), "/p?x=1");
        assert_eq!(h.get_all("x-user").iter().count(), 1);
        assert_eq!(h["x-user"], "alice");

        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("token=xyz"));
        let mut uri: Uri = "/p?access_token=t".parse().unwrap();
        let mut e = Edits::default();
        e.remove_cookie("token");
        e.remove_query_param("access_token");
        e.apply(&mut h, &mut uri);
        assert!(!h.contains_key(header::COOKIE));
        assert_eq!(uri.to_string(), "/p");
    }
}
