//! The bucket key of a request under a rule: the rule's key parts read from
//! the request and its identity, written into a hasher. Local rules hash
//! with a secret per-agent key (a client cannot aim collisions at another
//! client's bucket); cluster rules and quotas with SHA-256, so every agent
//! of the fleet names the same counter for the same client.
use std::net::IpAddr;

use http::request::Parts;

use super::spec::KeySpec;
use crate::policy::RequestCtx;

/// A value a key part can take when the request has none of it: distinct
/// from every real value (values are length-prefixed, this tag is not).
const ABSENT: &[u8] = &[0xff];

/// Feeds `sink` with the key of a request: a tag per part, then the
/// length-prefixed value (so `("ab","c")` and `("a","bc")` differ).
pub fn write_key(spec: &KeySpec, ctx: &RequestCtx, parts: &Parts, sink: &mut impl FnMut(&[u8])) {
    let mut value = |tag: u8, v: Option<&[u8]>| {
        sink(&[tag]);
        match v {
            Some(v) => {
                sink(&(v.len() as u32).to_le_bytes());
                sink(v);
            }
            None => sink(ABSENT),
        }
    };
    if let Some((v4, v6)) = spec.source {
        let masked = mask(ctx.client_ip, v4, v6);
        match masked {
            IpAddr::V4(a) => value(1, Some(&a.octets())),
            IpAddr::V6(a) => value(1, Some(&a.octets())),
        }
    }
    if let Some(h) = &spec.header {
        value(2, parts.headers.get(h).map(|v| v.as_bytes()));
    }
    if let Some(c) = &spec.claim {
        match ctx.identity.claim(c) {
            Some(serde_json::Value::String(s)) => value(3, Some(s.as_bytes())),
            Some(other) => value(3, Some(other.to_string().as_bytes())),
            None => value(3, None),
        }
    }
    if spec.api_key_client {
        value(4, ctx.identity.api_client.as_deref().map(str::as_bytes));
    }
    if spec.source_namespace {
        value(5, ctx.source_namespace.as_deref().map(str::as_bytes));
    }
    if spec.method {
        value(6, Some(parts.method.as_str().as_bytes()));
    }
    if spec.path {
        value(7, Some(parts.uri.path().as_bytes()));
    }
}

/// A readable form of the key (admin views of cluster counters and quotas),
/// at most 200 bytes.
pub fn describe_key(spec: &KeySpec, ctx: &RequestCtx, parts: &Parts) -> String {
    let mut out: Vec<String> = Vec::new();
    let or_none = |v: Option<&str>| v.unwrap_or("(none)").to_owned();
    if let Some((v4, v6)) = spec.source {
        let ip = mask(ctx.client_ip, v4, v6);
        let len = if ip.is_ipv4() { v4 } else { v6 };
        out.push(format!("source={ip}/{len}"));
    }
    if let Some(h) = &spec.header {
        out.push(format!(
            "{h}={}",
            or_none(parts.headers.get(h).and_then(|v| v.to_str().ok()))
        ));
    }
    if let Some(c) = &spec.claim {
        let v = ctx.identity.claim(c).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        out.push(format!("claim.{c}={}", or_none(v.as_deref())));
    }
    if spec.api_key_client {
        out.push(format!(
            "client={}",
            or_none(ctx.identity.api_client.as_deref())
        ));
    }
    if spec.source_namespace {
        out.push(format!(
            "namespace={}",
            or_none(ctx.source_namespace.as_deref())
        ));
    }
    if spec.method {
        out.push(format!("method={}", parts.method));
    }
    if spec.path {
        out.push(format!("path={}", parts.uri.path()));
    }
    let mut s = if out.is_empty() {
        "(all requests)".to_owned()
    } else {
        out.join(",")
    };
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// `ip` with everything past the prefix length cleared (IPv4-mapped IPv6
/// addresses count as IPv4).
pub fn mask(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if v4 == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(v4.min(32)))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if v6 == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(v6.min(128)))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{HeaderName, Request};

    use super::*;

    fn ctx(ip: &str) -> RequestCtx<'static> {
        RequestCtx::new(
            format!("{ip}:1000")
                .parse()
                .unwrap_or_else(|_| format!("[{ip}]:1000").parse().unwrap()),
            ip.parse().unwrap(),
            "h",
        )
    }

    fn key(spec: &KeySpec, ctx: &RequestCtx, parts: &Parts) -> Vec<u8> {
        let mut out = Vec::new();
        write_key(spec, ctx, parts, &mut |b| out.extend_from_slice(b));
        out
    }

    #[test]
    fn prefixes_group_sources_and_parts_do_not_run_together() {
        let spec = KeySpec {
            source: Some((24, 64)),
            ..KeySpec::default()
        };
        let p = Request::get("/").body(()).unwrap().into_parts().0;
        assert_eq!(
            key(&spec, &ctx("10.1.2.3"), &p),
            key(&spec, &ctx("10.1.2.200"), &p)
        );
        assert_ne!(
            key(&spec, &ctx("10.1.2.3"), &p),
            key(&spec, &ctx("10.1.3.3"), &p)
        );
        assert_eq!(
            key(&spec, &ctx("fd00::1"), &p),
            key(&spec, &ctx("fd00::ffff:1"), &p)
        );
        assert_eq!(
            mask("::ffff:10.1.2.3".parse().unwrap(), 24, 64),
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );

        let spec = KeySpec {
            header: Some(HeaderName::from_static("x-a")),
            path: true,
            ..KeySpec::default()
        };
        let r = |h: &str, path: &str| {
            Request::get(path)
                .header("x-a", h)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let c = ctx("10.0.0.1");
        assert_ne!(
            key(&spec, &c, &r("ab", "/c")),
            key(&spec, &c, &r("a", "/bc"))
        );
        let none = Request::get("/c").body(()).unwrap().into_parts().0;
        assert_ne!(key(&spec, &c, &none), key(&spec, &c, &r("", "/c")));
    }

    #[test]
    fn identity_parts_and_description() {
        let spec = KeySpec {
            claim: Some("sub".into()),
            api_key_client: true,
            source_namespace: true,
            method: true,
            ..KeySpec::default()
        };
        let p = Request::post("/x").body(()).unwrap().into_parts().0;
        let mut c = ctx("10.0.0.1");
        let anonymous = key(&spec, &c, &p);
        c.identity.claims = Some(Arc::new(serde_json::json!({"sub": "alice"})));
        c.identity.api_client = Some(Arc::from("ci"));
        c.source_namespace = Some(Arc::from("billing"));
        assert_ne!(key(&spec, &c, &p), anonymous);
        assert_eq!(
            describe_key(&spec, &c, &p),
            "claim.sub=alice,client=ci,namespace=billing,method=POST"
        );
        assert_eq!(describe_key(&KeySpec::default(), &c, &p), "(all requests)");
    }
}
