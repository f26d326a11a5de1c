//! Formatting of access log entries, on the writer thread: JSON (one object
//! per line) or text (fixed field order). Written by hand into a reused
//! buffer — a line is a few hundred bytes and the writer formats thousands
//! per second.
use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use http::HeaderValue;

use super::{Entry, QueryMode};

/// Appends `e` as one JSON object and a newline.
pub fn write_json(e: &Entry, out: &mut Vec<u8>) {
    // `time` comes first; every other key with its leading comma is one
    // literal.
    macro_rules! key {
        ($k:literal) => {
            out.extend_from_slice(concat!(",\"", $k, "\":").as_bytes())
        };
    }
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339(e.time, out);
    out.push(b'"');
    key!("gateway");
    string(out, &e.gateway);
    if let Some(l) = &e.listener {
        key!("listener");
        string(out, l);
    }
    if let Some(r) = &e.route {
        key!("route");
        string(out, r);
        if let Some(slash) = r.bytes().position(|c| c == b'/') {
            key!("namespace");
            string(out, &r[..slash]);
        }
    }
    if let Some(r) = e.rule {
        key!("rule");
        int(out, r.into());
    }
    key!("method");
    known(out, e.method.as_str());
    if let Some(a) = e.authority() {
        key!("authority");
        bytes(out, a);
    }
    key!("path");
    out.push(b'"');
    write_path(e, out, escape);
    out.push(b'"');
    key!("protocol");
    known(out, version(e.version));
    key!("status");
    int(out, e.status.into());
    key!("flag");
    known(out, e.flag);
    key!("reason");
    known(out, e.reason);
    key!("bytes_in");
    int(out, e.bytes_in);
    key!("bytes_out");
    int(out, e.bytes_out);
    key!("duration_ms");
    millis(out, e.duration);
    if let Some(u) = e.upstream {
        key!("upstream");
        quoted(out, |out| socket_addr(out, u));
    }
    if let Some(t) = e.upstream_time {
        key!("upstream_ms");
        millis(out, t);
    }
    key!("retries");
    int(out, e.retries.into());
    if let Some(v) = e.tls_version {
        key!("tls_version");
        known(out, v);
    }
    if let Some(s) = &e.sni {
        key!("sni");
        string(out, s);
    }
    key!("client");
    quoted(out, |out| ip_addr(out, e.client));
    key!("peer");
    quoted(out, |out| socket_addr(out, e.peer));
    if let Some(v) = &e.x_forwarded_for {
        key!("x_forwarded_for");
        bytes(out, v.as_bytes());
    }
    if let Some(v) = &e.user_agent {
        key!("user_agent");
        bytes(out, v.as_bytes());
    }
    if let Some(v) = &e.request_id {
        key!("request_id");
        bytes(out, v.as_bytes());
    }
    if let Some(t) = &e.trace_id {
        key!("trace_id");
        bytes(out, t);
    }
    if let Some(p) = &e.principal {
        key!("principal");
        string(out, p);
    }
    if let Some((policy, section)) = &e.policy {
        key!("policy");
        string(out, policy);
        key!("section");
        known(out, section);
    }
    if e.incomplete {
        key!("incomplete");
        out.extend_from_slice(b"true");
    }
    out.extend_from_slice(b"}\n");
}

/// Appends `e` as one text line: time, gateway, client, method, authority,
/// path, protocol, status, flag, bytes in, bytes out, duration (ms),
/// upstream, upstream time (ms), route, request id, user agent (quoted),
/// principal, reason. `-` for an absent field.
pub fn write_text(e: &Entry, out: &mut Vec<u8>) {
    rfc3339(e.time, out);
    let _ = write!(out, " {} {} {} ", e.gateway, e.client, e.method);
    field(out, e.authority());
    out.push(b' ');
    write_path(e, out, |out, s| field(out, Some(s.as_bytes())));
    out.push(b' ');
    out.extend_from_slice(version(e.version).as_bytes());
    out.push(b' ');
    int(out, e.status.into());
    out.push(b' ');
    out.extend_from_slice(e.flag.as_bytes());
    out.push(b' ');
    int(out, e.bytes_in);
    out.push(b' ');
    int(out, e.bytes_out);
    out.push(b' ');
    millis(out, e.duration);
    out.push(b' ');
    match e.upstream {
        Some(u) => socket_addr(out, u),
        None => out.push(b'-'),
    }
    out.push(b' ');
    match e.upstream_time {
        Some(t) => millis(out, t),
        None => out.push(b'-'),
    }
    out.push(b' ');
    field(out, e.route.as_deref().map(str::as_bytes));
    out.push(b' ');
    field(out, e.request_id.as_ref().map(HeaderValue::as_bytes));
    out.extend_from_slice(b" \"");
    if let Some(ua) = &e.user_agent {
        escape_bytes(out, ua.as_bytes());
    }
    out.extend_from_slice(b"\" ");
    field(out, e.principal.as_deref().map(str::as_bytes));
    out.push(b' ');
    out.extend_from_slice(e.reason.as_bytes());
    out.push(b'\n');
}

/// A text field: spaces become `+` so fields stay split by spaces.
fn field(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) if !v.is_empty() => {
            out.extend(v.iter().map(|b| if *b == b' ' { b'+' } else { *b }))
        }
        _ => out.push(b'-'),
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Writes the path with the query as the entry's query mode says, each
/// piece through `put` (the format's escaping), without building a string.
fn write_path(e: &Entry, out: &mut Vec<u8>, put: impl Fn(&mut Vec<u8>, &str)) {
    put(out, e.uri.path());
    let Some(q) = e.uri.query() else { return };
    match e.query {
        QueryMode::Drop => {}
        QueryMode::Keep => {
            put(out, "?");
            put(out, q);
        }
        QueryMode::Redact => {
            put(out, "?");
            for (i, pair) in q.split('&').enumerate() {
                if i > 0 {
                    put(out, "&");
                }
                match pair.split_once('=') {
                    Some((name, _)) => {
                        put(out, name);
                        put(out, "=REDACTED");
                    }
                    None => put(out, pair),
                }
            }
        }
    }
}

/// A string that needs no escaping: the gateway's own names (reasons,
/// flags, protocol versions) and methods (tokens, RFC 9110 §5.6.2, which
/// have no quote, backslash or control character).
fn known(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!s.bytes().any(byte_needs_escape), "{s:?}");
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape(out, s);
    out.push(b'"');
}

/// A header value as a JSON string: header values may hold any byte but
/// controls; non-UTF-8 bytes are replaced.
fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    escape_bytes(out, b);
    out.push(b'"');
}

fn escape_bytes(out: &mut Vec<u8>, b: &[u8]) {
    if b.is_ascii() {
        escape_utf8(out, b);
    } else {
        match std::str::from_utf8(b) {
            Ok(s) => escape(out, s),
            Err(_) => escape(out, &String::from_utf8_lossy(b)),
        }
    }
}

/// JSON string escaping (RFC 8259 §7).
fn escape(out: &mut Vec<u8>, s: &str) {
    escape_utf8(out, s.as_bytes());
}

/// Escapes valid UTF-8. Everything that needs escaping is ASCII, so runs
/// of other bytes are copied whole, and eight bytes at a time are checked
/// for any that needs it: the writer formats a line per request, and
/// nearly every field needs none.
fn escape_utf8(out: &mut Vec<u8>, b: &[u8]) {
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        let plain = match b.get(i..i + 8) {
            Some(word) => {
                !word_needs_escape(u64::from_le_bytes(word.try_into().expect("eight bytes")))
            }
            // The last one to seven bytes (most names are short).
            None => !tail_needs_escape(&b[i..]),
        };
        if plain {
            i = (i + 8).min(b.len());
            continue;
        }
        let end = (i + 8).min(b.len());
        for (j, &c) in b.iter().enumerate().take(end).skip(i) {
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
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            } else {
                out.extend_from_slice(short);
            }
            run = j + 1;
        }
        i = end;
    }
    out.extend_from_slice(&b[run..]);
}

#[inline]
fn byte_needs_escape(c: u8) -> bool {
    c < 0x20 || c == 0x7f || c == b'"' || c == b'\\'
}

/// Whether any of the eight bytes is a control character, DEL, `"` or
/// `\` (bytes of 0x80 and above, parts of UTF-8 sequences, are not).
/// Exact, by the classic "has a zero byte" / "has a byte less than n"
/// tests.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    below_space
        || has_zero(w ^ (ONES * u64::from(b'"')))
        || has_zero(w ^ (ONES * u64::from(b'\\')))
        || has_zero(w ^ (ONES * 0x7f))
}

/// Whether any of one to seven bytes needs escaping, by one word test
/// rather than a test per byte: four bytes and seven are read as two
/// overlapping halves; one to three as the first, middle and last (which
/// cover them), the rest of the word padded with a plain byte.
#[inline]
fn tail_needs_escape(t: &[u8]) -> bool {
    let n = t.len();
    let word = match n {
        0 => return false,
        1..=3 => u64::from_le_bytes([t[0], t[n / 2], t[n - 1], b'a', b'a', b'a', b'a', b'a']),
        _ => {
            let half = |at: usize| {
                u64::from(u32::from_le_bytes(
                    t[at..at + 4].try_into().expect("four bytes"),
                ))
            };
            half(0) | half(n - 4) << 32
        }
    };
    word_needs_escape(word)
}

fn quoted(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    f(out);
    out.push(b'"');
}

/// IPv4 digit by digit (nearly every address logged); IPv6 by its
/// `Display`, which compresses zeros as RFC 5952 says.
fn ip_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                small(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `1.2.3.4:80` or `[::1]:80`.
fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(_) => ip_addr(out, addr.ip()),
        SocketAddr::V6(v6) => {
            let _ = write!(out, "[{}", v6.ip());
            if v6.scope_id() != 0 {
                let _ = write!(out, "%{}", v6.scope_id());
            }
            out.push(b']');
        }
    }
    out.push(b':');
    int(out, addr.port().into());
}

/// 0–255 in one to three digits.
fn small(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

fn int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A duration in milliseconds with three decimals (microseconds, rounded),
/// as `{:.3}` of the float would print it, without float formatting.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_secs() * 1_000_000 + u64::from(d.subsec_nanos() + 500) / 1_000;
    int(out, micros / 1_000);
    out.push(b'.');
    let frac = (micros % 1_000) as u16;
    out.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `n` as two digits (`n` < 100).
fn two(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
}

/// `2026-12-07T01:02:03.456Z`. The date and time up to the second is kept
/// per thread: the writer formats many lines within one second.
fn rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, text) = SECOND.get();
    if cached == secs {
        out.extend_from_slice(&text);
    } else {
        let start = out.len();
        date_time(secs, out);
        if let Ok(text) = out[start..].try_into() {
            SECOND.set((secs, text));
        }
    }
    out.push(b'.');
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
    out.push(b'Z');
}

/// `2026-12-07T01:02:03` of seconds since the epoch.
fn date_time(secs: u64, out: &mut Vec<u8>) {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (y, m, d) = civil_from_days(days);
    if (0..10_000).contains(&y) {
        let y = y as u32;
        two(out, y / 100);
        two(out, y % 100);
    } else {
        let _ = write!(out, "{y:04}");
    }
    out.push(b'-');
    two(out, m);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem % 3600 / 60);
    out.push(b':');
    two(out, rem % 60);
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (the era-based method: 400-year cycles of 146,097 days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
pub(super) mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    pub(crate) fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_605_323_456),
            gateway: Arc::from("infra/public"),
            listener: Some(Arc::from("http")),
            route: Some(Arc::from("shop/orders")),
            rule: Some(1),
            method: http::Method::POST,
            authority: Some(HeaderValue::from_static("api.example.com")),
            uri: "/orders/7?token=abc&debug".parse().unwrap(),
            query: QueryMode::Redact,
            version: http::Version::HTTP_11,
            status: 201,
            bytes_in: 12,
            bytes_out: 34,
            duration: Duration::from_micros(1_500),
            upstream: Some("10.0.0.7:8080".parse().unwrap()),
            upstream_time: Some(Duration::from_micros(1_200)),
            retries: 0,
            tls_version: None,
            sni: None,
            peer: "192.0.2.1:40000".parse().unwrap(),
            client: "192.0.2.1".parse().unwrap(),
            x_forwarded_for: None,
            user_agent: Some(HeaderValue::from_static("curl/8 \"quoted\"")),
            request_id: Some(HeaderValue::from_static("rid-1")),
            trace_id: None,
            principal: Some("alice".into()),
            policy: None,
            reason: "upstream",
            flag: "-",
            incomplete: false,
            trace: None,
            filter: None,
        }
    }

    #[test]
    fn json_lines_parse_and_carry_the_fields() {
        let mut out = Vec::new();
        write_json(&entry(), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-12-07T01:02:03.456Z");
        assert_eq!(v["gateway"], "infra/public");
        assert_eq!(v["route"], "shop/orders");
        assert_eq!(v["namespace"], "shop");
        assert_eq!(v["path"], "/orders/7?token=REDACTED&debug");
        assert_eq!(v["status"], 201);
        assert_eq!(v["flag"], "-");
        assert_eq!(v["bytes_out"], 34);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream"], "10.0.0.7:8080");
        assert_eq!(v["user_agent"], "curl/8 \"quoted\"");
        assert_eq!(v["principal"], "alice");
        assert!(v.get("policy").is_none());
    }

    #[test]
    fn query_modes() {
        let mut e = entry();
        let path = |e: &Entry| {
            let mut out = Vec::new();
            write_path(e, &mut out, |out, s| out.extend_from_slice(s.as_bytes()));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(path(&e), "/orders/7?token=REDACTED&debug");
        e.query = QueryMode::Keep;
        assert_eq!(path(&e), "/orders/7?token=abc&debug");
        e.query = QueryMode::Drop;
        assert_eq!(path(&e), "/orders/7");
    }

    #[test]
    fn text_lines_have_fixed_fields() {
        let mut out = Vec::new();
        write_text(&entry(), &mut out);
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "2026-12-07T01:02:03.456Z infra/public 192.0.2.1 POST api.example.com \
             /orders/7?token=REDACTED&debug HTTP/1.1 201 - 12 34 1.500 10.0.0.7:8080 1.200 \
             shop/orders rid-1 \"curl/8 \\\"quoted\\\"\" alice upstream\n"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = Vec::new();
        escape(&mut out, "a\u{1}b\"\\\n");
        assert_eq!(out, b"a\\u0001b\\\"\\\\\\n");
    }

    #[test]
    fn escaping_copies_plain_runs_and_escapes_the_rest() {
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
        let byte_needs = byte_needs_escape;
        // Every byte value at every position among plain bytes.
        for c in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = c;
                assert_eq!(
                    word_needs_escape(u64::from_le_bytes(word)),
                    byte_needs(c),
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
            let expected = x.to_le_bytes().into_iter().any(byte_needs);
            assert_eq!(word_needs_escape(x), expected, "{x:#018x}");
        }
    }

    #[test]
    fn the_tail_test_agrees_with_a_byte_by_byte_one() {
        // Every length of a tail, every byte value at every position.
        for n in 1..8 {
            for at in 0..n {
                for c in 0..=255u8 {
                    let mut tail = b"abcdefg"[..n].to_vec();
                    tail[at] = c;
                    assert_eq!(
                        tail_needs_escape(&tail),
                        byte_needs_escape(c),
                        "byte {c:#x} at {at} of {n}"
                    );
                }
            }
        }
        assert!(!tail_needs_escape(b""));
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

    #[test]
    fn milliseconds_print_as_the_float_would() {
        for nanos in [
            0,
            1,
            499,
            500,
            999_499,
            999_500,
            1_500_000,
            1_234_567,
            61_000_000_123,
            3_999_999_999,
        ] {
            let d = Duration::from_nanos(nanos);
            let mut out = Vec::new();
            millis(&mut out, d);
            let ours = String::from_utf8(out).unwrap();
            let float: f64 = format!("{:.3}", d.as_secs_f64() * 1e3).parse().unwrap();
            let parsed: f64 = ours.parse().unwrap();
            assert!(
                (parsed - float).abs() < 0.0011,
                "{nanos} ns: {ours} vs {float}"
            );
            assert_eq!(
                ours.split_once('.').map(|(_, f)| f.len()),
                Some(3),
                "{ours}"
            );
        }
        let mut out = Vec::new();
        millis(&mut out, Duration::from_micros(1_500));
        assert_eq!(out, b"1.500");
    }

    #[test]
    fn addresses_print_as_display_does() {
        for a in [
            "10.0.0.7:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:443",
            "[2001:db8::7]:80",
            "[fe80::1%3]:9",
            "[::ffff:192.0.2.1]:1",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
            let mut out = Vec::new();
            ip_addr(&mut out, addr.ip());
            assert_eq!(String::from_utf8(out).unwrap(), addr.ip().to_string());
        }
    }

    #[test]
    fn timestamps_within_and_across_seconds() {
        let at = |ms: u64| {
            let mut out = Vec::new();
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(ms), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(1_796_605_323_456), "2026-12-07T01:02:03.456Z");
        assert_eq!(at(1_796_605_323_999), "2026-12-07T01:02:03.999Z");
        assert_eq!(at(1_796_605_324_000), "2026-12-07T01:02:04.000Z");
        assert_eq!(at(1_796_605_323_001), "2026-12-07T01:02:03.001Z");
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_796_687_999_999), "2026-12-07T23:59:59.999Z");
        assert_eq!(at(1_796_688_000_000), "2026-12-08T00:00:00.000Z");
    }

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }
}
