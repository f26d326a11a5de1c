//! `apiKeys`: a key from a header (default `x-api-key`), query parameter or
//! cookie, looked up among the keys of the referenced Secrets (data key =
//! client id, value = key).
//!
//! Only SHA-256 digests of the keys are held. A presented key is hashed and
//! the digest looked up, so the time a lookup takes depends only on a digest
//! of what the client sent, never on how much of a real key it guessed: the
//! comparison is constant-time with respect to the secrets.
use std::{collections::HashMap, sync::Arc};

use http::{request::Parts, HeaderName, HeaderValue};

use super::{
    context::{AuthnOutcome, Edits, HeaderEdit},
    credential::CredentialSource,
    Reason, Rejection, RequestCtx, SectionMeta,
};

type Digest = [u8; 32];

fn digest(key: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A compiled `apiKeys` section.
#[derive(Debug)]
pub struct ApiKeyAuth {
    clients: HashMap<Digest, Arc<str>>,
    pub source: CredentialSource,
    pub client_id_header: Option<HeaderName>,
    pub forward_key: bool,
    pub meta: Arc<SectionMeta>,
}

impl ApiKeyAuth {
    /// Builds the section from (client id, key) pairs. Empty keys and one
    /// key shared by two clients are errors (the client id would be ambiguous).
    pub fn new(
        keys: impl IntoIterator<Item = (String, Vec<u8>)>,
        source: CredentialSource,
        client_id_header: Option<HeaderName>,
        forward_key: bool,
        meta: Arc<SectionMeta>,
    ) -> Result<Self, String> {
        let mut clients: HashMap<Digest, Arc<str>> = HashMap::new();
        for (client, key) in keys {
            let key = trim_ascii(&key);
            if key.is_empty() {
                return Err(format!("client {client:?} has an empty key"));
            }
            if let Some(other) = clients.insert(digest(key), Arc::from(client.as_str())) {
                return Err(format!(
                    "clients {other:?} and {client:?} have the same key"
                ));
            }
        }
        if clients.is_empty() {
            return Err("no API keys (the referenced Secrets have no data)".into());
        }
        Ok(Self {
            clients,
            source,
            client_id_header,
            forward_key,
            meta,
        })
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    fn challenge(&self) -> HeaderValue {
        let (kind, name) = match &self.source {
            CredentialSource::Header { name, .. } => ("header", name.as_str()),
            CredentialSource::Cookie(n) => ("cookie", n.as_str()),
            CredentialSource::Query(n) => ("query", n.as_str()),
        };
        HeaderValue::from_str(&format!("ApiKey {kind}=\"{name}\""))
            .unwrap_or(HeaderValue::from_static("ApiKey"))
    }

    pub fn authenticate(
        &self,
        ctx: &mut RequestCtx,
        parts: &Parts,
        edits: &mut Edits,
    ) -> AuthnOutcome {
        let Some(key) = self.source.extract(parts) else {
            self.meta.denied(Reason::ApiKeyMissing);
            return AuthnOutcome::Missing(
                Rejection::new(
                    Reason::ApiKeyMissing,
                    format!("API key required in {}", self.source.describe()),
                )
                .with_header(http::header::WWW_AUTHENTICATE, self.challenge())
                .by(&self.meta),
            );
        };
        let Some(client) = self.clients.get(&digest(key.as_bytes())) else {
            self.meta.denied(Reason::ApiKeyInvalid);
            return AuthnOutcome::Failed(
                Rejection::new(Reason::ApiKeyInvalid, "invalid API key")
                    .with_header(http::header::WWW_AUTHENTICATE, self.challenge())
                    .by(&self.meta),
            );
        };
        self.meta.allowed();
        if !self.forward_key {
            self.source.strip(edits);
        }
        if let Some(h) = &self.client_id_header {
            // Replaces whatever the client sent under that name.
            match HeaderValue::from_str(client) {
                Ok(v) => edits.header(HeaderEdit::Set(h.clone(), v)),
                Err(_) => edits.header(HeaderEdit::Remove(h.clone())),
            }
        }
        ctx.identity.api_client = Some(client.clone());
        AuthnOutcome::Authenticated
    }
}

/// Secrets written with `echo` often end in a newline.
fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;
    use crate::policy::PolicyId;

    fn auth(forward: bool) -> ApiKeyAuth {
        ApiKeyAuth::new(
            [
                ("ci".to_owned(), b"k-ci-123\n".to_vec()),
                ("web".to_owned(), b"k-web-456".to_vec()),
            ],
            CredentialSource::Header {
                name: HeaderName::from_static("x-api-key"),
                prefix: None,
            },
            Some(HeaderName::from_static("x-client-id")),
            forward,
            Arc::new(SectionMeta::detached(
                PolicyId::new("SluicePolicy", "ns", "p"),
                "apiKeys",
            )),
        )
        .unwrap()
    }

    fn run(a: &ApiKeyAuth, headers: &[(&str, &str)]) -> (AuthnOutcome, Parts, Option<Arc<str>>) {
        let mut b = Request::get("/");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let mut parts = b.body(()).unwrap().into_parts().0;
        let mut ctx = RequestCtx::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "h",
        );
        let mut edits = Edits::default();
        let out = a.authenticate(&mut ctx, &parts, &mut edits);
        edits.apply(&mut parts.headers, &mut parts.uri);
        (out, parts, ctx.identity.api_client)
    }

    #[test]
    fn valid_key_names_the_client_and_is_stripped() {
        let a = auth(false);
        let (out, parts, client) = run(&a, &[("x-api-key", "k-ci-123"), ("x-client-id", "forged")]);
        assert!(matches!(out, AuthnOutcome::Authenticated));
        assert_eq!(client.as_deref(), Some("ci"));
        assert!(!parts.headers.contains_key("x-api-key"));
        assert_eq!(parts.headers.get_all("x-client-id").iter().count(), 1);
        assert_eq!(parts.headers["x-client-id"], "ci");
        let (_, parts, _) = run(&auth(true), &[("x-api-key", "k-web-456")]);
        assert_eq!(
            parts.headers["x-api-key"], "k-web-456",
            "forwardKey keeps it"
        );
    }

    #[test]
    fn missing_and_wrong_keys() {
        let a = auth(false);
        let (out, _, _) = run(&a, &[]);
        let AuthnOutcome::Missing(r) = out else {
            panic!("{out:?}")
        };
        assert_eq!(r.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()["www-authenticate"],
            "ApiKey header=\"x-api-key\""
        );
        let (out, parts, client) = run(&a, &[("x-api-key", "k-ci-12"), ("x-client-id", "ci")]);
        assert!(matches!(out, AuthnOutcome::Failed(ref r) if r.reason == Reason::ApiKeyInvalid));
        assert!(client.is_none());
        assert_eq!(
            parts.headers["x-client-id"], "ci",
            "nothing applied on failure"
        );
    }

    #[test]
    fn duplicate_and_empty_keys_are_refused() {
        let meta = || {
            Arc::new(SectionMeta::detached(
                PolicyId::new("SluicePolicy", "ns", "p"),
                "apiKeys",
            ))
        };
        let err = ApiKeyAuth::new(
            [
                ("a".into(), b"same".to_vec()),
                ("b".into(), b"same".to_vec()),
            ],
            CredentialSource::Query("k".into()),
            None,
            false,
            meta(),
        )
        .unwrap_err();
        assert!(err.contains("same key"), "{err}");
        let err = ApiKeyAuth::new(
            [("a".into(), b" \n".to_vec())],
            CredentialSource::Query("k".into()),
            None,
            false,
            meta(),
        )
        .unwrap_err();
        assert!(err.contains("empty key"), "{err}");
    }
}
