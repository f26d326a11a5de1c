//! Formatting of access log entries, on the thread that finished the
//! request: JSON (one object per line) or text (fixed field order). Written
//! by hand into a reused buffer — a line is a few hundred bytes, and this
//! runs once per request.
use std::{
    cell::RefCell,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::HeaderValue;

use super::{
    escape::{bytes, escape, escape_bytes, known, string},
    Entry, QueryMode,
};

/// Appends `e` as one JSON object and a newline.
pub fn write_json(e: &Entry, out: &mut Vec<u8>) {
    // A key with its leading comma, as one literal (`time` comes first).
    macro_rules! key {
        ($k:literal) => {
            out.extend_from_slice(concat!(",\"", $k, "\":").as_bytes())
        };
    }
    // Literal runs between values in one piece: a string value's closing
    // quote goes with the next key. Methods (tokens, RFC 9110 §5.6.2),
    // versions, flags and reasons never need escaping.
    macro_rules! lit {
        ($s:literal) => {
            out.extend_from_slice($s.as_bytes())
        };
    }
    lit!("{\"time\":\"");
    rfc3339(e.time, out);
    out.push(b'"');
    names_json(e, out);
    lit!(",\"method\":\"");
    out.extend_from_slice(e.method.as_str().as_bytes());
    if let Some(a) = e.authority() {
        lit!("\",\"authority\":\"");
        escape_bytes(out, a);
    }
    lit!("\",\"path\":\"");
    write_path(e, out, escape);
    lit!("\",\"protocol\":\"");
    out.extend_from_slice(version(e.version).as_bytes());
    lit!("\",\"status\":");
    int(out, e.status.into());
    lit!(",\"flag\":\"");
    out.extend_from_slice(e.flag.as_bytes());
    lit!("\",\"reason\":\"");
    out.extend_from_slice(e.reason.as_bytes());
    lit!("\",\"bytes_in\":");
    int(out, e.bytes_in);
    lit!(",\"bytes_out\":");
    int(out, e.bytes_out);
    lit!(",\"duration_ms\":");
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
    client_and_peer(out, e.client, e.peer);
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

/// The names of the entry's Gateway, listener, route (with its namespace)
/// and rule, as JSON members (`,"gateway":…,"rule":1`): nearly every line
/// repeats those of a few hot routes, so each thread keeps the rendered
/// members of the last sixteen combinations it saw, keyed by the identity
/// of the snapshot's shared names (held here, so an address is never
/// reused for another name while it is a key).
fn names_json(e: &Entry, out: &mut Vec<u8>) {
    const SLOTS: usize = 16;
    thread_local! {
        static MEMO: RefCell<[Option<Names>; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
    }
    // The route's address (else the Gateway's) picks the slot; allocations
    // are 16-byte aligned, so the low bits say nothing.
    let key = e.route.as_ref().unwrap_or(&e.gateway);
    let slot = (Arc::as_ptr(key).cast::<u8>() as usize >> 4) % SLOTS;
    MEMO.with_borrow_mut(|memo| {
        if let Some(names) = &memo[slot] {
            if names.same(e) {
                out.extend_from_slice(&names.json);
                return;
            }
        }
        let start = out.len();
        write_names(e, out);
        memo[slot] = Some(Names {
            gateway: e.gateway.clone(),
            listener: e.listener.clone(),
            route: e.route.clone(),
            rule: e.rule,
            json: out[start..].into(),
        });
    });
}

/// A rendered [`names_json`] and the names it was rendered from.
struct Names {
    gateway: Arc<str>,
    listener: Option<Arc<str>>,
    route: Option<Arc<str>>,
    rule: Option<u32>,
    json: Box<[u8]>,
}

impl Names {
    fn same(&self, e: &Entry) -> bool {
        fn same(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        Arc::ptr_eq(&self.gateway, &e.gateway)
            && same(&self.listener, &e.listener)
            && same(&self.route, &e.route)
            && self.rule == e.rule
    }
}

fn write_names(e: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"gateway\":");
    string(out, &e.gateway);
    if let Some(l) = &e.listener {
        out.extend_from_slice(b",\"listener\":");
        string(out, l);
    }
    if let Some(r) = &e.route {
        out.extend_from_slice(b",\"route\":");
        string(out, r);
        if let Some(slash) = r.bytes().position(|c| c == b'/') {
            out.extend_from_slice(b",\"namespace\":");
            string(out, &r[..slash]);
        }
    }
    if let Some(r) = e.rule {
        out.extend_from_slice(b",\"rule\":");
        int(out, r.into());
    }
}

/// Appends `e` as one text line: time, gateway, client, method, authority,
/// path, protocol, status, flag, bytes in, bytes out, duration (ms),
/// upstream, upstream time (ms), route, request id, user agent (quoted),
/// principal, reason. `-` for an absent field.
pub fn write_text(e: &Entry, out: &mut Vec<u8>) {
    rfc3339(e.time, out);
    out.push(b' ');
    out.extend_from_slice(e.gateway.as_bytes());
    out.push(b' ');
    ip_addr(out, e.client);
    out.push(b' ');
    out.extend_from_slice(e.method.as_str().as_bytes());
    out.push(b' ');
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

fn quoted(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    f(out);
    out.push(b'"');
}

/// IPv4 from a table of octets (nearly every address logged); IPv6 by its
/// `Display`, which compresses zeros as RFC 5952 says.
fn ip_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0; 22];
            let n = ipv4(&mut buf, v4);
            out.extend_from_slice(&buf[..n]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The `client` and `peer` members. The client is nearly always the peer
/// itself, whose address is then formatted once for both.
fn client_and_peer(out: &mut Vec<u8>, client: IpAddr, peer: SocketAddr) {
    match peer {
        SocketAddr::V4(v4) if client == IpAddr::V4(*v4.ip()) => {
            let (buf, ip, all) = v4_text(v4);
            out.extend_from_slice(b",\"client\":\"");
            out.extend_from_slice(&buf[..ip]);
            out.extend_from_slice(b"\",\"peer\":\"");
            out.extend_from_slice(&buf[..all]);
            out.push(b'"');
        }
        _ => {
            out.extend_from_slice(b",\"client\":");
            quoted(out, |out| ip_addr(out, client));
            out.extend_from_slice(b",\"peer\":");
            quoted(out, |out| socket_addr(out, peer));
        }
    }
}

/// `1.2.3.4:80` or `[::1]:80`.
fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            let (buf, _, all) = v4_text(v4);
            out.extend_from_slice(&buf[..all]);
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "[{}", v6.ip());
            if v6.scope_id() != 0 {
                let _ = write!(out, "%{}", v6.scope_id());
            }
            out.extend_from_slice(b"]:");
            int(out, v6.port().into());
        }
    }
}

/// `1.2.3.4:80` in a buffer, copied once: the buffer, the address's
/// length and the whole length. The few upstream endpoints and a
/// keep-alive connection's peer come back line after line, so each thread
/// keeps the text of the last 32 addresses it wrote, one slot per address
/// picked by its port and address bits.
fn v4_text(addr: std::net::SocketAddrV4) -> ([u8; 22], usize, usize) {
    /// The address as `ip << 16 | port`, its text and the two lengths.
    type Slot = (u64, [u8; 22], u8, u8);
    const SLOTS: usize = 32;
    // 48 bits are used: an empty slot's key matches no address.
    const EMPTY: Slot = (u64::MAX, [0; 22], 0, 0);
    thread_local! {
        static MEMO: [std::cell::Cell<Slot>; SLOTS] = const { [const { std::cell::Cell::new(EMPTY) }; SLOTS] };
    }
    let key = u64::from(addr.ip().to_bits()) << 16 | u64::from(addr.port());
    let slot = (key ^ key >> 16 ^ key >> 32) as usize % SLOTS;
    MEMO.with(|memo| {
        let (k, buf, ip, all) = memo[slot].get();
        if k == key {
            return (buf, usize::from(ip), usize::from(all));
        }
        let (buf, ip, all) = v4_text_uncached(addr);
        // At most 21 bytes: the lengths fit.
        memo[slot].set((key, buf, ip as u8, all as u8));
        (buf, ip, all)
    })
}

fn v4_text_uncached(addr: std::net::SocketAddrV4) -> ([u8; 22], usize, usize) {
    let mut buf = [0; 22];
    let ip = ipv4(&mut buf, *addr.ip());
    buf[ip] = b':';
    let mut digits = itoa::Buffer::new();
    let port = digits.format(addr.port()).as_bytes();
    let all = ip + 1 + port.len();
    buf[ip + 1..all].copy_from_slice(port);
    (buf, ip, all)
}

/// Writes `ip` at the start of `buf`; returns its length.
fn ipv4(buf: &mut [u8; 22], ip: Ipv4Addr) -> usize {
    let mut n = 0;
    for octet in ip.octets() {
        // Every slot is four bytes (digits, a dot, maybe a zero); the next
        // octet overwrites what is past the dot.
        let (slot, len) = OCTETS[usize::from(octet)];
        buf[n..n + 4].copy_from_slice(&slot);
        n += usize::from(len) + 1;
    }
    // Without the last dot.
    n - 1
}

/// Each octet's digits followed by a dot, and how many digits.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut table = [([0; 4], 0); 256];
    let mut i = 0;
    while i < 256 {
        let n = i as u8;
        table[i] = if n >= 100 {
            ([b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10, b'.'], 3)
        } else if n >= 10 {
            ([b'0' + n / 10, b'0' + n % 10, b'.', 0], 2)
        } else {
            ([b'0' + n, b'.', 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// `n` in decimal. One digit (retries, an empty body, a rule index) and
/// three (every status code) are written directly.
fn int(out: &mut Vec<u8>, n: u64) {
    // Up to four digits (statuses, small bodies, milliseconds) directly.
    let d = |x: u64| b'0' + (x % 10) as u8;
    match n {
        0..=9 => out.push(d(n)),
        10..=99 => out.extend_from_slice(&[d(n / 10), d(n)]),
        100..=999 => out.extend_from_slice(&[d(n / 100), d(n / 10), d(n)]),
        1_000..=9_999 => out.extend_from_slice(&[d(n / 1_000), d(n / 100), d(n / 10), d(n)]),
        _ => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
    }
}

/// A duration in milliseconds with three decimals (microseconds, rounded),
/// as `{:.3}` of the float would print it, without float formatting: the
/// microseconds' digits with a dot before the last three.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_secs() * 1_000_000 + u64::from(d.subsec_nanos() + 500) / 1_000;
    // Under ten seconds, as nearly every request is: the whole
    // milliseconds, then the three decimals at once.
    if micros < 10_000_000 {
        let frac = micros % 1_000;
        int(out, micros / 1_000);
        let d = |x: u64| b'0' + (x % 10) as u8;
        out.extend_from_slice(&[b'.', d(frac / 100), d(frac / 10), d(frac)]);
        return;
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(micros).as_bytes();
    match digits.len().checked_sub(3) {
        Some(0) => out.push(b'0'),
        Some(whole) => out.extend_from_slice(&digits[..whole]),
        None => {}
    }
    let frac = &digits[digits.len().saturating_sub(3)..];
    // Under a millisecond: `0.` and the fraction's leading zeros.
    const ZEROS: [&[u8]; 4] = [b"0.000", b"0.00", b"0.0", b"0."];
    if frac.len() < 3 {
        out.extend_from_slice(ZEROS[frac.len()]);
    } else {
        out.push(b'.');
    }
    out.extend_from_slice(frac);
}

/// `n` as two digits (`n` < 100).
fn two(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
}

/// `2026-12-07T01:02:03.456Z`. The date and time up to the second is kept
/// per thread: a thread formats many lines within one second.
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
        assert_eq!(v["client"], "192.0.2.1");
        assert_eq!(v["peer"], "192.0.2.1:40000");
        // A client behind a trusted proxy, and IPv6.
        for (client, peer) in [
            ("203.0.113.9", "192.0.2.1:40000"),
            ("2001:db8::1", "[2001:db8::1]:443"),
        ] {
            let mut e = entry();
            e.client = client.parse().unwrap();
            e.peer = peer.parse().unwrap();
            let mut out = Vec::new();
            write_json(&e, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                (v["client"].as_str(), v["peer"].as_str()),
                (Some(client), Some(peer))
            );
        }
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
    fn integers_print_as_display_does() {
        for n in (0..2_000).chain([9_999, 10_000, 65_535, u64::from(u32::MAX), u64::MAX]) {
            let mut out = Vec::new();
            int(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn milliseconds_print_as_the_float_would() {
        for nanos in [
            0,
            1,
            499,
            500,
            7_000,
            42_000,
            500_000,
            999_000,
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
    fn every_octet_and_port_digit_count_prints_as_display_does() {
        for o in 0..=255u8 {
            for port in [0, 7, 42, 443, 8080, 65535] {
                let addr = SocketAddr::from(([o, 255 - o, o / 2, 10], port));
                let mut out = Vec::new();
                socket_addr(&mut out, addr);
                assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
            }
        }
    }

    #[test]
    fn remembered_addresses_are_the_address_written() {
        // 200 addresses over 32 slots, in two passes and interleaved with
        // their neighbours: every slot is taken, replaced and hit.
        let addrs: Vec<SocketAddr> = (0..200u16)
            .map(|i| SocketAddr::from(([10, 0, (i % 7) as u8, (i / 7) as u8], 40_000 + i % 50)))
            .collect();
        for _ in 0..2 {
            for (i, addr) in addrs.iter().enumerate() {
                for a in [addr, &addrs[(i * 31) % addrs.len()], addr] {
                    let mut out = Vec::new();
                    socket_addr(&mut out, *a);
                    assert_eq!(String::from_utf8(out).unwrap(), a.to_string());
                }
            }
        }
    }

    #[test]
    fn remembered_names_follow_every_change_of_route_listener_and_rule() {
        let names = |e: &Entry| {
            let mut out = Vec::new();
            write_json(e, &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            ["gateway", "listener", "route", "namespace", "rule"]
                .map(|k| v.get(k).map(|v| v.to_string().replace('"', "")))
        };
        let some = |s: &str| Some(s.to_owned());
        let a = entry();
        let mut b = entry();
        // Same text, other allocations: still its own names.
        b.route = Some(Arc::from("shop/payments"));
        b.listener = Some(Arc::from("https"));
        let mut c = a.clone();
        c.rule = Some(4);
        let mut d = a.clone();
        d.route = None;
        d.rule = None;
        let mut e = a.clone();
        e.gateway = Arc::from("infra/private");
        // Many routes, so that slots are shared and entries replaced.
        let many: Vec<Entry> = (0..40)
            .map(|i| {
                let mut m = entry();
                m.route = Some(Arc::from(format!("ns{i}/r{i}")));
                m
            })
            .collect();
        for _ in 0..3 {
            assert_eq!(
                names(&a),
                [
                    some("infra/public"),
                    some("http"),
                    some("shop/orders"),
                    some("shop"),
                    some("1")
                ]
            );
            assert_eq!(
                names(&b),
                [
                    some("infra/public"),
                    some("https"),
                    some("shop/payments"),
                    some("shop"),
                    some("1")
                ]
            );
            assert_eq!(names(&c)[4], some("4"));
            assert_eq!(
                names(&d),
                [some("infra/public"), some("http"), None, None, None]
            );
            assert_eq!(names(&e)[0], some("infra/private"));
            for (i, m) in many.iter().enumerate() {
                assert_eq!(names(m)[2], Some(format!("ns{i}/r{i}")));
                assert_eq!(names(m)[3], Some(format!("ns{i}")));
            }
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
