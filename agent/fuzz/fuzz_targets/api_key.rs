//! API keys, Basic credentials and htpasswd files: where a credential is
//! read from (header with or without a scheme, cookie, query parameter),
//! how it is looked up, and how it is stripped before the request goes
//! upstream. Input: a request head as text (`sluice_fuzz::Head`) whose
//! body is an htpasswd file. Properties: a request authenticates exactly when it presents
//! a configured key (or user and password), the identity is that client's,
//! a client-sent identity header never survives, and after the edits the
//! credential is gone from the request.
#![no_main]

use std::sync::{Arc, LazyLock};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use http::{request::Parts, HeaderName};
use libfuzzer_sys::fuzz_target;
use sluice::policy::{
    api_key::ApiKeyAuth,
    basic_auth::{parse_htpasswd, BasicAuth},
    cache::VerifiedCache,
    context::{AuthnOutcome, Edits},
    credential::CredentialSource,
    PolicyId, RequestCtx, SectionMeta,
};
use sluice_fuzz::Head;

/// (client, key as stored in the Secret).
const KEYS: &[(&str, &str)] = &[
    ("ci", "k-ci-123\n"),
    ("web", "k-web-456"),
    ("ops", " key;with=odd chars "),
];
/// (user, password); bob's hash is `{SHA}`, alice's bcrypt (cost 4).
const USERS: &[(&str, &str)] = &[("bob", "secret"), ("alice", "wonderland")];

fn meta(section: &'static str) -> Arc<SectionMeta> {
    Arc::new(SectionMeta::detached(
        PolicyId::new("SluicePolicy", "fuzz", "auth"),
        section,
    ))
}

fn sources() -> [CredentialSource; 4] {
    [
        CredentialSource::Header {
            name: HeaderName::from_static("x-api-key"),
            prefix: None,
        },
        CredentialSource::Header {
            name: http::header::AUTHORIZATION,
            prefix: Some("ApiKey".into()),
        },
        CredentialSource::Cookie("api_key".into()),
        CredentialSource::Query("api_key".into()),
    ]
}

static API_KEYS: LazyLock<Vec<ApiKeyAuth>> = LazyLock::new(|| {
    sources()
        .into_iter()
        .map(|source| {
            ApiKeyAuth::new(
                KEYS.iter()
                    .map(|(c, k)| (c.to_string(), k.as_bytes().to_vec())),
                source,
                Some(HeaderName::from_static("x-client-id")),
                false,
                meta("apiKeys"),
            )
            .expect("the fixed keys are valid")
        })
        .collect()
});

static BASIC: LazyLock<BasicAuth> = LazyLock::new(|| {
    let alice = bcrypt::hash(USERS[1].1, 4).expect("bcrypt");
    // {SHA} of "secret".
    let text = format!("# users\nbob:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\nalice:{alice}\n");
    BasicAuth::new(
        parse_htpasswd(&text).expect("the fixed htpasswd is valid"),
        "fuzz",
        Some(HeaderName::from_static("x-user")),
        false,
        Arc::new(VerifiedCache::new(64)),
        meta("basicAuth"),
    )
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
});

fn ctx() -> RequestCtx<'static> {
    RequestCtx::new(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        "api.example.com",
    )
}

/// Runs the `apiKeys` section whose source `which` picks.
fn api_key(which: usize, original: &Parts) {
    let auth = &API_KEYS[which % API_KEYS.len()];
    let mut ctx = ctx();
    let mut edits = Edits::default();
    let outcome = auth.authenticate(&mut ctx, original, &mut edits);
    let presented = auth.source.extract(original);
    let client = presented.and_then(|key| {
        KEYS.iter()
            .find(|(_, k)| k.trim_ascii() == key)
            .map(|(c, _)| *c)
    });
    match (&outcome, presented, client) {
        (AuthnOutcome::Authenticated, Some(_), Some(c)) => {
            assert_eq!(ctx.identity.api_client.as_deref(), Some(c));
        }
        (AuthnOutcome::Failed(_), Some(_), None) | (AuthnOutcome::Missing(_), None, None) => {
            assert!(ctx.identity.api_client.is_none());
            return;
        }
        _ => panic!("{outcome:?} for key {presented:?} (client {client:?})"),
    }
    let mut parts = original.clone();
    edits.apply(&mut parts.headers, &mut parts.uri);
    assert_eq!(
        auth.source.extract(&parts),
        None,
        "the key still goes upstream: {:?} {:?}",
        parts.uri,
        parts.headers
    );
    let ids: Vec<_> = parts.headers.get_all("x-client-id").iter().collect();
    assert_eq!(ids, [client.unwrap()], "the client id header is ours alone");
}

/// The user and password a Basic `Authorization` value carries.
fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case("basic ") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(value[6..].trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn basic(original: &Parts) {
    let mut ctx = ctx();
    let mut edits = Edits::default();
    let outcome = RUNTIME.block_on(BASIC.authenticate(&mut ctx, original, &mut edits));
    let known = basic_credentials(original)
        .filter(|(u, p)| USERS.iter().any(|(user, pass)| u == user && p == pass));
    match (&outcome, &known) {
        (AuthnOutcome::Authenticated, Some((user, _))) => {
            assert_eq!(ctx.identity.user.as_deref(), Some(user.as_str()));
            let mut parts = original.clone();
            edits.apply(&mut parts.headers, &mut parts.uri);
            assert!(!parts.headers.contains_key(http::header::AUTHORIZATION));
            let users: Vec<_> = parts.headers.get_all("x-user").iter().collect();
            assert_eq!(users, [user.as_str()]);
        }
        (AuthnOutcome::Failed(_) | AuthnOutcome::Missing(_), None) => {
            assert!(ctx.identity.user.is_none());
        }
        _ => panic!("{outcome:?} for {:?}", basic_credentials(original)),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(head) = Head::parse(data) else {
        return;
    };
    // The body is an htpasswd file (they come from Secrets): errors name a
    // line, never panic.
    if let Ok(h) = parse_htpasswd(head.body) {
        assert!(!h.users.is_empty());
        assert!(h.weak.iter().all(|u| h.users.contains_key(u)));
    }
    // `:source: N` picks where the key is read from (default: x-api-key).
    let which = head
        .param("source")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let parts = head.request.into_parts().0;
    api_key(which, &parts);
    basic(&parts);
});
