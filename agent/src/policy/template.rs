//! Header value templates: literal text with `${...}` variables resolved
//! per request from the request and the authenticated identity.
//!
//! Variables: `claim.NAME` (nested with dots), `apiKey.client`,
//! `basicAuth.user`, `source.address`, `source.namespace`, `request.method`,
//! `request.path`, `request.host`, `request.header.NAME`. `$$` is a literal
//! `$`. A value whose variables are not all set is not rendered (the header
//! is left alone), so a missing claim never becomes an empty identity.
use std::fmt::Write as _;

use http::{request::Parts, HeaderName, HeaderValue};

use super::RequestCtx;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Variable),
}

/// A value a template can refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// A JWT claim (dotted path into nested objects).
    Claim(String),
    ApiKeyClient,
    BasicAuthUser,
    SourceAddress,
    SourceNamespace,
    Method,
    Path,
    Host,
    /// A request header.
    Header(HeaderName),
}

impl Template {
    /// Parses `raw`; the error says what is wrong and where.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = raw;
        while let Some(i) = rest.find('$') {
            literal.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("$$") {
                literal.push('$');
                rest = after;
                continue;
            }
            let Some(body) = rest.strip_prefix("${") else {
                return Err(format!(
                    "unescaped '$' at offset {} (write $$ for a literal $, ${{...}} for a variable)",
                    raw.len() - rest.len()
                ));
            };
            let Some(end) = body.find('}') else {
                return Err("unterminated ${".into());
            };
            let var = variable(body[..end].trim())?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
            rest = &body[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        // A header value cannot carry control characters; literals are checked now.
        for p in &parts {
            if let Part::Literal(l) = p {
                if HeaderValue::from_str(l).is_err() {
                    return Err(format!("{l:?} is not a valid header value"));
                }
            }
        }
        Ok(Template(parts))
    }

    /// Whether the template has no variables.
    pub fn is_literal(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The value for this request, or `None` when a variable is not set
    /// (or the result is not a valid header value).
    pub fn render(&self, ctx: &RequestCtx, parts: &Parts) -> Option<HeaderValue> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => resolve(v, ctx, parts, &mut out)?,
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

fn variable(name: &str) -> Result<Variable, String> {
    Ok(match name {
        "apiKey.client" => Variable::ApiKeyClient,
        "basicAuth.user" => Variable::BasicAuthUser,
        "source.address" => Variable::SourceAddress,
        "source.namespace" => Variable::SourceNamespace,
        "request.method" => Variable::Method,
        "request.path" => Variable::Path,
        "request.host" => Variable::Host,
        _ => {
            if let Some(c) = name.strip_prefix("claim.") {
                if c.is_empty() {
                    return Err("empty claim name in ${claim.}".into());
                }
                Variable::Claim(c.to_owned())
            } else if let Some(h) = name.strip_prefix("request.header.") {
                Variable::Header(
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("invalid header name {h:?} in ${{{name}}}"))?,
                )
            } else {
                return Err(format!(
                    "unknown variable ${{{name}}} (known: claim.NAME, apiKey.client, basicAuth.user, \
                     source.address, source.namespace, request.method, request.path, request.host, \
                     request.header.NAME)"
                ));
            }
        }
    })
}

fn resolve(v: &Variable, ctx: &RequestCtx, parts: &Parts, out: &mut String) -> Option<()> {
    match v {
        Variable::Claim(c) => match ctx.identity.claim(c)? {
            serde_json::Value::String(s) => out.push_str(s),
            serde_json::Value::Null => return None,
            // Arrays of strings join with commas, as header lists do.
            serde_json::Value::Array(a) => {
                let items: Vec<String> = a
                    .iter()
                    .map(|x| match x {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.push_str(&items.join(","));
            }
            other => {
                let _ = write!(out, "{other}");
            }
        },
        Variable::ApiKeyClient => out.push_str(ctx.identity.api_client.as_deref()?),
        Variable::BasicAuthUser => out.push_str(ctx.identity.user.as_deref()?),
        Variable::SourceAddress => {
            let _ = write!(out, "{}", ctx.client_ip);
        }
        Variable::SourceNamespace => out.push_str(ctx.source_namespace.as_deref()?),
        Variable::Method => out.push_str(parts.method.as_str()),
        Variable::Path => out.push_str(parts.uri.path()),
        Variable::Host => out.push_str(ctx.host),
        Variable::Header(h) => out.push_str(parts.headers.get(h)?.to_str().ok()?),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::Request;

    use super::*;

    fn ctx(host: &str) -> RequestCtx<'_> {
        let mut c = RequestCtx::new(
            "10.0.0.9:1234".parse().unwrap(),
            "10.0.0.9".parse().unwrap(),
            host,
        );
        c.identity.claims = Some(Arc::new(serde_json::json!({
            "sub": "alice", "org": {"id": 42}, "groups": ["a", "b"]
        })));
        c.source_namespace = Some(Arc::from("billing"));
        c
    }

    #[test]
    fn renders_variables_and_literals() {
        let parts = Request::get("/orders?x=1")
            .header("x-tenant", "t1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let c = ctx("api.example.com");
        let t = Template::parse(
            "u=${claim.sub};org=${claim.org.id};g=${claim.groups};ns=${source.namespace};\
             ${request.method} ${request.path} ${request.host} ${request.header.x-tenant} $$ ${source.address}",
        )
        .unwrap();
        assert_eq!(
            t.render(&c, &parts).unwrap(),
            "u=alice;org=42;g=a,b;ns=billing;GET /orders api.example.com t1 $ 10.0.0.9"
        );
        assert!(Template::parse("plain").unwrap().is_literal());
        // A variable that is not set: nothing is rendered.
        let t = Template::parse("${apiKey.client}").unwrap();
        assert!(t.render(&c, &parts).is_none());
        let t = Template::parse("${claim.missing}").unwrap();
        assert!(t.render(&c, &parts).is_none());
    }

    #[test]
    fn parse_errors_are_specific() {
        assert!(Template::parse("${nope}")
            .unwrap_err()
            .contains("unknown variable ${nope}"));
        assert!(Template::parse("a $b")
            .unwrap_err()
            .contains("unescaped '$'"));
        assert!(Template::parse("${claim.sub")
            .unwrap_err()
            .contains("unterminated"));
        assert!(Template::parse("${request.header.bad header}")
            .unwrap_err()
            .contains("invalid header name"));
        assert!(Template::parse("a\nb")
            .unwrap_err()
            .contains("not a valid header value"));
    }
}
