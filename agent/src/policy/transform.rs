//! `transform`: header changes on the request going upstream and on the
//! response going back, with templated values. Order: remove, then set
//! (replacing every value), then add — as the HTTPRoute header modifiers.
//! Response values are rendered while the request is still at hand (they
//! may refer to it) and applied when the response arrives.
use std::sync::Arc;

use http::{request::Parts, HeaderMap, HeaderName};

use super::{context::HeaderEdit, template::Template, RequestCtx, SectionMeta};

/// Header changes of one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// The edits for this request, in order.
    fn edits(&self, ctx: &RequestCtx, parts: &Parts) -> Vec<HeaderEdit> {
        let mut out = Vec::with_capacity(self.remove.len() + self.set.len() + self.add.len());
        out.extend(self.remove.iter().cloned().map(HeaderEdit::Remove));
        for (name, t) in &self.set {
            if let Some(v) = t.render(ctx, parts) {
                out.push(HeaderEdit::Set(name.clone(), v));
            }
        }
        for (name, t) in &self.add {
            if let Some(v) = t.render(ctx, parts) {
                out.push(HeaderEdit::Append(name.clone(), v));
            }
        }
        out
    }
}

/// A compiled `transform` section.
#[derive(Debug)]
pub struct Transform {
    pub request: HeaderOps,
    pub response: HeaderOps,
    pub meta: Arc<SectionMeta>,
}

impl Transform {
    /// Applies the request changes and renders the response changes.
    pub fn request(&self, ctx: &mut RequestCtx, parts: &mut Parts) {
        let edits = self.request.edits(ctx, parts);
        for e in &edits {
            e.apply(&mut parts.headers);
        }
        if !self.response.is_empty() {
            let later = self.response.edits(ctx, parts);
            ctx.response_edits.extend(later);
        }
        self.meta.allowed();
    }

    /// Applies the response changes rendered at request time.
    pub fn response(&self, ctx: &RequestCtx, headers: &mut HeaderMap) {
        for e in &ctx.response_edits {
            e.apply(headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Request};

    use super::*;
    use crate::policy::PolicyId;

    #[test]
    fn request_and_response_edits_in_order() {
        let t = Transform {
            request: HeaderOps {
                remove: vec![HeaderName::from_static("x-internal")],
                set: vec![(
                    HeaderName::from_static("x-host"),
                    Template::parse("${request.host}").unwrap(),
                )],
                add: vec![(
                    HeaderName::from_static("x-tag"),
                    Template::parse("b").unwrap(),
                )],
            },
            response: HeaderOps {
                set: vec![(
                    HeaderName::from_static("x-served-path"),
                    Template::parse("${request.path}").unwrap(),
                )],
                ..HeaderOps::default()
            },
            meta: Arc::new(SectionMeta::detached(
                PolicyId::new("SluicePolicy", "ns", "p"),
                "transform",
            )),
        };
        let mut parts = Request::get("/v1/x")
            .header("x-internal", "secret")
            .header("x-host", "forged")
            .header("x-tag", "a")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut ctx = RequestCtx::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "api.example.com",
        );
        t.request(&mut ctx, &mut parts);
        assert!(!parts.headers.contains_key("x-internal"));
        assert_eq!(parts.headers["x-host"], "api.example.com");
        let tags: Vec<_> = parts.headers.get_all("x-tag").iter().collect();
        assert_eq!(
            tags,
            [
                &HeaderValue::from_static("a"),
                &HeaderValue::from_static("b")
            ]
        );
        let mut resp = HeaderMap::new();
        t.response(&ctx, &mut resp);
        assert_eq!(resp["x-served-path"], "/v1/x");
    }
}
