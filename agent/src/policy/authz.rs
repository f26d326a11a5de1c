//! `authorization`: ordered allow/deny rules over the request and the
//! authenticated identity; the first rule whose every given condition holds
//! decides, `defaultAction` when none does. Conditions: methods, paths,
//! headers, JWT claims (array claims and space-separated `scope` by
//! containment), API-key clients, Basic users, the client's CIDR (after
//! trusted proxies), and the caller's namespace from the pod identity.
use std::sync::Arc;

use http::{request::Parts, HeaderName, Method};
use ipnet::IpNet;

use super::{Reason, Rejection, RequestCtx, SectionMeta};
use crate::matchers::{PathMatch, StringMatch};

/// One rule. Empty lists are conditions that are not given.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: Option<String>,
    pub allow: bool,
    pub methods: Vec<Method>,
    pub paths: Vec<PathMatch>,
    pub headers: Vec<(HeaderName, StringMatch)>,
    /// (claim path, accepted values): every listed claim must match.
    pub claims: Vec<(String, Vec<String>)>,
    pub api_key_clients: Vec<String>,
    pub users: Vec<String>,
    pub source_cidrs: Vec<IpNet>,
    pub source_namespaces: Vec<String>,
}

impl Rule {
    fn matches(&self, ctx: &RequestCtx, parts: &Parts) -> bool {
        let id = &ctx.identity;
        (self.methods.is_empty() || self.methods.contains(&parts.method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(parts.uri.path())))
            && self.headers.iter().all(|(name, m)| {
                parts
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| m.matches(v)))
            })
            && self.claims.iter().all(|(claim, values)| {
                id.claim(claim)
                    .is_some_and(|c| claim_matches(claim, c, values))
            })
            && (self.api_key_clients.is_empty()
                || id
                    .api_client
                    .as_deref()
                    .is_some_and(|c| self.api_key_clients.iter().any(|x| x == c)))
            && (self.users.is_empty()
                || id
                    .user
                    .as_deref()
                    .is_some_and(|u| self.users.iter().any(|x| x == u)))
            && (self.source_cidrs.is_empty() || {
                let ip = ctx.client_ip.to_canonical();
                self.source_cidrs.iter().any(|n| n.contains(&ip))
            })
            && (self.source_namespaces.is_empty()
                || ctx
                    .source_namespace
                    .as_deref()
                    .is_some_and(|ns| self.source_namespaces.iter().any(|x| x == ns)))
    }
}

/// Whether a claim value is one of `values`: a string equals one (or, for
/// `scope` and `scp`, contains one among its space-separated scopes); an
/// array contains one; numbers and booleans compare by their JSON text.
fn claim_matches(name: &str, claim: &serde_json::Value, values: &[String]) -> bool {
    use serde_json::Value;
    let scalar = |v: &Value| match v {
        Value::String(s) => values.iter().any(|x| x == s),
        Value::Number(_) | Value::Bool(_) => {
            let text = v.to_string();
            values.contains(&text)
        }
        _ => false,
    };
    match claim {
        Value::Array(items) => items.iter().any(scalar),
        Value::String(s) if name == "scope" || name == "scp" || name.ends_with(".scope") => s
            .split_ascii_whitespace()
            .any(|sc| values.iter().any(|x| x == sc)),
        other => scalar(other),
    }
}

/// A compiled `authorization` section.
#[derive(Debug)]
pub struct Authorization {
    pub default_allow: bool,
    pub rules: Vec<Rule>,
    pub meta: Arc<SectionMeta>,
}

impl Authorization {
    pub fn check(&self, ctx: &RequestCtx, parts: &Parts) -> Result<(), Rejection> {
        let decided = self.rules.iter().find(|r| r.matches(ctx, parts));
        let allow = decided.map_or(self.default_allow, |r| r.allow);
        if allow {
            self.meta.allowed();
            return Ok(());
        }
        self.meta.denied(Reason::Forbidden);
        let why = match decided.and_then(|r| r.name.as_deref()) {
            Some(name) => format!("forbidden by rule {name:?}"),
            None if decided.is_some() => "forbidden by an authorization rule".to_owned(),
            None => "forbidden: no authorization rule allows this request".to_owned(),
        };
        Err(Rejection::new(Reason::Forbidden, why).by(&self.meta))
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;
    use crate::{matchers::Pattern, policy::PolicyId};

    fn rule(allow: bool) -> Rule {
        Rule {
            name: None,
            allow,
            methods: vec![],
            paths: vec![],
            headers: vec![],
            claims: vec![],
            api_key_clients: vec![],
            users: vec![],
            source_cidrs: vec![],
            source_namespaces: vec![],
        }
    }

    fn authz(default_allow: bool, rules: Vec<Rule>) -> Authorization {
        Authorization {
            default_allow,
            rules,
            meta: Arc::new(SectionMeta::detached(
                PolicyId::new("SluicePolicy", "ns", "p"),
                "authorization",
            )),
        }
    }

    fn ctx(claims: serde_json::Value) -> RequestCtx<'static> {
        let mut c = RequestCtx::new(
            "10.1.2.3:5555".parse().unwrap(),
            "10.1.2.3".parse().unwrap(),
            "h",
        );
        c.identity.claims = Some(Arc::new(claims));
        c
    }

    fn req(method: &str, path: &str) -> Parts {
        Request::builder()
            .method(method)
            .uri(path)
            .header("x-env", "prod-eu")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn first_match_wins_then_default() {
        let a = authz(
            false,
            vec![
                Rule {
                    name: Some("admins".into()),
                    claims: vec![("groups".into(), vec!["admin".into()])],
                    ..rule(true)
                },
                Rule {
                    name: Some("no-deletes".into()),
                    methods: vec![Method::DELETE],
                    ..rule(false)
                },
                Rule {
                    paths: vec![PathMatch::Prefix("/orders".into())],
                    ..rule(true)
                },
            ],
        );
        let admin = ctx(serde_json::json!({"groups": ["dev", "admin"]}));
        let user = ctx(serde_json::json!({"groups": ["dev"]}));
        assert!(a.check(&admin, &req("DELETE", "/orders/1")).is_ok());
        let r = a.check(&user, &req("DELETE", "/orders/1")).unwrap_err();
        assert_eq!(r.status, http::StatusCode::FORBIDDEN);
        assert!(r.message.contains("no-deletes"));
        assert!(a.check(&user, &req("GET", "/orders/1")).is_ok());
        assert!(
            a.check(&user, &req("GET", "/ordersx")).is_err(),
            "segment prefix"
        );
        assert!(
            a.check(&user, &req("GET", "/other")).is_err(),
            "default deny"
        );
    }

    #[test]
    fn scope_headers_cidrs_namespaces_and_clients() {
        let scoped = Rule {
            claims: vec![("scope".into(), vec!["orders:write".into()])],
            ..rule(true)
        };
        let a = authz(false, vec![scoped]);
        assert!(a
            .check(
                &ctx(serde_json::json!({"scope": "openid orders:write"})),
                &req("GET", "/")
            )
            .is_ok());
        assert!(a
            .check(
                &ctx(serde_json::json!({"scope": "orders:write:all"})),
                &req("GET", "/")
            )
            .is_err());

        let r = Rule {
            headers: vec![(
                HeaderName::from_static("x-env"),
                StringMatch::Regex(Pattern::new("prod-.*").unwrap()),
            )],
            source_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            ..rule(true)
        };
        let a = authz(false, vec![r]);
        let mut c = ctx(serde_json::json!({}));
        assert!(a.check(&c, &req("GET", "/")).is_ok());
        c.client_ip = "192.168.0.1".parse().unwrap();
        assert!(a.check(&c, &req("GET", "/")).is_err());

        let r = Rule {
            source_namespaces: vec!["billing".into()],
            api_key_clients: vec!["ci".into()],
            ..rule(true)
        };
        let a = authz(false, vec![r]);
        let mut c = ctx(serde_json::json!({}));
        c.source_namespace = Some(Arc::from("billing"));
        assert!(a.check(&c, &req("GET", "/")).is_err(), "client id missing");
        c.identity.api_client = Some(Arc::from("ci"));
        assert!(a.check(&c, &req("GET", "/")).is_ok());
        c.source_namespace = Some(Arc::from("shop"));
        assert!(a.check(&c, &req("GET", "/")).is_err());
        c.source_namespace = None;
        assert!(
            a.check(&c, &req("GET", "/")).is_err(),
            "unknown namespace never matches"
        );
    }

    #[test]
    fn numeric_and_boolean_claims_compare_as_text() {
        let a = authz(
            false,
            vec![Rule {
                claims: vec![
                    ("tier".into(), vec!["2".into()]),
                    ("email_verified".into(), vec!["true".into()]),
                ],
                ..rule(true)
            }],
        );
        assert!(a
            .check(
                &ctx(serde_json::json!({"tier": 2, "email_verified": true})),
                &req("GET", "/")
            )
            .is_ok());
        assert!(a
            .check(
                &ctx(serde_json::json!({"tier": 2, "email_verified": false})),
                &req("GET", "/")
            )
            .is_err());
    }
}
