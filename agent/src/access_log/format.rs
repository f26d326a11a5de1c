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
    out.push(b'{');
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, k: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
    };
    key(out, "time");
    out.push(b'"');
    rfc3339(e.time, out);
    out.push(b'"');
    key(out, "gateway");
    string(out, &e.gateway);
    if let Some(l) = &e.listener {
        key(out, "listener");
        string(out, l);
    }
    if let Some(r) = &e.route {
        key(out, "route");
        string(out, r);
        if let Some((ns, _)) = r.split_once('/') {
            key(out, "namespace");
            string(out, ns);
        }
    }
    if let Some(r) = e.rule {
        key(out, "rule");
        int(out, r.into());
    }
    key(out, "method");
    string(out, e.method.as_str());
    if let Some(a) = e.authority() {
        key(out, "authority");
        bytes(out, a);
    }
    key(out, "path");
    out.push(b'"');
    write_path(e, out, escape);
    out.push(b'"');
    key(out, "protocol");
    string(out, version(e.version));
    key(out, "status");
    int(out, e.status.into());
    key(out, "flag");
    string(out, e.flag);
    key(out, "reason");
    string(out, e.reason);
    key(out, "bytes_in");
    int(out, e.bytes_in);
    key(out, "bytes_out");
    int(out, e.bytes_out);
    key(out, "duration_ms");
    millis(out, e.duration);
    if let Some(u) = e.upstream {
        key(out, "upstream");
        quoted(out, |out| socket_addr(out, u));
    }
    if let Some(t) = e.upstream_time {
        key(out, "upstream_ms");
        millis(out, t);
    }
    key(out, "retries");
    int(out, e.retries.into());
    if let Some(v) = e.tls_version {
        key(out, "tls_version");
        string(out, v);
    }
    if let Some(s) = &e.sni {
        key(out, "sni");
        string(out, s);
    }
    key(out, "client");
    quoted(out, |out| ip_addr(out, e.client));
    key(out, "peer");
    quoted(out, |out| socket_addr(out, e.peer));
    for (k, v) in [
        ("x_forwarded_for", &e.x_forwarded_for),
        ("user_agent", &e.user_agent),
        ("request_id", &e.request_id),
    ] {
        if let Some(v) = v {
            key(out, k);
            bytes(out, v.as_bytes());
        }
    }
    if let Some(t) = &e.trace_id {
        key(out, "trace_id");
        bytes(out, t);
    }
    if let Some(p) = &e.principal {
        key(out, "principal");
        string(out, p);
    }
    if let Some((policy, section)) = &e.policy {
        key(out, "policy");
        string(out, policy);
        key(out, "section");
        string(out, section);
    }
    if e.incomplete {
        key(out, "incomplete");
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
    match std::str::from_utf8(b) {
        Ok(s) => escape(out, s),
        Err(_) => escape(out, &String::from_utf8_lossy(b)),
    }
}

/// JSON string escaping (RFC 8259 §7). Everything that needs escaping is
/// ASCII, so runs of other bytes (UTF-8 included) are copied whole: the
/// writer formats a line per request, and nearly every field needs none.
fn escape(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&b[run..]);
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
                int(out, octet.into());
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

fn int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A duration in milliseconds with three decimals (microseconds, rounded),
/// as `{:.3}` of the float would print it, without float formatting.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1_000;
    int(out, (micros / 1_000) as u64);
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

/// `2026-12-07T01:02:03.456Z`.
fn rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
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
    out.push(b'.');
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
    out.push(b'Z');
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
        let all: String = (0u8..=0x7f).map(char::from).chain(['\u{e9}', '\u{1f600}']).collect();
        out.clear();
        string(&mut out, &all);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.as_str(), Some(all.as_str()));
    }

    #[test]
    fn milliseconds_print_as_the_float_would() {
        for nanos in [0, 1, 499, 500, 999_499, 999_500, 1_500_000, 1_234_567, 61_000_000_123, 3_999_999_999] {
            let d = Duration::from_nanos(nanos);
            let mut out = Vec::new();
            millis(&mut out, d);
            let ours = String::from_utf8(out).unwrap();
            let float: f64 = format!("{:.3}", d.as_secs_f64() * 1e3).parse().unwrap();
            let parsed: f64 = ours.parse().unwrap();
            assert!((parsed - float).abs() < 0.0011, "{nanos} ns: {ours} vs {float}");
            assert_eq!(ours.split_once('.').map(|(_, f)| f.len()), Some(3), "{ours}");
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
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }
}
