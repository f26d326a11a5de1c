//! Where a credential (JWT, API key) is read from — a header with an
//! optional scheme prefix, a cookie or a query parameter — and how it is
//! removed before the request goes upstream.
use http::{header, request::Parts, HeaderName};

use super::context::{Edits, HeaderEdit};

/// One place a credential may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A header; `prefix` (e.g. `Bearer`) is matched case-insensitively and
    /// must be followed by whitespace.
    Header {
        name: HeaderName,
        prefix: Option<String>,
    },
    Cookie(String),
    Query(String),
}

impl CredentialSource {
    /// `Authorization: Bearer <token>`.
    pub fn bearer() -> Self {
        CredentialSource::Header {
            name: header::AUTHORIZATION,
            prefix: Some("Bearer".into()),
        }
    }

    /// The credential in the request, if this source carries one. Only the
    /// first header of the name is read; an empty value counts as absent.
    pub fn extract<'p>(&self, parts: &'p Parts) -> Option<&'p str> {
        let value = match self {
            CredentialSource::Header { name, prefix } => {
                let raw = parts.headers.get(name)?.to_str().ok()?;
                match prefix {
                    Some(p) => {
                        let head = raw.get(..p.len())?;
                        let rest = &raw[p.len()..];
                        if !head.eq_ignore_ascii_case(p) || !rest.starts_with([' ', '\t']) {
                            return None;
                        }
                        rest.trim()
                    }
                    None => raw.trim(),
                }
            }
            CredentialSource::Cookie(name) => parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (n, v) = c.trim().split_once('=')?;
                    (n.trim() == name).then_some(v.trim())
                })?,
            CredentialSource::Query(name) => parts.uri.query()?.split('&').find_map(|p| {
                let (n, v) = p.split_once('=')?;
                (n == name).then_some(v)
            })?,
        };
        (!value.is_empty()).then_some(value)
    }

    /// Asks for the credential to be removed from the upstream request.
    pub fn strip(&self, edits: &mut Edits) {
        match self {
            CredentialSource::Header { name, .. } => edits.header(HeaderEdit::Remove(name.clone())),
            CredentialSource::Cookie(name) => edits.remove_cookie(name),
            CredentialSource::Query(name) => edits.remove_query_param(name),
        }
    }

    /// Where, for messages (`header authorization`, `cookie session`, ...).
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Header {
                name,
                prefix: Some(p),
            } => format!("header {name} ({p})"),
            CredentialSource::Header { name, prefix: None } => format!("header {name}"),
            CredentialSource::Cookie(n) => format!("cookie {n}"),
            CredentialSource::Query(n) => format!("query parameter {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_space() {
        let s = CredentialSource::bearer();
        assert_eq!(
            s.extract(&parts("/", &[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            s.extract(&parts("/", &[("authorization", "bEARER   abc ")])),
            Some("abc")
        );
        assert_eq!(
            s.extract(&parts("/", &[("authorization", "Bearerabc")])),
            None
        );
        assert_eq!(
            s.extract(&parts("/", &[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            s.extract(&parts("/", &[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(s.extract(&parts("/", &[])), None);
    }

    #[test]
    fn cookie_and_query_sources() {
        let c = CredentialSource::Cookie("tok".into());
        assert_eq!(
            c.extract(&parts(
                "/",
                &[("cookie", "a=1; tok=xyz"), ("cookie", "b=2")]
            )),
            Some("xyz")
        );
        assert_eq!(c.extract(&parts("/", &[("cookie", "token=1")])), None);
        let q = CredentialSource::Query("access_token".into());
        assert_eq!(q.extract(&parts("/p?a=1&access_token=t", &[])), Some("t"));
        assert_eq!(q.extract(&parts("/p?access_token=", &[])), None);
        assert_eq!(
            q.extract(&parts("/p", &[("authorization", "Bearer x")])),
            None
        );
    }
}
