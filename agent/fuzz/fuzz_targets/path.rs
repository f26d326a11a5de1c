//! Request path normalisation: never panics; what it returns is canonical
//! (normalising it again changes nothing), absolute, free of dot segments
//! and, when merging, of `//`; and it is a valid request path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::{
    path::{normalize, PathRules},
    policy::connection::EscapedSlashes,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // Only what hyper could hand over: a parseable origin-form path.
    let Ok(uri) = format!("/{text}").parse::<http::Uri>() else {
        return;
    };
    let rules = PathRules {
        merge_slashes: flags & 1 == 1,
        escaped_slashes: match flags >> 1 & 3 {
            0 => EscapedSlashes::Keep,
            1 => EscapedSlashes::Reject,
            _ => EscapedSlashes::Unescape,
        },
    };
    let Ok(once) = normalize(uri.path(), &rules) else {
        return;
    };
    assert!(once.starts_with('/'), "{uri} → {once}");
    let again = normalize(&once, &rules).expect("a normalised path normalises");
    assert_eq!(again, once, "{uri}");
    for seg in once.split('/') {
        assert!(seg != "." && seg != "..", "{uri} → {once}");
    }
    if rules.merge_slashes {
        assert!(!once.contains("//"), "{uri} → {once}");
    }
    let rebuilt = sluice::path::with_path(&uri, &once);
    assert_eq!(rebuilt.path(), once, "{uri} → {once} is not a valid path");
});
