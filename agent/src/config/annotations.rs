//! Conversion of the `sluice.dev/*` Gateway annotations: source CIDRs
//! allowed and denied, the per-source SYN budget, admitted client
//! namespaces and extra port ranges per listener, plus the check that port
//! ranges of different Gateways do not overlap. They are Sluice's own
//! extensions to the Gateway API, so they are kept apart from the
//! conversion of the standard Gateway fields in [`super::gateway`].
use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use ipnet::IpNet;

use super::{model, validate::Doc};

/// Gateway annotation: comma-separated source CIDRs allowed to reach the shard.
pub const SOURCE_RANGES_ANNOTATION: &str = "sluice.dev/source-ranges";
/// Gateway annotation: comma-separated source CIDRs denied (longest prefix wins).
pub const SOURCE_DENY_ANNOTATION: &str = "sluice.dev/source-deny";
/// Gateway annotation: comma-separated namespaces whose clients may connect.
pub const ADMITTED_NAMESPACES_ANNOTATION: &str = "sluice.dev/admitted-namespaces";
/// Gateway annotation: new TCP connections per second allowed per source address.
pub const SYN_RATE_ANNOTATION: &str = "sluice.dev/syn-rate";
/// Gateway annotation: extra destination port ranges served by a listener,
/// `[LISTENER=]FIRST[-LAST]` items separated by commas.
pub const PORT_RANGES_ANNOTATION: &str = "sluice.dev/port-ranges";
/// Gateway annotation: burst of new connections per source (default: the rate).
pub const SYN_BURST_ANNOTATION: &str = "sluice.dev/syn-burst";

/// What the `sluice.dev/*` annotations of one Gateway say.
pub(super) struct GatewayAnnotations {
    pub source_allow: Vec<IpNet>,
    pub source_deny: Vec<IpNet>,
    pub syn_budget: Option<model::SynBudget>,
    pub admitted_namespaces: Option<Vec<String>>,
    pub port_ranges: Vec<model::PortRange>,
}

/// Reads the annotations of a Gateway whose listeners are already converted
/// (port ranges name listeners); errors name `metadata.annotations[KEY]`.
pub(super) fn gateway_annotations(
    doc: &mut Doc<'_>,
    ann: &BTreeMap<String, String>,
    listeners: &[model::Listener],
) -> GatewayAnnotations {
    let source_allow = cidrs(
        doc,
        &format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]"),
        ann.get(SOURCE_RANGES_ANNOTATION),
    );
    let source_deny = cidrs(
        doc,
        &format!("metadata.annotations[{SOURCE_DENY_ANNOTATION}]"),
        ann.get(SOURCE_DENY_ANNOTATION),
    );
    let positive = |doc: &mut Doc<'_>, key: &str| -> Option<u32> {
        let raw = ann.get(key)?;
        match raw.trim().parse::<u32>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                doc.err(
                    format!("metadata.annotations[{key}]"),
                    format!("expected a positive integer, got {raw:?}"),
                );
                None
            }
        }
    };
    let syn_rate = positive(doc, SYN_RATE_ANNOTATION);
    let syn_burst = positive(doc, SYN_BURST_ANNOTATION);
    if syn_burst.is_some() && syn_rate.is_none() {
        doc.err(
            format!("metadata.annotations[{SYN_BURST_ANNOTATION}]"),
            format!("needs {SYN_RATE_ANNOTATION} as well"),
        );
    }
    let admitted_namespaces = ann.get(ADMITTED_NAMESPACES_ANNOTATION).map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let port_ranges = ann
        .get(PORT_RANGES_ANNOTATION)
        .map(|raw| port_ranges(doc, raw, listeners))
        .unwrap_or_default();
    let syn_budget = syn_rate.map(|rate| model::SynBudget {
        rate,
        burst: syn_burst.unwrap_or(rate),
    });
    GatewayAnnotations {
        source_allow,
        source_deny,
        syn_budget,
        admitted_namespaces,
        port_ranges,
    }
}

fn cidrs(doc: &mut Doc<'_>, field: &str, raw: Option<&String>) -> Vec<IpNet> {
    let Some(raw) = raw else { return Vec::new() };
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = IpNet::from_str(item)
            .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
            .map(|n| n.trunc());
        match parsed {
            Ok(n) => out.push(n),
            Err(_) => doc.err(field, format!("invalid CIDR {item:?}")),
        }
    }
    out
}

/// `sluice.dev/port-ranges`: comma-separated `[LISTENER=]FIRST[-LAST]`. An item
/// without a listener name belongs to the Gateway's first HTTP or HTTPS
/// listener. Ranges of one Gateway may not overlap each other.
fn port_ranges(
    doc: &mut Doc<'_>,
    raw: &str,
    listeners: &[model::Listener],
) -> Vec<model::PortRange> {
    let field = format!("metadata.annotations[{PORT_RANGES_ANNOTATION}]");
    let served = |l: &&model::Listener| {
        matches!(
            l.protocol,
            model::ListenerProtocol::Http | model::ListenerProtocol::Https
        )
    };
    let mut out: Vec<model::PortRange> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, ports) = match item.split_once('=') {
            Some((n, p)) => (Some(n.trim()), p.trim()),
            None => (None, item),
        };
        let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a), port(b)),
            None => (port(ports), port(ports)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            doc.err(
                &field,
                format!("{item:?}: expected [LISTENER=]PORT or [LISTENER=]FIRST-LAST with ports 1-65535"),
            );
            continue;
        };
        if first > last {
            doc.err(
                &field,
                format!("{item:?}: range is empty ({first} > {last})"),
            );
            continue;
        }
        let listener = match name {
            Some(n) => match listeners.iter().find(|l| l.name == n) {
                Some(l) if served(&l) => l,
                Some(_) => {
                    doc.err(
                        &field,
                        format!("{item:?}: listener {n:?} is not HTTP or HTTPS"),
                    );
                    continue;
                }
                None => {
                    doc.err(
                        &field,
                        format!("{item:?}: the Gateway has no listener {n:?}"),
                    );
                    continue;
                }
            },
            None => match listeners.iter().find(served) {
                Some(l) => l,
                None => {
                    doc.err(
                        &field,
                        format!("{item:?}: the Gateway has no HTTP or HTTPS listener"),
                    );
                    continue;
                }
            },
        };
        let range = model::PortRange {
            listener: listener.name.clone(),
            first,
            last,
        };
        if let Some(other) = out.iter().find(|o| o.overlaps(&range)) {
            doc.err(&field, format!("{item:?}: overlaps {other}"));
            continue;
        }
        out.push(range);
    }
    out
}

/// Port ranges of two Gateways that overlap on a common address (Gateways
/// without addresses listen on every address, and only overlap each other:
/// a Gateway's own address is more specific than the wildcard). Returns
/// `(later, earlier, message)` with indices into `gateways`.
pub fn port_range_overlaps(gateways: &[model::Gateway]) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (j, b) in gateways.iter().enumerate() {
        'earlier: for (i, a) in gateways[..j].iter().enumerate() {
            let common = if a.addresses.is_empty() || b.addresses.is_empty() {
                (a.addresses.is_empty() && b.addresses.is_empty())
                    .then(|| "every address".to_owned())
            } else {
                a.addresses
                    .iter()
                    .find(|x| b.addresses.contains(x))
                    .map(|x| format!("address {x}"))
            };
            let Some(common) = common else { continue };
            for rb in &b.port_ranges {
                if let Some(ra) = a.port_ranges.iter().find(|ra| ra.overlaps(rb)) {
                    out.push((
                        j,
                        i,
                        format!(
                            "ports {rb} of Gateway {} overlap ports {ra} of Gateway {} on {common}",
                            b.id, a.id
                        ),
                    ));
                    continue 'earlier;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_documents, ConfigError};

    fn parse(text: &str) -> Result<super::super::Config, ConfigError> {
        parse_documents([(Path::new("test.yaml"), text)])
    }

    fn gateway_with_ranges(name: &str, addresses: &str, ranges: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: {name}, namespace: ns1, annotations: {{sluice.dev/port-ranges: \"{ranges}\"}}}}\n\
             spec:\n  gatewayClassName: sluice\n  addresses: [{addresses}]\n  listeners:\n\
             \x20 - {{name: tcp, port: 22, protocol: TCP}}\n\
             \x20 - {{name: http, port: 80, protocol: HTTP}}\n\
             \x20 - {{name: web, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: c}}]}}}}\n"
        )
    }

    #[test]
    fn port_ranges_name_a_listener_or_default_to_the_first_http_one() {
        let c = parse(&gateway_with_ranges(
            "gw",
            "",
            "30000-30100, 31000, web=32000-32010",
        ))
        .unwrap();
        let r = &c.gateways[0].port_ranges;
        let got: Vec<(&str, u16, u16)> = r
            .iter()
            .map(|r| (r.listener.as_str(), r.first, r.last))
            .collect();
        assert_eq!(
            got,
            [
                ("http", 30000, 30100),
                ("http", 31000, 31000),
                ("web", 32000, 32010)
            ]
        );
    }

    #[test]
    fn bad_port_ranges_are_errors_naming_the_field() {
        for (ranges, needle) in [
            ("30000-", "expected [LISTENER=]PORT"),
            ("0-10", "expected [LISTENER=]PORT"),
            ("30100-30000", "range is empty"),
            ("nope=30000", "no listener \"nope\""),
            ("tcp=30000", "not HTTP or HTTPS"),
            ("30000-30100,30050", "overlaps 30000-30100"),
            ("70000", "expected [LISTENER=]PORT"),
        ] {
            let err = parse(&gateway_with_ranges("gw", "", ranges))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("field metadata.annotations[sluice.dev/port-ranges]")
                    && err.contains(needle),
                "{ranges}: {err}"
            );
        }
    }

    #[test]
    fn overlapping_ranges_of_two_gateways_on_one_address_name_both() {
        let a = gateway_with_ranges("a", "{value: 10.0.0.1}", "30000-30100");
        let b = gateway_with_ranges("b", "{value: 10.0.0.2}, {value: 10.0.0.1}", "30100-30200");
        let err = parse(&format!("{a}---\n{b}")).unwrap_err().to_string();
        assert!(
            err.contains("document 2 (Gateway ns1/b)")
                && err.contains("ports 30100-30200 of Gateway ns1/b overlap ports 30000-30100 of Gateway ns1/a on address 10.0.0.1")
                && err.contains("declared in test.yaml: document 1"),
            "{err}"
        );
        // Other addresses, or a Gateway on every address next to one on its
        // own address, do not clash (the own address is more specific).
        let c = gateway_with_ranges("c", "{value: 10.0.0.3}", "30000-30100");
        let d = gateway_with_ranges("d", "", "30000-30100");
        parse(&format!("{a}---\n{c}---\n{d}")).unwrap();
        let e = gateway_with_ranges("e", "", "30050");
        let err = parse(&format!("{d}---\n{e}")).unwrap_err().to_string();
        assert!(err.contains("on every address"), "{err}");
    }
}
