//! The ingress-nginx annotations (`nginx.ingress.kubernetes.io/*`) Sluice
//! reads on an Ingress, and what it does with every other one.
//!
//! Three outcomes, never a silent ignore:
//! - supported ([`SUPPORTED`]): read, validated, mapped onto existing route
//!   filters and SluicePolicy sections; a bad value makes the Ingress invalid;
//! - access control Sluice does not implement ([`is_access_control`]:
//!   `auth-*`, `limit-*`, `global-rate-limit*`, `satisfy`, ModSecurity):
//!   the Ingress is refused, because serving it without the check would open
//!   what its author meant to protect (security fails closed);
//! - anything else: served without it, with a warning naming the annotation
//!   (agent log, `/config` `ingressWarnings`) and counted in
//!   `sluice_ingress_ignored_annotations`.
use std::collections::BTreeMap;

use ipnet::IpNet;

/// The annotation prefix of ingress-nginx.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The annotations Sluice implements (names without the prefix).
pub const SUPPORTED: &[&str] = &[
    "ssl-redirect",
    "force-ssl-redirect",
    "rewrite-target",
    "use-regex",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "proxy-body-size",
    "backend-protocol",
];

/// What the supported annotations of one Ingress ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NginxAnnotations {
    /// `ssl-redirect`; `None`: the default (redirect hosts that have TLS).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`: redirect even hosts without TLS in this Ingress.
    pub force_ssl_redirect: bool,
    pub rewrite_target: Option<String>,
    /// `use-regex`: ImplementationSpecific paths are regular expressions.
    pub use_regex: bool,
    /// `whitelist-source-range` / `allowlist-source-range`.
    pub allow: Vec<IpNet>,
    /// `denylist-source-range`.
    pub deny: Vec<IpNet>,
    /// `proxy-body-size` in bytes; `Some(None)`: `0`, no limit.
    pub body_size: Option<Option<u64>>,
    /// `backend-protocol: GRPC`: the routes are gRPC (HTTP/2 upstream).
    pub grpc: bool,
    /// Other `nginx.ingress.kubernetes.io/*` annotations, ignored (full names).
    pub ignored: Vec<String>,
}

/// One annotation that cannot be honoured: the Ingress is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    /// Full annotation name.
    pub name: String,
    pub message: String,
}

/// Access control that Sluice does not implement as an annotation: an
/// Ingress carrying it is refused rather than served unprotected. nginx
/// snippets often hold `deny`/`allow`/`return 403`, and a canary Ingress
/// served as a whole one would take all of its host's traffic: refused too.
pub fn is_access_control(short: &str) -> bool {
    short.ends_with("-snippet")
        || short.starts_with("canary")
        || short.starts_with("auth-")
        || short.starts_with("limit-")
        || short.starts_with("global-rate-limit")
        || short == "satisfy"
        || short.contains("modsecurity")
        || short == "enable-owasp-core-rules"
}

/// Reads the ingress-nginx annotations of an Ingress.
pub fn read(annotations: &BTreeMap<String, String>) -> Result<NginxAnnotations, AnnotationError> {
    let mut out = NginxAnnotations::default();
    for (name, value) in annotations {
        let Some(short) = name.strip_prefix(NGINX_PREFIX) else {
            continue;
        };
        let err = |message: String| AnnotationError {
            name: name.clone(),
            message,
        };
        let value = value.trim();
        match short {
            "ssl-redirect" => out.ssl_redirect = Some(boolean(value).map_err(err)?),
            "force-ssl-redirect" => out.force_ssl_redirect = boolean(value).map_err(err)?,
            "use-regex" => out.use_regex = boolean(value).map_err(err)?,
            "rewrite-target" => {
                if !value.starts_with('/') {
                    return Err(err(format!(
                        "{value:?} is not an absolute path (it must start with /)"
                    )));
                }
                out.rewrite_target = Some(value.to_owned());
            }
            "whitelist-source-range" | "allowlist-source-range" => {
                out.allow.extend(cidrs(value).map_err(err)?)
            }
            "denylist-source-range" => out.deny.extend(cidrs(value).map_err(err)?),
            "proxy-body-size" => out.body_size = Some(size(value).map_err(err)?),
            "backend-protocol" => match value.to_ascii_uppercase().as_str() {
                "HTTP" => {}
                "GRPC" => out.grpc = true,
                "H2C" => return Err(err(
                    "H2C is not supported as an annotation: set appProtocol: kubernetes.io/h2c \
                         on the Service port instead"
                        .into(),
                )),
                "HTTPS" | "GRPCS" => {
                    return Err(err(format!(
                        "{value} (TLS to the backend) is not supported as an annotation: Sluice \
                         verifies backend certificates, so attach a BackendTLSPolicy (CA and \
                         hostname) to the Service and set its port's appProtocol"
                    )))
                }
                _ => {
                    return Err(err(format!(
                        "{value:?} is not supported (Sluice supports HTTP and GRPC)"
                    )))
                }
            },
            _ if is_access_control(short) => {
                return Err(err(
                    "access control that Sluice does not implement as an annotation; the Ingress \
                     is not served rather than served unprotected (use a SluicePolicy on a \
                     Gateway API route instead)"
                        .into(),
                ))
            }
            _ => out.ignored.push(name.clone()),
        }
    }
    Ok(out)
}

fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not \"true\" or \"false\"")),
    }
}

/// A comma-separated list of CIDRs (a bare address is a /32 or /128).
fn cidrs(value: &str) -> Result<Vec<IpNet>, String> {
    let list: Vec<IpNet> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR or an IP address"))
        })
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err("no CIDR given".into());
    }
    Ok(list)
}

/// An nginx size: bytes, or a number with `k`, `m` or `g` (powers of 1024);
/// `0` means no limit (`None`).
fn size(value: &str) -> Result<Option<u64>, String> {
    let lower = value.to_ascii_lowercase();
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let bad = || format!("{value:?} is not a size (e.g. 8m, 512k, 1g or a number of bytes)");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(factor).ok_or_else(bad)?;
    Ok((bytes > 0).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn supported_annotations_are_read() {
        let a = read(&annotations(&[
            ("ssl-redirect", "false"),
            ("force-ssl-redirect", "true"),
            ("rewrite-target", "/"),
            ("whitelist-source-range", "10.0.0.0/8, 192.168.1.1"),
            ("denylist-source-range", "10.1.0.0/16"),
            ("proxy-body-size", "8m"),
            ("backend-protocol", "grpc"),
        ]))
        .unwrap();
        assert_eq!(a.ssl_redirect, Some(false));
        assert!(a.force_ssl_redirect && a.grpc);
        assert_eq!(a.rewrite_target.as_deref(), Some("/"));
        assert_eq!(
            a.allow,
            [
                "10.0.0.0/8".parse().unwrap(),
                "192.168.1.1/32".parse().unwrap()
            ]
        );
        assert_eq!(a.deny, ["10.1.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(a.body_size, Some(Some(8 << 20)));
        assert!(a.ignored.is_empty());
        assert_eq!(
            read(&annotations(&[("proxy-body-size", "0")]))
                .unwrap()
                .body_size,
            Some(None)
        );
    }

    #[test]
    fn bad_values_and_access_control_are_refused_by_name() {
        for (name, value, needle) in [
            ("ssl-redirect", "yes", "not \"true\" or \"false\""),
            ("whitelist-source-range", "10.0.0.0/33", "not a CIDR"),
            ("proxy-body-size", "8x", "not a size"),
            ("backend-protocol", "HTTPS", "BackendTLSPolicy"),
            ("backend-protocol", "H2C", "kubernetes.io/h2c"),
            ("backend-protocol", "FCGI", "not supported"),
            ("rewrite-target", "x", "absolute path"),
            (
                "auth-url",
                "http://auth",
                "not served rather than served unprotected",
            ),
            (
                "limit-rps",
                "5",
                "not served rather than served unprotected",
            ),
        ] {
            let e = read(&annotations(&[(name, value)])).unwrap_err();
            assert_eq!(e.name, format!("{NGINX_PREFIX}{name}"));
            assert!(e.message.contains(needle), "{name}: {}", e.message);
        }
    }

    #[test]
    fn other_nginx_annotations_are_listed_as_ignored_and_others_left_alone() {
        let mut a = annotations(&[("proxy-read-timeout", "60"), ("enable-cors", "true")]);
        a.insert("example.com/other".into(), "x".into());
        let out = read(&a).unwrap();
        assert_eq!(
            out.ignored,
            [
                format!("{NGINX_PREFIX}enable-cors"),
                format!("{NGINX_PREFIX}proxy-read-timeout")
            ]
        );
    }
}
