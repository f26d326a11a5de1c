//! `ipAllow` / `ipDeny` at L7: the client address (after trusted proxies)
//! against allow and deny CIDRs; the longest matching prefix decides, a deny
//! wins a tie, and with an allow list anything it does not cover is denied.
//! Whole-Gateway lists are also programmed into XDP by the control plane.
use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::{Reason, Rejection, SectionMeta};

/// Compiled allow/deny lists.
#[derive(Debug)]
pub struct IpFilter {
    /// (network, allow) sorted by prefix length, longest first.
    rules: Vec<(IpNet, bool)>,
    /// Whether anything not covered is denied (an allow list exists).
    default_deny: bool,
    pub meta: Arc<SectionMeta>,
}

impl IpFilter {
    pub fn new(allow: &[IpNet], deny: &[IpNet], meta: Arc<SectionMeta>) -> Self {
        let mut rules: Vec<(IpNet, bool)> = allow
            .iter()
            .map(|n| (n.trunc(), true))
            .chain(deny.iter().map(|n| (n.trunc(), false)))
            .collect();
        // Longest prefix first; at equal length deny (false) before allow.
        rules.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.1.cmp(&b.1)));
        Self {
            rules,
            default_deny: !allow.is_empty(),
            meta,
        }
    }

    /// Whether `ip` may pass.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self.rules.iter().find(|(n, _)| n.contains(&ip)) {
            Some((_, allow)) => *allow,
            None => !self.default_deny,
        }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Rejection> {
        if self.allows(ip) {
            self.meta.allowed();
            Ok(())
        } else {
            self.meta.denied(Reason::SourceDenied);
            Err(Rejection::new(Reason::SourceDenied, "source address not allowed").by(&self.meta))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyId;

    fn filter(allow: &[&str], deny: &[&str]) -> IpFilter {
        let p = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpNet>>();
        IpFilter::new(
            &p(allow),
            &p(deny),
            Arc::new(SectionMeta::detached(
                PolicyId::new("SluicePolicy", "ns", "p"),
                "ipAllow",
            )),
        )
    }

    #[test]
    fn longest_prefix_decides_and_deny_wins_ties() {
        let f = filter(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(f.allows("10.2.3.4".parse().unwrap()));
        assert!(!f.allows("10.1.3.4".parse().unwrap()));
        assert!(
            !f.allows("192.168.1.1".parse().unwrap()),
            "allow list denies the rest"
        );
        let f = filter(&["10.1.2.3/32"], &["10.0.0.0/8"]);
        assert!(
            f.allows("10.1.2.3".parse().unwrap()),
            "a longer allow beats a deny"
        );
        let f = filter(&["10.0.0.0/8"], &["10.0.0.0/8"]);
        assert!(!f.allows("10.0.0.1".parse().unwrap()), "deny wins a tie");
    }

    #[test]
    fn deny_only_allows_the_rest_and_v4_mapped_v6_is_v4() {
        let f = filter(&[], &["192.0.2.0/24", "2001:db8::/32"]);
        assert!(f.allows("198.51.100.1".parse().unwrap()));
        assert!(!f.allows("::ffff:192.0.2.7".parse().unwrap()));
        assert!(!f.allows("2001:db8::1".parse().unwrap()));
        let r = f.check("192.0.2.1".parse().unwrap()).unwrap_err();
        assert_eq!(r.reason, Reason::SourceDenied);
        assert_eq!(r.status, http::StatusCode::FORBIDDEN);
    }
}
