//! Request path normalisation, before routing.
//!
//! A gateway that matches one spelling of a path and forwards another lets a
//! client pick the route its policy is checked against: `/public/../admin`
//! matches `PathPrefix /public` while the backend serves `/admin`, and
//! `//admin` escapes a deny rule on `/admin` for a backend that merges
//! slashes. So the path is put in one canonical form first, and that form is
//! both matched and forwarded (the backend never sees a path the gateway did
//! not route):
//!
//! 1. percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2:
//!    `%2E` is `.`, `%41` is `A`), which exposes encoded dot segments;
//! 2. runs of `/` become one (unless turned off: RFC 3986 treats `//` as an
//!    empty segment, and a few APIs use it);
//! 3. `.` and `..` segments are removed (RFC 3986 §5.2.4; `..` never climbs
//!    above the root).
//!
//! A `.` or `..` segment with `;` parameters (`/..;/admin`, which servlet
//! containers resolve as `..`) is refused. Encoded slashes (`%2F`, and `%5C`
//! or a raw `\`, a backslash that some servers take for one) are left alone by default — APIs use them inside a segment, e.g. a
//! project id `group%2Fproject` — or refused, or decoded before the steps
//! above (the choices Envoy offers). Other percent-encodings pass unchanged;
//! a `%` without two hex digits after it is refused.
use std::borrow::Cow;

use crate::policy::connection::EscapedSlashes;

/// How a Gateway's request paths are normalised (agent-wide
/// `--merge-slashes` and `--escaped-slashes`; a Gateway's `connection`
/// policy may replace them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// Whether `//` is merged into `/`.
    pub merge_slashes: bool,
    /// What happens to `%2F` and `%5C`.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// Why a path is refused (`400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request path contains an encoded slash or a backslash (%2F, %5C or \\)")]
    EscapedSlash,
    #[error("request path has a '.' or '..' segment with ';' parameters")]
    DotSegmentParameters,
    #[error("request path has a '%' not followed by two hex digits")]
    BadEscape,
    #[error("request path does not start with '/'")]
    NotAbsolute,
}

/// The canonical form of `path` under `rules`; borrowed when it already is
/// (the usual case costs one scan of the path).
pub fn normalize<'a>(path: &'a str, rules: &PathRules) -> Result<Cow<'a, str>, PathError> {
    // `*` (OPTIONS) has no segments; hyper gives other forms as "/…".
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(path.as_bytes(), rules) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, rules.escaped_slashes)?;
    let mut out = String::with_capacity(decoded.len());
    // Segments after the leading '/'; each is pushed with its own '/'.
    let mut segments = decoded[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        // `..;x` is `..` to servlet containers (path parameters): a segment
        // that one backend resolves and another does not is refused.
        if let Some((name, _)) = seg.split_once(';') {
            if name == "." || name == ".." {
                return Err(PathError::DotSegmentParameters);
            }
        }
        match seg {
            "." => {
                // `/a/.` is the directory `/a/`.
                if last {
                    out.push('/');
                }
            }
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
                if last {
                    out.push('/');
                }
            }
            "" if rules.merge_slashes && !last => {}
            _ => {
                if rules.merge_slashes && seg.is_empty() && out.ends_with('/') {
                    continue;
                }
                out.push('/');
                out.push_str(seg);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether nothing in `path` needs a change: no `%`, no dot segment (with
/// or without `;` parameters), no backslash unless kept, and (when merging)
/// no `//`.
fn is_canonical(path: &[u8], rules: &PathRules) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' => return false,
            b'\\' if rules.escaped_slashes != EscapedSlashes::Keep => return false,
            b'/' if rules.merge_slashes && prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // "/." or "/.." followed by '/', ';' or the end.
                let rest = &path[i + 1..];
                let rest = rest.strip_prefix(b".").unwrap_or(rest);
                if rest.is_empty() || rest[0] == b'/' || rest[0] == b';' {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// `path` with unreserved characters decoded and encoded slashes handled
/// per `slashes`; other escapes are kept as sent.
fn decode(path: &str, slashes: EscapedSlashes) -> Result<Cow<'_, str>, PathError> {
    let raw_backslash = slashes != EscapedSlashes::Keep && path.contains('\\');
    if !path.contains('%') && !raw_backslash {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        let Some((hi, lo)) = escaped else {
            // A '%' without two hex digits is no URI (RFC 3986 §2.1); kept, it
            // could become an escape next to a decoded character ("%5%41"
            // would read "%5A"), and backends would each read it their way.
            if b == b'%' {
                return Err(PathError::BadEscape);
            }
            // A backslash as sent is a separator to some servers: the same
            // choice as for an encoded one.
            if b == b'\\' {
                match slashes {
                    EscapedSlashes::Keep => out.push('\\'),
                    EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                    EscapedSlashes::Unescape => out.push('/'),
                }
                i += 1;
                continue;
            }
            // The input is text, so whole characters are copied.
            let len = utf8_len(b);
            out.push_str(&path[i..i + len]);
            i += len;
            continue;
        };
        let c = hi << 4 | lo;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else if matches!(c, b'/' | b'\\') {
            match slashes {
                EscapedSlashes::Keep => out.push_str(&path[i..i + 3]),
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Unescape => out.push('/'),
            }
        } else {
            out.push_str(&path[i..i + 3]);
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

/// `uri` with its path replaced by `path` (a [`normalize`] result, so
/// always a valid path); the query and any scheme or authority are kept.
pub fn with_path(uri: &http::Uri, path: &str) -> http::Uri {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    match http::uri::PathAndQuery::try_from(pq) {
        Ok(pq) => parts.path_and_query = Some(pq),
        // Unreachable for normalised paths; the request keeps its own.
        Err(_) => return uri.clone(),
    }
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Length of the UTF-8 sequence starting with `b` (1 for ASCII).
fn utf8_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> String {
        normalize(path, &PathRules::default()).unwrap().into_owned()
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/a/b", "/a.b/c..d/.e", "/a/b/", "/v1/items?x", "*"] {
            assert!(
                matches!(normalize(p, &PathRules::default()), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed_and_never_climb_above_the_root() {
        assert_eq!(norm("/public/../admin"), "/admin");
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a/.../b"), "/a/.../b");
        // RFC 3986 §5.4.1's examples, against base path /b/c/d;p.
        assert_eq!(norm("/b/c/./g"), "/b/c/g");
        assert_eq!(norm("/b/c/../g"), "/b/g");
        assert_eq!(norm("/b/c/../../g"), "/g");
        assert_eq!(norm("/b/c/../../../g"), "/g");
    }

    #[test]
    fn encoded_dots_and_unreserved_characters_are_decoded() {
        assert_eq!(norm("/public/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/public/%2E./admin"), "/admin");
        assert_eq!(norm("/%61dmin"), "/admin");
        // Reserved and non-ASCII escapes are kept as sent.
        assert_eq!(norm("/a%20b/%C3%A9/%3F"), "/a%20b/%C3%A9/%3F");
        // Malformed escapes are refused: kept, "%5%41" would decode to an
        // escape of its own (found by the `path` fuzz target).
        for bad in ["/a%zz", "/%4", "/%5%41", "/a%"] {
            assert_eq!(
                normalize(bad, &PathRules::default()),
                Err(PathError::BadEscape),
                "{bad}"
            );
        }
    }

    #[test]
    fn slashes_merge_unless_turned_off() {
        assert_eq!(norm("//admin"), "/admin");
        assert_eq!(norm("/a//b///c/"), "/a/b/c/");
        assert_eq!(norm("/a//../b"), "/b");
        let keep = PathRules {
            merge_slashes: false,
            ..PathRules::default()
        };
        assert!(matches!(normalize("//admin", &keep), Ok(Cow::Borrowed(_))));
        assert_eq!(normalize("/a//./b", &keep).unwrap(), "/a//b");
    }

    #[test]
    fn encoded_slashes_are_kept_refused_or_decoded() {
        let path = "/public/..%2Fadmin";
        assert_eq!(norm(path), "/public/..%2Fadmin");
        assert_eq!(norm("/repos/group%2fproject"), "/repos/group%2fproject");
        let reject = PathRules {
            escaped_slashes: EscapedSlashes::Reject,
            ..PathRules::default()
        };
        assert_eq!(normalize(path, &reject), Err(PathError::EscapedSlash));
        assert_eq!(normalize("/a%5Cb", &reject), Err(PathError::EscapedSlash));
        let unescape = PathRules {
            escaped_slashes: EscapedSlashes::Unescape,
            ..PathRules::default()
        };
        assert_eq!(normalize(path, &unescape).unwrap(), "/admin");
        assert_eq!(normalize("/a%5C..%5Cb", &unescape).unwrap(), "/b");
    }

    #[test]
    fn the_query_and_authority_survive_a_new_path() {
        let uri: http::Uri = "http://a.example/x/../y?q=/../z".parse().unwrap();
        let path = normalize(uri.path(), &PathRules::default()).unwrap();
        let uri = with_path(&uri, &path);
        assert_eq!(uri.to_string(), "http://a.example/y?q=/../z");
        let origin: http::Uri = "/a/./b?x".parse().unwrap();
        assert_eq!(with_path(&origin, "/a/b").to_string(), "/a/b?x");
    }

    #[test]
    fn raw_backslashes_follow_the_escaped_slash_setting() {
        // Kept by default (a backslash is no separator to RFC 3986)...
        assert!(matches!(
            normalize("/public/..\\admin", &PathRules::default()),
            Ok(Cow::Borrowed(_))
        ));
        let reject = PathRules {
            escaped_slashes: EscapedSlashes::Reject,
            ..PathRules::default()
        };
        // ...but refused or decoded like %5C when asked to.
        assert_eq!(
            normalize("/public/..\\admin", &reject),
            Err(PathError::EscapedSlash)
        );
        let unescape = PathRules {
            escaped_slashes: EscapedSlashes::Unescape,
            ..PathRules::default()
        };
        assert_eq!(normalize("/public/..\\admin", &unescape).unwrap(), "/admin");
    }

    #[test]
    fn dot_segments_with_parameters_are_refused() {
        for p in [
            "/public/..;/admin",
            "/a/.;x/b",
            "/public/%2e%2e;jsessionid=1/admin",
        ] {
            assert_eq!(
                normalize(p, &PathRules::default()),
                Err(PathError::DotSegmentParameters),
                "{p}"
            );
        }
        // Parameters on other segments are the backend's business.
        assert!(matches!(
            normalize("/a;v=1/b..;x", &PathRules::default()),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn non_ascii_text_is_copied_whole() {
        assert_eq!(norm("/caf\u{e9}/%2e/x"), "/caf\u{e9}/x");
    }

    #[test]
    fn relative_forms_are_refused() {
        assert_eq!(
            normalize("a/b", &PathRules::default()),
            Err(PathError::NotAbsolute)
        );
    }

    /// Whatever the input, the output is canonical: normalising it again
    /// changes nothing (checked over a generated set of paths).
    #[test]
    fn normalising_twice_changes_nothing() {
        let parts = [
            "", ".", "..", "%2e", "%2E%2e", "a", "%41", "%2F", "b.", "%25",
        ];
        for a in parts {
            for b in parts {
                for c in parts {
                    let p = format!("/{a}/{b}//{c}");
                    let once = norm(&p);
                    assert_eq!(norm(&once), once, "{p}");
                    assert!(once.starts_with('/'), "{p} → {once}");
                }
            }
        }
    }
}
