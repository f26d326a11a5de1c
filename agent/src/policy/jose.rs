//! JOSE pieces the `jwt` section needs around `jsonwebtoken`: reading a
//! compact JWS *before* it is verified (to choose the provider by `iss` and
//! the key by `kid`, and to refuse what `jsonwebtoken` does not look at,
//! such as `crit`), and turning JWK sets into verification keys that know
//! which algorithms they may verify.
//!
//! Nothing here verifies anything: signatures and the standard claims are
//! checked by `jsonwebtoken` (ring). What is read here is untrusted and only
//! used to pick keys.
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// Longest token accepted; longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Every supported asymmetric algorithm: what an empty `algorithms` allows.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Shortest RSA modulus accepted (ring refuses shorter ones anyway; saying
/// so when the key set is read gives a precise error instead of 401s).
const MIN_RSA_BITS: usize = 2048;

/// A supported algorithm by its JOSE name. `none`, unknown names and
/// algorithms `jsonwebtoken` cannot verify (ES512, ...) are `None`.
pub fn algorithm(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        "HS256" => HS256,
        "HS384" => HS384,
        "HS512" => HS512,
        _ => return None,
    })
}

/// Whether `alg` is an HMAC (shared secret) algorithm.
pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The kind of key an algorithm verifies with. A key verifies only the
/// algorithms of its own kind: an RSA public key is never an HMAC secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    /// A shared secret (`kty: oct`).
    Oct,
}

impl KeyKind {
    /// The key kind `alg` needs.
    pub fn for_alg(alg: Algorithm) -> Self {
        use Algorithm::*;
        match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyKind::Rsa,
            ES256 => KeyKind::P256,
            ES384 => KeyKind::P384,
            EdDSA => KeyKind::Ed25519,
            HS256 | HS384 | HS512 => KeyKind::Oct,
        }
    }
}

/// Why a token could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a compact JWS (expected three dot-separated segments)")]
    Segments,
    #[error("a token segment is not base64url")]
    Base64,
    #[error("the token header is not a JSON object with a string alg")]
    Header,
    #[error("the token payload is not a JSON object")]
    Payload,
    #[error("the token has critical header parameters (crit) that are not supported")]
    Crit,
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgNone,
    #[error("the token's algorithm is not supported")]
    Algorithm,
}

/// What a token says about itself before it is verified.
#[derive(Debug)]
pub struct Unverified {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

impl Unverified {
    /// The `iss` claim, when it is a string.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Reads a compact JWS: three base64url segments, a header with a
/// supported `alg` and no `crit`, and a JSON object payload.
pub fn read(token: &str) -> Result<Unverified, TokenError> {
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenError::Segments);
    };
    // The signature is decoded by jsonwebtoken; checking its alphabet here
    // makes a broken one "malformed" rather than "bad signature".
    if !is_base64url(signature) {
        return Err(TokenError::Base64);
    }
    let header = decode_json(header, TokenError::Header)?;
    // We implement no JWS extension, so every `crit` (even an empty or
    // malformed one, which RFC 7515 forbids) names something we would
    // otherwise silently ignore.
    if header.contains_key("crit") {
        return Err(TokenError::Crit);
    }
    let alg = match header.get("alg").and_then(Value::as_str) {
        None => return Err(TokenError::Header),
        Some(a) if a.eq_ignore_ascii_case("none") => return Err(TokenError::AlgNone),
        Some(a) => algorithm(a).ok_or(TokenError::Algorithm)?,
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::Header),
    };
    let claims = decode_json(payload, TokenError::Payload)?;
    Ok(Unverified { alg, kid, claims })
}

/// A base64url segment holding a JSON object; `not_object` when it is
/// base64url but not an object.
fn decode_json(segment: &str, not_object: TokenError) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Base64)?;
    serde_json::from_slice(&bytes).map_err(|_| not_object)
}

/// Unpadded base64url with no stray bits, without decoding.
fn is_base64url(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() % 4 == 1
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
    {
        return false;
    }
    // The last character of a partial group must not carry bits beyond the
    // data (canonical encoding, as the decoder checks for header/payload).
    let last = match b.last() {
        None => return true,
        Some(&c) => sextet(c),
    };
    match b.len() % 4 {
        2 => last & 0x0f == 0,
        3 => last & 0x03 == 0,
        _ => true,
    }
}

fn sextet(c: u8) -> u8 {
    match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    }
}

/// A verification key read from a JWK.
pub struct Jwk {
    pub kid: Option<Box<str>>,
    pub kind: KeyKind,
    /// The key's own `alg`, when it names one: then it verifies only that.
    pub alg: Option<Algorithm>,
    /// HMAC secret length in bytes (0 for other kinds).
    secret_len: usize,
    key: DecodingKey,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material (an `oct` key is a secret).
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`.
    pub fn verifies(&self, alg: Algorithm) -> bool {
        if self.kind != KeyKind::for_alg(alg) || self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        // RFC 7518 3.2: an HMAC key must be at least as long as the hash.
        match alg {
            Algorithm::HS256 => self.secret_len >= 32,
            Algorithm::HS384 => self.secret_len >= 48,
            Algorithm::HS512 => self.secret_len >= 64,
            _ => true,
        }
    }

    /// The key for `jsonwebtoken`.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// Why a JWK set could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("the JWKS is not JSON: {0}")]
    Json(String),
    #[error("expected a JWK set ({{\"keys\": [...]}}) or a single JWK")]
    Shape,
    #[error("the JWKS has no usable signature verification key{}", summary(.0))]
    NoKeys(Vec<String>),
}

fn summary(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" ({})", skipped.join("; "))
    }
}

/// The usable keys of a JWK set.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
    /// Keys left out and why (logged; reported when nothing is usable).
    pub skipped: Vec<String>,
    /// Whether some key was left out only because it is an HMAC (`oct`)
    /// key and those were not allowed.
    pub skipped_hmac: bool,
}

impl KeySet {
    /// Reads a JWK set (or a single JWK). Keys that cannot verify
    /// signatures (encryption keys, unsupported curves, short RSA keys,
    /// `oct` keys unless `allow_hmac`) are left out and listed in `skipped`;
    /// a set with no usable key at all is an error.
    pub fn parse(json: &[u8], allow_hmac: bool) -> Result<Self, JwkError> {
        let doc: Value = serde_json::from_slice(json).map_err(|e| JwkError::Json(e.to_string()))?;
        let entries: Vec<&Value> = match &doc {
            Value::Object(o) if o.contains_key("keys") => match &o["keys"] {
                Value::Array(keys) => keys.iter().collect(),
                _ => return Err(JwkError::Shape),
            },
            Value::Object(o) if o.contains_key("kty") => vec![&doc],
            _ => return Err(JwkError::Shape),
        };
        let mut set = KeySet::default();
        for (i, entry) in entries.into_iter().enumerate() {
            match parse_key(entry, allow_hmac) {
                Ok(key) => set.keys.push(key),
                Err(problem) => {
                    let kid = entry
                        .get("kid")
                        .and_then(Value::as_str)
                        .map(|k| format!(" (kid {k:?})"))
                        .unwrap_or_default();
                    if problem == HMAC_NOT_ALLOWED {
                        set.skipped_hmac = true;
                    }
                    set.skipped.push(format!("key {i}{kid}: {problem}"));
                }
            }
        }
        if set.keys.is_empty() {
            return Err(JwkError::NoKeys(set.skipped));
        }
        Ok(set)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether some key carries exactly this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Whether some key can verify `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.keys.iter().any(|k| k.verifies(alg))
    }

    /// The keys that may verify a token with this `kid` and `alg`: the keys
    /// with that kid, and keys without a kid (a token's kid is a hint, and
    /// some issuers publish keys without one); every key for a token
    /// without a kid.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| {
            k.verifies(alg)
                && match (kid, k.kid.as_deref()) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
    }

    /// The key ids, for logs.
    pub fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect()
    }
}

const HMAC_NOT_ALLOWED: &str = "HMAC (oct) keys are accepted only from a Secret";

fn parse_key(v: &Value, allow_hmac: bool) -> Result<Jwk, String> {
    let field = |name: &str| -> Result<&str, String> {
        v.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing {name}"))
    };
    let b64 = |name: &str| -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD
            .decode(field(name)?)
            .map_err(|_| format!("{name} is not base64url"))
    };
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    if let Some(u) = v.get("use") {
        if u.as_str() != Some("sig") {
            return Err(format!("use {u} is not sig"));
        }
    }
    if let Some(ops) = v.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("key_ops does not include verify".into());
        }
    }
    let kid = match v.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.as_str().into()),
        Some(_) => return Err("kid is not a string".into()),
    };
    let kty = field("kty")?;
    let (kind, key, secret_len) = match kty {
        "RSA" => {
            let n = b64("n")?;
            let e = b64("e")?;
            let n_bits = n
                .iter()
                .position(|b| *b != 0)
                .map_or(0, |i| (n.len() - i) * 8 - n[i].leading_zeros() as usize);
            if n_bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA key of {n_bits} bits (at least {MIN_RSA_BITS} needed)"
                ));
            }
            if e.iter().all(|b| *b == 0) {
                return Err("RSA exponent is zero".into());
            }
            (
                KeyKind::Rsa,
                DecodingKey::from_rsa_raw_components(&n, &e),
                0,
            )
        }
        "EC" => {
            let (kind, len) = match field("crv")? {
                "P-256" => (KeyKind::P256, 32),
                "P-384" => (KeyKind::P384, 48),
                other => return Err(format!("curve {other} is not supported")),
            };
            let (x, y) = (b64("x")?, b64("y")?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates have the wrong length for the curve".into());
            }
            let key = DecodingKey::from_ec_components(field("x")?, field("y")?)
                .map_err(|e| e.to_string())?;
            (kind, key, 0)
        }
        "OKP" => {
            let crv = field("crv")?;
            if crv != "Ed25519" {
                return Err(format!("curve {crv} is not supported"));
            }
            if b64("x")?.len() != 32 {
                return Err("Ed25519 key is not 32 bytes".into());
            }
            let key = DecodingKey::from_ed_components(field("x")?).map_err(|e| e.to_string())?;
            (KeyKind::Ed25519, key, 0)
        }
        "oct" => {
            if !allow_hmac {
                return Err(HMAC_NOT_ALLOWED.into());
            }
            let k = b64("k")?;
            if k.len() < 32 {
                return Err("HMAC key shorter than 256 bits".into());
            }
            let len = k.len();
            (KeyKind::Oct, DecodingKey::from_secret(&k), len)
        }
        other => return Err(format!("kty {other} is not supported")),
    };
    let alg = match v.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => {
            let alg = algorithm(a).ok_or_else(|| format!("alg {a} is not supported"))?;
            if KeyKind::for_alg(alg) != kind {
                return Err(format!("alg {a} does not fit kty {kty}"));
            }
            Some(alg)
        }
        Some(_) => return Err("alg is not a string".into()),
    };
    Ok(Jwk {
        kid,
        kind,
        alg,
        secret_len,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn token(header: &str, payload: &str, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            b64(header.as_bytes()),
            b64(payload.as_bytes())
        )
    }

    #[test]
    fn reads_header_and_claims() {
        let t = token(
            r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#,
            r#"{"iss":"a"}"#,
            "c2ln",
        );
        let u = read(&t).unwrap();
        assert_eq!(u.alg, Algorithm::ES256);
        assert_eq!(u.kid.as_deref(), Some("k1"));
        assert_eq!(u.issuer(), Some("a"));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let ok_payload = r#"{"iss":"a"}"#;
        let cases = [
            (
                token(r#"{"alg":"none"}"#, ok_payload, ""),
                TokenError::AlgNone,
            ),
            (
                token(r#"{"alg":"NONE"}"#, ok_payload, ""),
                TokenError::AlgNone,
            ),
            (
                token(r#"{"alg":"ES512"}"#, ok_payload, "c2ln"),
                TokenError::Algorithm,
            ),
            (
                token(r#"{"kid":"x"}"#, ok_payload, "c2ln"),
                TokenError::Header,
            ),
            (
                token(r#"{"alg":"RS256","kid":7}"#, ok_payload, "c2ln"),
                TokenError::Header,
            ),
            (token(r#"["alg"]"#, ok_payload, "c2ln"), TokenError::Header),
            (
                token(
                    r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
                    ok_payload,
                    "c2ln",
                ),
                TokenError::Crit,
            ),
            (
                token(r#"{"alg":"RS256","crit":[]}"#, ok_payload, "c2ln"),
                TokenError::Crit,
            ),
            (
                token(r#"{"alg":"RS256"}"#, "[1]", "c2ln"),
                TokenError::Payload,
            ),
            (
                token(r#"{"alg":"RS256"}"#, ok_payload, "c2ln!"),
                TokenError::Base64,
            ),
            (
                token(r#"{"alg":"RS256"}"#, ok_payload, "c2l="),
                TokenError::Base64,
            ),
            // "c2m" carries stray bits in its last character.
            (
                token(r#"{"alg":"RS256"}"#, ok_payload, "c2m"),
                TokenError::Base64,
            ),
            ("a.b".to_owned(), TokenError::Segments),
            ("a.b.c.d".to_owned(), TokenError::Segments),
            ("a.b.c.d.e".to_owned(), TokenError::Segments),
            ("!!.e30.c2ln".to_owned(), TokenError::Base64),
        ];
        for (t, want) in cases {
            assert_eq!(read(&t).unwrap_err(), want, "{t}");
        }
    }

    #[test]
    fn base64url_check_matches_the_decoder() {
        for s in [
            "", "QQ", "QUI", "QUJD", "c2ln", "_-8", "c2m", "c2lu", "A", "QR", "QUJ",
        ] {
            assert_eq!(is_base64url(s), URL_SAFE_NO_PAD.decode(s).is_ok(), "{s:?}");
        }
    }

    fn ec_key(kid: &str, crv: &str, len: usize) -> serde_json::Value {
        serde_json::json!({"kty": "EC", "crv": crv, "kid": kid,
            "x": b64(&vec![1; len]), "y": b64(&vec![2; len])})
    }

    #[test]
    fn key_kinds_fit_algorithms_only() {
        let jwks = serde_json::json!({"keys": [
            ec_key("p256", "P-256", 32),
            ec_key("p384", "P-384", 48),
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(&[3; 32])},
            {"kty": "oct", "kid": "hs", "k": b64(&[4; 48])},
            {"kty": "oct", "kid": "hs-256-only", "k": b64(&[4; 32]), "alg": "HS256"},
        ]});
        let set = KeySet::parse(jwks.to_string().as_bytes(), true).unwrap();
        assert_eq!(set.len(), 5, "{:?}", set.skipped);
        let kids = |kid: Option<&'static str>, alg| {
            set.candidates(kid, alg)
                .map(|k| k.kid.as_deref().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(kids(None, Algorithm::ES256), ["p256"]);
        assert_eq!(kids(None, Algorithm::ES384), ["p384"]);
        assert_eq!(kids(None, Algorithm::EdDSA), ["ed"]);
        assert_eq!(kids(None, Algorithm::HS256), ["hs", "hs-256-only"]);
        assert_eq!(kids(None, Algorithm::HS384), ["hs"]);
        assert!(
            kids(None, Algorithm::HS512).is_empty(),
            "48 bytes is too short for HS512"
        );
        assert!(kids(None, Algorithm::RS256).is_empty());
        assert!(kids(Some("p256"), Algorithm::ES384).is_empty());
        assert!(kids(Some("p256"), Algorithm::HS256).is_empty());
        assert!(set.has_kid("ed") && !set.has_kid("nope"));
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "short", "n": b64(&[0xff; 128]), "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(&[0xff; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": b64(&[0xff; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": b64(&[0xff; 256]), "e": "AQAB"},
            ec_key("p521", "P-521", 66),
            ec_key("badlen", "P-256", 31),
            {"kty": "oct", "kid": "secret", "k": b64(&[1; 32])},
            {"kty": "RSA", "kid": "good", "n": b64(&[0xff; 256]), "e": "AQAB"},
        ]});
        let set = KeySet::parse(jwks.to_string().as_bytes(), false).unwrap();
        assert_eq!(set.kids(), ["good"]);
        assert_eq!(set.skipped.len(), 7, "{:?}", set.skipped);
        assert!(set.skipped_hmac);
        assert!(set.skipped[0].contains("1024 bits"), "{}", set.skipped[0]);
        assert!(set.supports(Algorithm::PS384) && !set.supports(Algorithm::ES256));

        let err = KeySet::parse(br#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#, false).unwrap_err();
        assert!(err.to_string().contains("only from a Secret"), "{err}");
        assert_eq!(KeySet::parse(b"[]", false).unwrap_err(), JwkError::Shape);
        assert!(matches!(KeySet::parse(b"{", false), Err(JwkError::Json(_))));
    }
}
