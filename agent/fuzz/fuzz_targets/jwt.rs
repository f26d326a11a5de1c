//! JWT bearer authentication against fixed key sets (RSA, P-256, Ed25519
//! and an HMAC secret): fuzzed tokens must never authenticate — the fuzzer
//! knows no private key, so a token that verifies is a forgery — and must
//! never panic. The seeds are real tokens signed by those keys that fail
//! only on their claims (expired, wrong audience, ...), so mutations start
//! next to a valid signature; any change to the signed part breaks it.
#![no_main]

use std::{sync::Arc, sync::LazyLock, time::Duration};

use http::{HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use sluice::policy::{
    context::{AuthnOutcome, Edits},
    credential::CredentialSource,
    jwt::{JwtAuth, JwtConfig, JwtMode, KeySource, ProviderConfig},
    state::PolicyState,
    PolicyId, RequestCtx, SectionMeta,
};

const JWKS: &str = include_str!("../data/jwks.json");
const JWKS_HMAC: &str = include_str!("../data/jwks-hmac.json");

fn provider(name: &str, issuer: &str, algorithms: &[&str], keys: KeySource) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        issuer: issuer.into(),
        audiences: vec!["api".into()],
        algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
        clock_skew: Duration::from_secs(60),
        keys,
        claim_to_headers: vec![("sub".into(), HeaderName::from_static("x-user"))],
    }
}

static AUTH: LazyLock<JwtAuth> = LazyLock::new(|| {
    let config = JwtConfig {
        mode: JwtMode::Strict,
        providers: vec![
            provider(
                "asymmetric",
                "https://idp.test",
                &[],
                KeySource::Static {
                    jwks: JWKS.into(),
                    allow_hmac: false,
                },
            ),
            provider(
                "hmac",
                "https://hmac.test",
                &["HS256"],
                KeySource::Static {
                    jwks: JWKS_HMAC.into(),
                    allow_hmac: true,
                },
            ),
        ],
        sources: vec![CredentialSource::bearer()],
        forward_token: false,
    };
    let policy = PolicyId::new("SluicePolicy", "fuzz", "jwt");
    let state = PolicyState::default();
    let compile = state.compile();
    let meta = Arc::new(SectionMeta::detached(policy.clone(), "jwt"));
    JwtAuth::build(config, &policy, &compile, meta).expect("the fixed jwt section builds")
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ", data].concat()) else {
        return;
    };
    let parts = Request::get("/")
        .header(http::header::AUTHORIZATION, value)
        .body(())
        .expect("a request")
        .into_parts()
        .0;
    let mut ctx = RequestCtx::new(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        "api.example.com",
    );
    let mut edits = Edits::default();
    let outcome = RUNTIME.block_on(AUTH.authenticate(&mut ctx, &parts, &mut edits));
    match outcome {
        AuthnOutcome::Authenticated | AuthnOutcome::Anonymous => panic!(
            "a token made without any signing key was accepted: {:?} ({outcome:?})",
            String::from_utf8_lossy(data)
        ),
        AuthnOutcome::Missing(r) | AuthnOutcome::Failed(r) => {
            // Refused as the client's fault (401), except keys not loaded (never here).
            assert_eq!(r.reason.status(), http::StatusCode::UNAUTHORIZED, "{r}");
        }
    }
    assert!(ctx.identity.claims.is_none());
});
