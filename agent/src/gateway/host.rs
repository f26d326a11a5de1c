//! Strict request authority: exactly one `Host` (RFC 9112 §3.2), valid
//! syntax (RFC 3986 §3.2.2, no userinfo), and on HTTP/2 a `Host` that agrees
//! with `:authority` (RFC 9113 §8.3.1). Two front proxies that resolve an
//! ambiguous authority differently route one request to two places: the
//! gateway refuses to guess.

/// Why a request's authority was refused (each is a `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("missing Host header")]
    Missing,
    #[error("more than one Host header")]
    Duplicate,
    #[error("invalid Host header")]
    Invalid,
    #[error("invalid request authority")]
    InvalidAuthority,
    #[error("Host header does not match :authority")]
    Mismatch,
}

/// Whether `authority` is `host [":" port]` with a registered name, an IPv4
/// address or a bracketed IP literal as host — one pass, no allocation.
pub fn valid_authority(authority: &[u8]) -> bool {
    let (host, port) = match authority.first() {
        Some(b'[') => {
            let Some(end) = authority.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &authority[1..end];
            // IPvFuture and zone identifiers are not routable names.
            let ok = !literal.is_empty()
                && literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
            return ok
                && match &authority[end + 1..] {
                    [] => true,
                    [b':', port @ ..] => valid_port(port),
                    _ => false,
                };
        }
        _ => match authority.iter().rposition(|&b| b == b':') {
            Some(i) => (&authority[..i], &authority[i + 1..]),
            None => (authority, &[][..]),
        },
    };
    // No `%`: RFC 3986 allows pct-encoded octets in a reg-name, but no
    // route hostname has one, and the `http` crate refuses them in a URI's
    // authority (a redirect Location or an upstream :authority built from
    // the host would be invalid).
    let host_ok = host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    });
    !host.is_empty() && host_ok && valid_port(port)
}

/// Digits, possibly none (RFC 3986 allows an empty port).
fn valid_port(port: &[u8]) -> bool {
    port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_syntax() {
        for ok in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "a_b.example",
            "xn--bcher-kva.example",
        ] {
            assert!(valid_authority(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "exa mple.com",
            "example.com/x",
            "user@example.com",
            "example.com:80:80",
            "example.com:http",
            "example.com:123456",
            "[::1",
            "[]",
            "[::1]x",
            "[fe80::1%eth0]",
            "a\tb",
            "a\\b",
            "a?b",
            "a#b",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad}");
        }
    }

    /// Found by the `request_head` fuzz target: `Host: exampl%.com` (and
    /// then `Host: a%99b`) was accepted, and a redirect answered with a
    /// `Location` that is not a URI the `http` crate reads.
    #[test]
    fn no_percent_in_a_host() {
        for bad in ["exampl%.com", "a%41.example", "%7e", "x%2D:80", "a%", "%"] {
            assert!(!valid_authority(bad.as_bytes()), "{bad}");
            let uri = format!("http://{bad}/");
            assert!(uri.parse::<http::Uri>().is_err(), "{uri}");
        }
    }
}
