//! The rate-limit response headers: what each rule said about a request,
//! rendered in the configured style. IETF (draft-ietf-httpapi-ratelimit-
//! headers, structured fields):
//!
//! ```text
//! RateLimit-Policy: "per-client";q=100;w=1, "monthly";q=100000;w=2592000
//! RateLimit: "per-client";r=57;t=1, "monthly";r=99120;t=1209600
//! ```
//!
//! Legacy: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` of the
//! rule with the fewest requests left.
use std::{fmt::Write as _, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::spec::HeaderStyle;

/// What one rule said about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The rule name (a token: checked when the policy was converted).
    pub name: Arc<str>,
    /// Requests per window (`q`).
    pub limit: u64,
    /// Window in seconds (`w`).
    pub window_s: u64,
    /// Requests left (`r`).
    pub remaining: u64,
    /// Seconds until the quota is whole again (`t`), rounded up.
    pub reset_s: u64,
}

/// The items of a request, in rule order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub style: HeaderStyle,
    pub items: Vec<Item>,
}

static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl Report {
    pub fn new(style: HeaderStyle) -> Self {
        Self {
            style,
            items: Vec::new(),
        }
    }

    /// Sets the headers (replacing any the backend sent: the gateway's
    /// limits are the ones that apply to the client).
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.items.is_empty() {
            return;
        }
        match self.style {
            HeaderStyle::Off => {}
            HeaderStyle::Ietf => {
                let mut policy = String::new();
                let mut state = String::new();
                for (i, it) in self.items.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    let _ = write!(
                        policy,
                        "{sep}\"{}\";q={};w={}",
                        it.name, it.limit, it.window_s
                    );
                    let _ = write!(
                        state,
                        "{sep}\"{}\";r={};t={}",
                        it.name, it.remaining, it.reset_s
                    );
                }
                for (name, value) in [(&POLICY, policy), (&RATELIMIT, state)] {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        headers.insert(name.clone(), v);
                    }
                }
            }
            HeaderStyle::Legacy => {
                let it = self
                    .items
                    .iter()
                    .min_by_key(|i| i.remaining)
                    .expect("non-empty");
                headers.insert(LIMIT.clone(), HeaderValue::from(it.limit));
                headers.insert(REMAINING.clone(), HeaderValue::from(it.remaining));
                headers.insert(RESET.clone(), HeaderValue::from(it.reset_s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(style: HeaderStyle) -> Report {
        Report {
            style,
            items: vec![
                Item {
                    name: Arc::from("per-client"),
                    limit: 100,
                    window_s: 1,
                    remaining: 57,
                    reset_s: 1,
                },
                Item {
                    name: Arc::from("monthly"),
                    limit: 100_000,
                    window_s: 2_592_000,
                    remaining: 12,
                    reset_s: 86_400,
                },
            ],
        }
    }

    #[test]
    fn ietf_lists_every_rule_legacy_the_tightest_off_nothing() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit", HeaderValue::from_static("from-backend"));
        report(HeaderStyle::Ietf).apply(&mut h);
        assert_eq!(
            h["ratelimit-policy"],
            "\"per-client\";q=100;w=1, \"monthly\";q=100000;w=2592000"
        );
        assert_eq!(
            h["ratelimit"],
            "\"per-client\";r=57;t=1, \"monthly\";r=12;t=86400"
        );
        let mut h = HeaderMap::new();
        report(HeaderStyle::Legacy).apply(&mut h);
        assert_eq!(h["ratelimit-limit"], "100000");
        assert_eq!(h["ratelimit-remaining"], "12");
        assert_eq!(h["ratelimit-reset"], "86400");
        let mut h = HeaderMap::new();
        report(HeaderStyle::Off).apply(&mut h);
        assert!(h.is_empty());
    }
}
