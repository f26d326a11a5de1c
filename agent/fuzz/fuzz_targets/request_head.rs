//! What the gateway does with a request head before and around routing:
//! the strict authority checks (one Host, valid syntax, Host agreeing with
//! `:authority` on HTTP/2), the routing host made of it (lower-case, no
//! port), and what filters build from it (a redirect's `Location`, a
//! rewritten prefix). Properties: the checks accept only what their
//! grammar allows, the routing host is a clean name, and a redirect built
//! from an accepted request is a valid header that points at that host.
#![no_main]

use http::{header::HOST, Uri, Version};
use libfuzzer_sys::fuzz_target;
use sluice::{
    config::{PathMatch, PathModifier, Redirect},
    gateway::{
        filters::{location_header, modify_path, redirect_location, RedirectContext},
        host::{valid_authority, HostError},
        request_host,
    },
};
use sluice_fuzz::Head;

fuzz_target!(|data: &[u8]| {
    // The grammar check alone, on any bytes: what it accepts is visible
    // ASCII, so the gateway's `to_str` of an accepted authority never falls back.
    for line in data.split(|b| *b == b'\n') {
        if valid_authority(line) {
            assert!(line.iter().all(|b| (0x21..0x7f).contains(b)), "{line:?}");
            assert!(!line.contains(&b'@') && !line.contains(&b'/'), "{line:?}");
        }
    }
    let Some(head) = Head::parse(data) else {
        return;
    };
    let req = &head.request;
    let hosts: Vec<&[u8]> = req
        .headers()
        .get_all(HOST)
        .iter()
        .map(|h| h.as_bytes())
        .collect();
    let host = match request_host(req) {
        Ok(host) => host,
        Err(HostError::Duplicate) => {
            assert!(hosts.len() > 1);
            return;
        }
        Err(HostError::Missing) => {
            assert!(hosts.is_empty());
            return;
        }
        Err(_) => return,
    };
    assert!(hosts.len() <= 1);
    // A clean name: not empty, lower-case, no port, userinfo, path or brackets.
    assert!(!host.is_empty(), "{req:?}");
    assert!(!host.bytes().any(|b| b.is_ascii_uppercase()), "{host}");
    assert!(
        !host.contains(['@', '/', '[', ']', ' ', '?', '#', '\\']),
        "{host}"
    );
    if host.contains(':') {
        // Only an IPv6 literal keeps colons.
        assert!(
            host.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
            "{host}"
        );
    }
    // On HTTP/2 a Host next to :authority names the same authority.
    if let (Version::HTTP_2, Some(a), Some(h)) =
        (req.version(), req.uri().authority(), hosts.first())
    {
        assert!(a.as_str().as_bytes().eq_ignore_ascii_case(h));
    }

    // A prefix rewrite of a path the prefix matches keeps the request's path
    // shape: it starts with the replacement and stays a valid target.
    let path = req.uri().path();
    // `:prefix` and `:replace` parameter lines (as validation admits them:
    // paths, the prefix stored without a trailing slash).
    let (Some(raw_prefix), Some(replacement)) = (head.param("prefix"), head.param("replace"))
    else {
        return;
    };
    let valid = |p: &str| p.starts_with('/') && p.parse::<Uri>().is_ok_and(|u| u.path() == p);
    if !valid(raw_prefix) || !valid(replacement) {
        return;
    }
    let stored = raw_prefix.trim_end_matches('/');
    let prefix = PathMatch::Prefix(if stored.is_empty() { "/" } else { stored }.to_owned());
    if prefix.matches(path) {
        let replace = PathModifier::ReplacePrefixMatch(replacement.to_owned());
        let out = modify_path(&replace, &prefix, path);
        assert!(out.starts_with('/'), "{out}");
        assert!(out.parse::<Uri>().is_ok(), "{out}");
        // The redirect built from the request: a valid Location to this host.
        let redirect = Redirect {
            scheme: head
                .param("scheme")
                .filter(|s| matches!(*s, "http" | "https"))
                .map(str::to_owned),
            hostname: None,
            path: Some(replace),
            port: head.param("port").and_then(|p| p.parse().ok()),
            status: 302,
        };
        let location = redirect_location(
            &redirect,
            RedirectContext {
                scheme: "http",
                listener_port: 8080,
                host: &host,
                path,
                query: req.uri().query(),
                matched: &prefix,
            },
        );
        assert!(location_header(&location).is_some(), "{location}");
        let uri: Uri = location
            .parse()
            .unwrap_or_else(|e| panic!("{location}: {e}"));
        let got = uri.host().expect("an absolute Location has a host");
        assert_eq!(
            got.trim_start_matches('[').trim_end_matches(']'),
            host,
            "{location}"
        );
    }
});
