//! `basicAuth`: `Authorization: Basic` against an htpasswd file from a
//! Secret. bcrypt entries (`$2a$`, `$2b$`, `$2y$`) are verified on the
//! blocking pool, a few at a time (bcrypt is deliberately slow: a flood of
//! wrong passwords must not take every core); `{SHA}` entries are accepted
//! and warned about. Verified credentials are remembered in a bounded cache,
//! so a client that sends the same credentials again costs no bcrypt round.
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use base64::Engine as _;
use http::{header, request::Parts, HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use super::{
    cache::VerifiedCache,
    context::{AuthnOutcome, Edits, HeaderEdit},
    Reason, Rejection, RequestCtx, SectionMeta,
};

/// How long a verified credential is remembered.
pub const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// Credentials remembered per policy.
pub const VERIFIED_CAPACITY: usize = 10_000;
/// Longest a request waits for a bcrypt slot before it is refused (503).
const BCRYPT_WAIT: Duration = Duration::from_secs(2);

/// A stored password.
#[derive(Clone)]
pub enum PasswordHash {
    Bcrypt(String),
    /// `{SHA}`: unsalted SHA-1, accepted for compatibility only.
    Sha1([u8; 20]),
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PasswordHash::Bcrypt(_) => "Bcrypt(..)",
            PasswordHash::Sha1(_) => "Sha1(..)",
        })
    }
}

/// A parsed htpasswd file.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    pub users: HashMap<String, PasswordHash>,
    /// Users with weak (`{SHA}`) hashes, to warn about.
    pub weak: Vec<String>,
}

/// Parses an htpasswd file; errors name the line.
pub fn parse_htpasswd(text: &str) -> Result<Htpasswd, String> {
    let mut users = HashMap::new();
    let mut weak = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {n}: expected user:hash"));
        };
        if user.is_empty() {
            return Err(format!("line {n}: empty user name"));
        }
        let parsed = if hash.starts_with("$2a$")
            || hash.starts_with("$2b$")
            || hash.starts_with("$2y$")
        {
            PasswordHash::Bcrypt(hash.to_owned())
        } else if let Some(b64) = hash.strip_prefix("{SHA}") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| format!("line {n} (user {user:?}): {{SHA}} hash is not base64"))?;
            let arr: [u8; 20] = raw
                .try_into()
                .map_err(|_| format!("line {n} (user {user:?}): {{SHA}} hash is not 20 bytes"))?;
            weak.push(user.to_owned());
            PasswordHash::Sha1(arr)
        } else if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
            return Err(format!(
                "line {n} (user {user:?}): MD5 (apr1) hashes are not supported; use bcrypt \
                 (htpasswd -B)"
            ));
        } else {
            return Err(format!(
                "line {n} (user {user:?}): unsupported hash (supported: bcrypt $2y$/$2b$/$2a$, {{SHA}})"
            ));
        };
        if users.insert(user.to_owned(), parsed).is_some() {
            return Err(format!("line {n}: user {user:?} appears twice"));
        }
    }
    if users.is_empty() {
        return Err("no users".into());
    }
    Ok(Htpasswd { users, weak })
}

/// A compiled `basicAuth` section.
#[derive(Debug)]
pub struct BasicAuth {
    users: HashMap<String, PasswordHash>,
    challenge: HeaderValue,
    pub username_header: Option<HeaderName>,
    pub forward_credentials: bool,
    /// Kept across reloads while the htpasswd content is unchanged.
    verified: Arc<VerifiedCache<Arc<str>>>,
    pub meta: Arc<SectionMeta>,
}

/// bcrypt verifications running at once, agent-wide.
fn bcrypt_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

impl BasicAuth {
    pub fn new(
        htpasswd: Htpasswd,
        realm: &str,
        username_header: Option<HeaderName>,
        forward_credentials: bool,
        verified: Arc<VerifiedCache<Arc<str>>>,
        meta: Arc<SectionMeta>,
    ) -> Self {
        let realm = realm.replace(['"', '\\'], "");
        Self {
            users: htpasswd.users,
            challenge: HeaderValue::from_str(&format!(
                "Basic realm=\"{realm}\", charset=\"UTF-8\""
            ))
            .unwrap_or(HeaderValue::from_static("Basic")),
            username_header,
            forward_credentials,
            verified,
            meta,
        }
    }

    fn reject(&self, reason: Reason, message: &'static str) -> Rejection {
        self.meta.denied(reason);
        Rejection::new(reason, message)
            .with_header(header::WWW_AUTHENTICATE, self.challenge.clone())
            .by(&self.meta)
    }

    pub async fn authenticate(
        &self,
        ctx: &mut RequestCtx<'_>,
        parts: &Parts,
        edits: &mut Edits,
    ) -> AuthnOutcome {
        let credential = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let scheme = v.get(..6)?;
                scheme.eq_ignore_ascii_case("basic ").then(|| v[6..].trim())
            })
            .filter(|c| !c.is_empty());
        let Some(credential) = credential else {
            return AuthnOutcome::Missing(
                self.reject(Reason::BasicAuthMissing, "Basic credentials required"),
            );
        };
        let now = Instant::now();
        let user = match self.verified.get(credential, now) {
            Some(user) => user,
            None => match self.verify(credential).await {
                Ok(user) => {
                    self.verified
                        .insert(credential, user.clone(), now + VERIFIED_TTL, now);
                    user
                }
                Err(r) => return AuthnOutcome::Failed(r),
            },
        };
        self.meta.allowed();
        if !self.forward_credentials {
            edits.header(HeaderEdit::Remove(header::AUTHORIZATION));
        }
        if let Some(h) = &self.username_header {
            match HeaderValue::from_str(&user) {
                Ok(v) => edits.header(HeaderEdit::Set(h.clone(), v)),
                Err(_) => edits.header(HeaderEdit::Remove(h.clone())),
            }
        }
        ctx.identity.user = Some(user);
        AuthnOutcome::Authenticated
    }

    async fn verify(&self, credential: &str) -> Result<Arc<str>, Rejection> {
        let invalid = || self.reject(Reason::BasicAuthInvalid, "invalid user name or password");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credential)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(invalid)?;
        let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
        let Some(hash) = self.users.get(user) else {
            return Err(invalid());
        };
        let ok = match hash {
            PasswordHash::Sha1(want) => {
                let got = ring::digest::digest(
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    password.as_bytes(),
                );
                constant_time_eq(got.as_ref(), want)
            }
            PasswordHash::Bcrypt(h) => {
                let Ok(Ok(_permit)) =
                    tokio::time::timeout(BCRYPT_WAIT, bcrypt_slots().acquire()).await
                else {
                    self.meta.denied(Reason::PolicyUnavailable);
                    return Err(Rejection::new(
                        Reason::PolicyUnavailable,
                        "too many password checks in progress; retry",
                    )
                    .by(&self.meta));
                };
                let (h, password) = (h.clone(), password.to_owned());
                tokio::task::spawn_blocking(move || bcrypt::verify(password, &h).unwrap_or(false))
                    .await
                    .unwrap_or(false)
            }
        };
        if ok {
            Ok(Arc::from(user))
        } else {
            Err(invalid())
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;
    use crate::policy::PolicyId;

    fn htpasswd() -> String {
        let alice = bcrypt::hash("wonderland", 4).unwrap();
        // {SHA} of "secret"
        format!("# users\nalice:{alice}\n\nbob:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\n")
    }

    fn auth() -> BasicAuth {
        BasicAuth::new(
            parse_htpasswd(&htpasswd()).unwrap(),
            "orders",
            Some(HeaderName::from_static("x-user")),
            false,
            Arc::new(VerifiedCache::new(100)),
            Arc::new(SectionMeta::detached(
                PolicyId::new("SluicePolicy", "ns", "p"),
                "basicAuth",
            )),
        )
    }

    async fn run(a: &BasicAuth, user: &str, pass: &str) -> (AuthnOutcome, Parts) {
        let cred = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let mut parts = Request::get("/")
            .header("authorization", format!("Basic {cred}"))
            .header("x-user", "forged")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut ctx = RequestCtx::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "h",
        );
        let mut edits = Edits::default();
        let out = a.authenticate(&mut ctx, &parts, &mut edits).await;
        edits.apply(&mut parts.headers, &mut parts.uri);
        (out, parts)
    }

    #[tokio::test]
    async fn bcrypt_and_sha_users() {
        let a = auth();
        let (out, parts) = run(&a, "alice", "wonderland").await;
        assert!(matches!(out, AuthnOutcome::Authenticated), "{out:?}");
        assert!(!parts.headers.contains_key("authorization"));
        assert_eq!(parts.headers["x-user"], "alice");
        assert_eq!(a.verified.len(), 1);
        // Second time: served from the cache.
        let (out, _) = run(&a, "alice", "wonderland").await;
        assert!(matches!(out, AuthnOutcome::Authenticated));
        let (out, _) = run(&a, "bob", "secret").await;
        assert!(matches!(out, AuthnOutcome::Authenticated));
        for (u, p) in [
            ("alice", "wrong"),
            ("bob", "Secret"),
            ("carol", "x"),
            ("alice", ""),
        ] {
            let (out, parts) = run(&a, u, p).await;
            let AuthnOutcome::Failed(r) = out else {
                panic!("{u}: {out:?}")
            };
            assert_eq!(r.reason, Reason::BasicAuthInvalid);
            assert_eq!(
                r.headers()["www-authenticate"],
                "Basic realm=\"orders\", charset=\"UTF-8\""
            );
            assert_eq!(
                parts.headers["x-user"], "forged",
                "nothing applied on failure"
            );
        }
    }

    #[tokio::test]
    async fn missing_credentials_challenge() {
        let a = auth();
        let parts = Request::get("/").body(()).unwrap().into_parts().0;
        let mut ctx = RequestCtx::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "h",
        );
        let out = a
            .authenticate(&mut ctx, &parts, &mut Edits::default())
            .await;
        assert!(
            matches!(out, AuthnOutcome::Missing(ref r) if r.reason == Reason::BasicAuthMissing)
        );
    }

    #[test]
    fn htpasswd_errors_name_the_line() {
        let p = parse_htpasswd(&htpasswd()).unwrap();
        assert_eq!(p.weak, ["bob"]);
        assert!(parse_htpasswd("x:$apr1$abc$def")
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_htpasswd("a:$2y$04$x\nnocolon")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse_htpasswd("a:plain")
            .unwrap_err()
            .contains("unsupported hash"));
        assert!(parse_htpasswd("a:{SHA}!!")
            .unwrap_err()
            .contains("not base64"));
        assert!(parse_htpasswd("# only comments\n")
            .unwrap_err()
            .contains("no users"));
    }
}
