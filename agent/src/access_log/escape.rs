//! JSON string escaping (RFC 8259 §7) for access log lines, on the request
//! path (a line is formatted when its response ends).
//!
//! Nearly every field needs no escaping, so a field is first scanned eight
//! bytes at a time (a few word operations per eight bytes, no branch per
//! byte) and, when the scan finds nothing, copied whole. Only a field with a
//! quote, backslash or control character takes the byte-by-byte path.
//! Everything that needs escaping is ASCII, so UTF-8 sequences are copied
//! as they are; header values that are not UTF-8 are replaced lossily.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
/// Eight bytes that need nothing (padding of short tails).
const PLAIN: u64 = u64::from_le_bytes(*b"aaaaaaaa");

/// A string written as it is: the gateway's own names (reasons, flags,
/// protocol versions) and methods (tokens, RFC 9110 §5.6.2, which have no
/// quote, backslash or control character).
pub(super) fn known(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!s.bytes().any(byte_needs_escape), "{s:?}");
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// `s` as a JSON string, quotes included.
pub(super) fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape(out, s);
    out.push(b'"');
}

/// A header value as a JSON string: header values may hold any byte but
/// controls; non-UTF-8 bytes are replaced.
pub(super) fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    escape_bytes(out, b);
    out.push(b'"');
}

/// Escapes `s` (without quotes).
pub(super) fn escape(out: &mut Vec<u8>, s: &str) {
    let (escapes, _) = scan(s.as_bytes());
    if escapes == 0 {
        out.extend_from_slice(s.as_bytes());
    } else {
        escape_slow(out, s.as_bytes());
    }
}

/// Escapes bytes that are usually, but not surely, UTF-8 (without quotes).
pub(super) fn escape_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let (escapes, high) = scan(b);
    if escapes == 0 && high == 0 {
        out.extend_from_slice(b);
        return;
    }
    match std::str::from_utf8(b) {
        Ok(s) if escapes == 0 => out.extend_from_slice(s.as_bytes()),
        Ok(s) => escape_slow(out, s.as_bytes()),
        Err(_) => escape_slow(out, String::from_utf8_lossy(b).as_bytes()),
    }
}

/// Escapes valid UTF-8 byte by byte, copying the runs between escapes whole.
#[cold]
fn escape_slow(out: &mut Vec<u8>, b: &[u8]) {
    let mut run = 0;
    for (j, &c) in b.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..j]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]);
        } else {
            out.extend_from_slice(short);
        }
        run = j + 1;
    }
    out.extend_from_slice(&b[run..]);
}

/// Scans `b`: non-zero first if any byte needs escaping, non-zero second if
/// any byte is 0x80 or above (not ASCII).
#[inline]
fn scan(b: &[u8]) -> (u64, u64) {
    let (mut escapes, mut high) = (0, 0);
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        escapes |= word_flags(w);
        high |= w;
    }
    let w = tail_word(words.remainder());
    (escapes | word_flags(w), (high | w) & HIGH)
}

#[inline]
fn byte_needs_escape(c: u8) -> bool {
    c < 0x20 || c == 0x7f || c == b'"' || c == b'\\'
}

/// Non-zero when any of the eight bytes is a control character, DEL, `"`
/// or `\` (bytes of 0x80 and above, parts of UTF-8 sequences, are not).
/// Exact, by the classic "has a byte less than n" and "has a zero byte"
/// tests; only whether it is zero means anything.
#[inline]
fn word_flags(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    (below_space
        | zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | zero(w ^ (ONES * 0x7f)))
        & HIGH
}

/// One to seven bytes as one word to test: four to seven as two
/// overlapping halves; one to three as the first, middle and last (which
/// cover them); the rest padded with a plain byte.
#[inline]
fn tail_word(t: &[u8]) -> u64 {
    let n = t.len();
    match n {
        0 => PLAIN,
        1..=3 => u64::from_le_bytes([t[0], t[n / 2], t[n - 1], b'a', b'a', b'a', b'a', b'a']),
        _ => {
            let half = |at: usize| {
                u64::from(u32::from_le_bytes(
                    t[at..at + 4].try_into().expect("four bytes"),
                ))
            };
            half(0) | half(n - 4) << 32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(b: &[u8]) -> bool {
        scan(b).0 != 0
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = Vec::new();
        escape(&mut out, "a\u{1}b\"\\\n");
        assert_eq!(out, b"a\\u0001b\\\"\\\\\\n");
    }

    #[test]
    fn plain_fields_are_copied_and_the_rest_escaped() {
        let mut out = Vec::new();
        escape(&mut out, "plain/ascii");
        assert_eq!(out, b"plain/ascii");
        out.clear();
        escape(&mut out, "caf\u{e9} \u{7f}x\u{1f}");
        assert_eq!(out, "caf\u{e9} \\u007fx\\u001f".as_bytes());
        // Non-UTF-8 header bytes are replaced, and the line stays JSON.
        out.clear();
        bytes(&mut out, b"a\xff\"b");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, "a\u{fffd}\"b");
        out.clear();
        bytes(&mut out, "na\u{ef}ve".as_bytes());
        assert_eq!(out, "\"na\u{ef}ve\"".as_bytes());
        // Every byte value, through the JSON parser and back.
        let all: String = (0u8..=0x7f)
            .map(char::from)
            .chain(['\u{e9}', '\u{1f600}'])
            .collect();
        out.clear();
        string(&mut out, &all);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.as_str(), Some(all.as_str()));
    }

    #[test]
    fn the_word_test_agrees_with_a_byte_by_byte_one() {
        // Every byte value at every position among plain bytes.
        for c in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = c;
                assert_eq!(
                    word_flags(u64::from_le_bytes(word)) != 0,
                    byte_needs_escape(c),
                    "byte {c:#x} at {at}"
                );
            }
        }
        // Mixed words (a fixed xorshift sequence, so a failure repeats).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let expected = x.to_le_bytes().into_iter().any(byte_needs_escape);
            assert_eq!(word_flags(x) != 0, expected, "{x:#018x}");
        }
    }

    #[test]
    fn every_length_and_position_agrees_with_the_byte_rule() {
        // Lengths 0–24 cover no word, whole words and every tail length;
        // every byte value at every position, for both answers of a scan.
        for n in 0..=24 {
            let plain: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(!needs(&plain), "{n} plain bytes");
            assert_eq!(scan(&plain).1, 0);
            for at in 0..n {
                for c in 0..=255u8 {
                    let mut b = plain.clone();
                    b[at] = c;
                    let (escapes, high) = scan(&b);
                    assert_eq!(escapes != 0, byte_needs_escape(c), "{c:#x} at {at} of {n}");
                    assert_eq!(high != 0, c >= 0x80, "{c:#x} at {at} of {n}");
                }
            }
        }
    }

    #[test]
    fn long_fields_escape_across_words() {
        let s = format!(
            "{}\"{}\\{}\u{1}é",
            "a".repeat(13),
            "b".repeat(8),
            "c".repeat(7)
        );
        let mut out = Vec::new();
        string(&mut out, &s);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.as_str(), Some(s.as_str()));
    }
}
