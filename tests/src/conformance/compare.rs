//! Expected-vs-actual comparison of one round trip, as upstream
//! `CompareRoundTrip` does it (see the cases README, "Comparison").
use std::collections::BTreeMap;

use serde::Deserialize;

use super::cases::Case;

/// A response as the client saw it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub status: u16,
    /// Header (lower-case name) → values in order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl Observed {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.join(","))
    }
}

/// The echo body, leniently (a non-echo JSON body gives empty fields).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EchoBody {
    pub path: String,
    pub host: String,
    pub method: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub namespace: String,
    pub pod: String,
    /// Set by a backend serving TLS.
    pub tls: Option<crate::echo::EchoTls>,
}

impl EchoBody {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.join(","))
    }
}

/// `sni`: the backend saw this TLS server name; `client_cert_secret`: the
/// backend got that certificate among the client's (PEM compared as text).
fn backend_tls_matches(
    e: &super::cases::ExpectedRequest,
    tls: Option<&crate::echo::EchoTls>,
) -> Result<(), String> {
    if e.sni.is_none() && e.client_cert_secret.is_none() {
        return Ok(());
    }
    let tls = tls.ok_or("the backend was not reached over TLS")?;
    if let Some(sni) = &e.sni {
        if tls.server_name != *sni {
            return Err(format!(
                "backend TLS server name {:?}, expected {sni:?}",
                tls.server_name
            ));
        }
    }
    if e.client_cert_secret.is_some() {
        let want = e
            .client_cert_pem
            .as_deref()
            .ok_or("client_cert_secret not resolved by the runner")?;
        if !tls
            .peer_certificates
            .iter()
            .any(|c| c.trim() == want.trim())
        {
            return Err(format!(
                "the backend did not get the expected client certificate ({} presented)",
                tls.peer_certificates.len()
            ));
        }
    }
    Ok(())
}

const REDIRECTS: [u16; 8] = [300, 301, 302, 303, 304, 305, 307, 308];

fn strip_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Compares one response with a case. `extra_headers` are headers the runner
/// added to the request (they must arrive too when `expected_request` is
/// omitted). Returns the echo body (for backend statistics) or why it failed.
pub fn compare(
    case: &Case,
    extra_headers: &BTreeMap<String, String>,
    got: &Observed,
) -> Result<EchoBody, String> {
    let accepted = case.response.accepted();
    let timeout = |s: u16| s == 408 || s == 504;
    if timeout(got.status) && accepted.iter().any(|s| timeout(*s)) {
        return Ok(EchoBody::default());
    }
    if !accepted.contains(&got.status) {
        return Err(format!("status {} (expected {:?})", got.status, accepted));
    }
    let req = &case.request;
    if got.status == 200 || got.status == 204 {
        let mut echo = EchoBody {
            method: req.method().to_owned(),
            ..EchoBody::default()
        };
        if got.header("content-type").as_deref() == Some("application/json") {
            echo = serde_json::from_slice(&got.body)
                .map_err(|e| format!("echo body is not valid JSON: {e}"))?;
        }
        let (exp_method, exp_host, exp_path, exp_headers, exp_absent) = match &case.expected_request
        {
            Some(e) => (
                e.method.clone().unwrap_or_else(|| "GET".into()),
                e.host.clone(),
                e.path.clone().unwrap_or_else(|| req.path.clone()),
                e.headers.clone(),
                e.absent_headers.clone(),
            ),
            None => {
                let mut h = req.headers.clone();
                h.extend(extra_headers.clone());
                (
                    req.method().to_owned(),
                    req.host.clone(),
                    req.path.clone(),
                    h,
                    Vec::new(),
                )
            }
        };
        if let Some(h) = exp_host {
            if h != echo.host {
                return Err(format!("backend saw host {:?}, expected {h:?}", echo.host));
            }
        }
        if exp_path != echo.path {
            return Err(format!(
                "backend saw path {:?}, expected {exp_path:?}",
                echo.path
            ));
        }
        if exp_method != echo.method {
            return Err(format!(
                "backend saw method {:?}, expected {exp_method:?}",
                echo.method
            ));
        }
        if case.namespace != echo.namespace {
            return Err(format!(
                "answered from namespace {:?}, expected {:?}",
                echo.namespace, case.namespace
            ));
        }
        for (name, want) in &exp_headers {
            match echo.header(name) {
                None => return Err(format!("backend did not get request header {name}")),
                Some(v) if &v != want => {
                    return Err(format!(
                        "backend got request header {name}: {v:?}, expected {want:?}"
                    ))
                }
                Some(_) => {}
            }
        }
        let norm = |v: &str| {
            if case.response.ignore_whitespace {
                strip_ws(v)
            } else {
                v.to_owned()
            }
        };
        for (name, alts) in &case.response.header_alternatives {
            let Some(v) = got.header(name) else {
                return Err(format!("response header {name} missing"));
            };
            if !alts.iter().any(|a| norm(a) == norm(&v)) {
                return Err(format!(
                    "response header {name}: {v:?}, expected one of {alts:?}"
                ));
            }
        }
        for (name, want) in &case.response.headers {
            match got.header(name) {
                None => return Err(format!("response header {name} missing")),
                Some(v) if norm(&v) != norm(want) => {
                    return Err(format!("response header {name}: {v:?}, expected {want:?}"))
                }
                Some(_) => {}
            }
        }
        for name in &case.response.absent_headers {
            if got.header(name).is_some() {
                return Err(format!("response header {name} should be absent"));
            }
        }
        for name in &exp_absent {
            if echo.header(name).is_some() {
                return Err(format!(
                    "request header {name} should not reach the backend"
                ));
            }
        }
        if let Some(b) = &case.backend {
            if !echo.pod.starts_with(b.as_str()) {
                return Err(format!(
                    "answered by pod {:?}, expected backend {b}",
                    echo.pod
                ));
            }
        }
        if let Some(e) = &case.expected_request {
            backend_tls_matches(e, echo.tls.as_ref())?;
        }
        return Ok(echo);
    }
    if REDIRECTS.contains(&got.status) {
        if let Some(r) = &case.redirect {
            let loc = got.header("location").ok_or("redirect without Location")?;
            let uri: http::Uri = loc
                .parse()
                .map_err(|e| format!("Location {loc:?} does not parse: {e}"))?;
            let scheme = uri.scheme_str().unwrap_or("");
            let host = uri.host().unwrap_or("");
            let port = uri
                .port()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            if let Some(h) = &r.host {
                if h != host {
                    return Err(format!("redirect host {host:?}, expected {h:?}"));
                }
            }
            let want_scheme = r.scheme.clone().unwrap_or_else(|| req.scheme().to_owned());
            if scheme != want_scheme {
                return Err(format!(
                    "redirect scheme {scheme:?}, expected {want_scheme:?}"
                ));
            }
            let want_path = r
                .path
                .clone()
                .unwrap_or_else(|| req.path.split('?').next().unwrap_or("").to_owned());
            if uri.path() != want_path {
                return Err(format!(
                    "redirect path {:?}, expected {want_path:?}",
                    uri.path()
                ));
            }
            match &r.port {
                Some(p) if *p != port => {
                    return Err(format!("redirect port {port:?}, expected {p:?}"));
                }
                Some(_) => {}
                None => {
                    let ok = match scheme {
                        "http" => port.is_empty() || port == "80",
                        "https" => port.is_empty() || port == "443",
                        _ => true,
                    };
                    if !ok {
                        return Err(format!("redirect port {port:?} for scheme {scheme}"));
                    }
                }
            }
        }
    }
    Ok(EchoBody::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(yaml: &str) -> Case {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn echo(status: u16, body: serde_json::Value) -> Observed {
        Observed {
            status,
            headers: BTreeMap::from([("content-type".into(), vec!["application/json".into()])]),
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    #[test]
    fn echo_comparison_checks_path_namespace_backend_and_headers() {
        let c = case(
            "{request: {path: /one, headers: {x-a: b}}, backend: infra-backend-v1, namespace: infra}",
        );
        let good = echo(
            200,
            serde_json::json!({"path": "/one", "method": "GET", "namespace": "infra",
                "pod": "infra-backend-v1-abc-def", "headers": {"X-A": ["b"]}}),
        );
        assert!(compare(&c, &BTreeMap::new(), &good).is_ok());
        let wrong_pod = echo(
            200,
            serde_json::json!({"path": "/one", "method": "GET", "namespace": "infra",
                "pod": "infra-backend-v2-abc-def", "headers": {"X-A": ["b"]}}),
        );
        assert!(compare(&c, &BTreeMap::new(), &wrong_pod)
            .unwrap_err()
            .contains("pod"));
        let missing = BTreeMap::from([("X-Echo-Set-Header".to_owned(), String::new())]);
        assert!(compare(&c, &missing, &good)
            .unwrap_err()
            .contains("X-Echo-Set-Header"));
        let not_found = Observed {
            status: 404,
            ..Observed::default()
        };
        assert!(compare(&c, &BTreeMap::new(), &not_found)
            .unwrap_err()
            .contains("404"));
    }

    #[test]
    fn non_200_statuses_and_redirects() {
        let c = case("{request: {path: /x}, response: {status: 404}, backend: ignored}");
        assert!(compare(
            &c,
            &BTreeMap::new(),
            &Observed {
                status: 404,
                ..Default::default()
            }
        )
        .is_ok());
        let r = case(
            "{request: {path: /r?q=1, unfollow_redirect: true}, response: {status: 302}, redirect: {host: example.org}}",
        );
        let mut got = Observed {
            status: 302,
            ..Default::default()
        };
        got.headers
            .insert("location".into(), vec!["http://example.org/r".into()]);
        assert!(compare(&r, &BTreeMap::new(), &got).is_ok());
        got.headers
            .insert("location".into(), vec!["http://example.org:8080/r".into()]);
        assert!(compare(&r, &BTreeMap::new(), &got)
            .unwrap_err()
            .contains("port"));
        // Timeouts: 504 counts as 408 when either is accepted.
        let t = case("{request: {path: /t}, response: {status: 408}}");
        assert!(compare(
            &t,
            &BTreeMap::new(),
            &Observed {
                status: 504,
                ..Default::default()
            }
        )
        .is_ok());
    }
}
