//! `X-Request-Id`: kept when a trusted proxy sent one, else generated, then
//! forwarded upstream and returned to the client, so a line in the access
//! log, the backend's log and the client's report can be matched.
//!
//! Generated ids are UUIDs (version 4 layout) from [`crate::random`]: they
//! never repeat within a thread and collide across threads or agents only
//! by chance — without a system call or lock per request.
//!
//! Ids are marked sensitive, which HPACK encodes as "never indexed": an id
//! never repeats, so entering each one in an HTTP/2 connection's header
//! table (the default) only evicts the entries that do repeat, and walking
//! the chain of earlier ids cost the encoder about 3,000 instructions per
//! response (`cargo xtask bench instructions --h2c`).
use http::HeaderValue;

/// `v` marked so HTTP/2 never indexes it (see the module's comment).
pub fn never_indexed(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// A new request id, e.g. `3f0c9a52-7d1e-4b8a-9c3e-0a1b2c3d4e5f`.
pub fn generate() -> HeaderValue {
    let (hi, lo) = (crate::random::next_u64(), crate::random::next_u64());
    // Version 4 (the high nibble of byte 6), RFC 4122 variant (the top two
    // bits of byte 8).
    let hi = (hi & !(0xf << 12)) | (0x4 << 12);
    let lo = (lo & !(0x3 << 62)) | (0x2 << 62);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&hi.to_be_bytes());
    raw[8..].copy_from_slice(&lo.to_be_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    // Byte i's two digits, skipping the dashes after bytes 4, 6, 8 and 10.
    let mut at = 0;
    for (i, byte) in raw.into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    never_indexed(
        HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value"),
    )
}

/// Whether a received id is usable: short, printable, no separators that
/// would break log lines.
pub fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 10_000);
        let one = generate();
        let s = one.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4", "{s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_eq!(s.matches('-').count(), 4);
        assert!(one.is_sensitive(), "generated ids are never indexed");
    }

    #[test]
    fn received_ids_are_checked() {
        assert!(acceptable(&HeaderValue::from_static("abc-123")));
        assert!(!acceptable(&HeaderValue::from_static("has space")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        let long = "x".repeat(200);
        assert!(!acceptable(&HeaderValue::from_str(&long).unwrap()));
    }
}
