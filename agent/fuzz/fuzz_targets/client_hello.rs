//! The TLS ClientHello SNI reader of TLS Passthrough listeners, fed the same
//! bytes whole and in fuzzed chunks: the answer may not depend on how TCP
//! split the stream, and a server name is always a lower-case DNS name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::gateway::client_hello::{HelloReader, Parsed};

// Input: one byte `n`, then `n` big-endian `u16` cut points (taken modulo
// the stream's length), then the stream — a seed is `0` and a ClientHello.
fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let Some((cuts, stream)) = rest.split_at_checked(usize::from(n) * 2) else {
        return;
    };
    let cuts: Vec<u16> = cuts
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let whole = HelloReader::default().feed(stream);
    if let Parsed::Hello(Some(name)) = &whole {
        assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
        assert!(!name.ends_with('.'), "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
            "{name:?}"
        );
    }
    // Each call gets everything received so far, as the L4 relay does.
    let mut ends: Vec<usize> = cuts
        .iter()
        .filter(|_| !stream.is_empty())
        .map(|c| usize::from(*c) % stream.len())
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends.push(stream.len());
    let mut reader = HelloReader::default();
    let mut chunked = Parsed::Incomplete;
    for end in ends {
        chunked = reader.feed(&stream[..end]);
        if chunked != Parsed::Incomplete {
            break;
        }
    }
    assert_eq!(chunked, whole, "cut at {cuts:?}");
});
