//! Conversion of a ListenerSet: its parentRef and its listeners (validated
//! like a Gateway's by [`super::gateway::listeners`]). Whether the parent
//! Gateway admits the set, and which of its listeners win conflicts, depends
//! on other objects: the control plane decides that.
use super::{
    gateway, model, resources as wire,
    time::parse_timestamp,
    validate::{ns, Doc, GATEWAY_GROUP},
};

/// `spec.listeners` `maxItems` in the ListenerSet CRD.
const MAX_LISTENERS: usize = 64;

pub(super) fn listener_set(doc: &mut Doc<'_>, s: wire::ListenerSet) -> Option<model::ListenerSet> {
    let before = doc.errors.len();
    let namespace = ns(&s.metadata);
    let created = s.metadata.creation_timestamp.as_deref().and_then(|t| {
        let parsed = parse_timestamp(t);
        if parsed.is_none() {
            doc.err(
                "metadata.creationTimestamp",
                format!("not an RFC 3339 timestamp: {t:?}"),
            );
        }
        parsed
    });
    let p = &s.spec.parent_ref;
    let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
    let kind = p.kind.as_deref().unwrap_or("Gateway");
    if group != GATEWAY_GROUP || kind != "Gateway" {
        doc.err(
            "spec.parentRef",
            format!("unsupported parent {group}/{kind} (supported: {GATEWAY_GROUP}/Gateway)"),
        );
    }
    if s.spec.listeners.is_empty() {
        doc.err(
            "spec.listeners",
            "a ListenerSet needs at least one listener",
        );
    } else if s.spec.listeners.len() > MAX_LISTENERS {
        doc.err(
            "spec.listeners",
            format!("at most {MAX_LISTENERS} listeners (the CRD's maxItems)"),
        );
    }
    let listeners = gateway::listeners(doc, &s.spec.listeners, &namespace);
    (doc.errors.len() == before).then(|| model::ListenerSet {
        id: model::ObjectRef::new(&namespace, &s.metadata.name),
        generation: s.metadata.generation,
        created,
        parent: model::ObjectRef::new(p.namespace.as_deref().unwrap_or(&namespace), &p.name),
        listeners,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_documents, ConfigError};

    fn parse(text: &str) -> Result<super::super::Config, ConfigError> {
        parse_documents([(Path::new("test.yaml"), text)])
    }

    const SET: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: team, namespace: team-a, creationTimestamp: "2026-01-02T03:04:05Z"}
spec:
  parentRef: {name: shared, namespace: infra}
  listeners:
  - name: web
    port: 8443
    protocol: HTTPS
    hostname: a.example.com
    tls: {certificateRefs: [{name: a-cert}, {name: other, namespace: certs}]}
"#;

    #[test]
    fn converts_parent_listeners_and_certificate_namespace() {
        let c = parse(SET).unwrap();
        let s = &c.listener_sets[0];
        assert_eq!(s.id.to_string(), "team-a/team");
        assert_eq!(s.parent.to_string(), "infra/shared");
        assert_eq!(s.created, Some((1767323045, 0)));
        let l = &s.listeners[0];
        assert_eq!((l.name.as_str(), l.port), ("web", 8443));
        let refs = &l.tls.as_ref().unwrap().certificate_refs;
        // Certificates default to the ListenerSet's namespace, not the Gateway's.
        assert_eq!(refs[0].object.to_string(), "team-a/a-cert");
        assert_eq!(refs[1].object.to_string(), "certs/other");
        assert_eq!(
            l.origin, None,
            "the origin is set when resolved into the Gateway"
        );
    }

    #[test]
    fn rejects_bad_parent_and_listeners() {
        let err = parse(&SET.replace("{name: shared,", "{kind: Other, name: shared,"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.parentRef") && err.contains("gateway.networking.k8s.io/Other"),
            "{err}"
        );
        let err = parse(&SET.replace("protocol: HTTPS", "protocol: HTTP"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.listeners[0].tls") && err.contains("ListenerSet team-a/team"),
            "{err}"
        );
        let empty = SET.split("  listeners:").next().unwrap().to_owned() + "  listeners: []\n";
        let err = parse(&empty).unwrap_err().to_string();
        assert!(err.contains("at least one listener"), "{err}");
    }

    #[test]
    fn gateway_allowed_listeners() {
        let gw = |allowed: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                 metadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: sluice\n  \
                 listeners: [{{name: http, port: 80, protocol: HTTP}}]\n{allowed}"
            )
        };
        use super::super::model::AllowedListeners;
        let c = parse(&gw("")).unwrap();
        assert_eq!(c.gateways[0].allowed_listeners, AllowedListeners::None);
        let c = parse(&gw("  allowedListeners: {namespaces: {from: All}}\n")).unwrap();
        assert_eq!(c.gateways[0].allowed_listeners, AllowedListeners::All);
        let c = parse(&gw(
            "  allowedListeners: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}\n",
        ))
        .unwrap();
        assert!(matches!(
            &c.gateways[0].allowed_listeners,
            AllowedListeners::Selector(s) if s.match_labels["team"] == "a"
        ));
        let err = parse(&gw("  allowedListeners: {namespaces: {from: Selector}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.allowedListeners.namespaces.selector"),
            "{err}"
        );
        let err = parse(&gw("  allowedListeners: {namespaces: {from: Some}}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported value \"Some\""), "{err}");
    }
}
