//! JWK set parsing (inline sets, Secrets, ConfigMaps and fetched documents
//! all go through it): never panics; a set that parses has keys, each of
//! them verifying only algorithms of its own kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::policy::jose::{is_hmac, KeySet, ASYMMETRIC};

fuzz_target!(|data: &[u8]| {
    let Ok(set) = KeySet::parse(data, true) else {
        // Without HMAC allowed, a set that failed with it fails too.
        assert!(KeySet::parse(data, false).is_err());
        return;
    };
    assert!(!set.is_empty());
    for kid in set.kids() {
        if kid != "-" {
            assert!(set.has_kid(kid));
        }
    }
    match KeySet::parse(data, false) {
        Ok(strict) => {
            // Dropping the HMAC keys leaves only keys that verify no HMAC.
            assert!(strict.len() <= set.len());
            for alg in [
                jsonwebtoken::Algorithm::HS256,
                jsonwebtoken::Algorithm::HS384,
                jsonwebtoken::Algorithm::HS512,
            ] {
                assert!(is_hmac(alg) && !strict.supports(alg));
            }
            for alg in ASYMMETRIC {
                assert_eq!(strict.supports(alg), set.supports(alg));
            }
        }
        // Nothing usable without HMAC: every key was a shared secret.
        Err(_) => assert!(ASYMMETRIC.iter().all(|alg| !set.supports(*alg))),
    }
});
