//! Route matching as the data path does it: a fixed, realistic config
//! compiled once, then fuzzed request heads (text, see `sluice_fuzz::Head`) through the Host checks, the
//! listener choice and the route table. A route that matches must hold for
//! the request, belong to the request's host (through its own hostnames and
//! its listener's), and be the one a plain linear walk over the table's
//! groups finds (the host index and precedence order are an optimisation of
//! that walk, never a change of its answer).
#![no_main]

use std::{path::Path, sync::LazyLock};

use libfuzzer_sys::fuzz_target;
use sluice::{
    config::{self, Config, Hostname},
    control::{compile, ShardIds},
    gateway::request_host,
    snapshot::{matching, RequestView, RouteEntry, Snapshot},
};
use sluice_fuzz::Head;

const CONFIG: &str = include_str!("../data/route_match.yaml");

static COMPILED: LazyLock<(Config, Snapshot)> = LazyLock::new(|| {
    let cfg = config::load_text(Path::new("route_match.yaml"), CONFIG)
        .expect("the fixed config is valid");
    let compiled = compile(&cfg, &mut ShardIds::default(), 1);
    assert_eq!(compiled.snapshot.shards.len(), 1, "{:?}", compiled.warnings);
    (cfg, compiled.snapshot)
});

/// The first matching entry of the most specific hostname group covering
/// `host`, by a linear walk over every group.
fn reference<'a>(
    groups: &[(Option<Hostname>, &'a [RouteEntry])],
    host: &str,
    view: &RequestView<'_>,
) -> Option<&'a RouteEntry> {
    let mut covering: Vec<&(Option<Hostname>, &[RouteEntry])> = groups
        .iter()
        .filter(|(h, _)| h.as_ref().is_none_or(|h| h.matches(host)))
        .collect();
    // Exact, then the longest wildcard suffix, then any host.
    covering.sort_by_key(|(h, _)| match h {
        Some(Hostname::Exact(_)) => (0, 0),
        Some(Hostname::Wildcard(s)) => (1, usize::MAX - s.len()),
        None => (2, 0),
    });
    covering
        .into_iter()
        .find_map(|(_, entries)| entries.iter().find(|e| matching::matches(&e.matcher, view)))
}

fuzz_target!(|data: &[u8]| {
    let (cfg, snapshot) = &*COMPILED;
    let Some(head) = Head::parse(data) else {
        return;
    };
    let req = &head.request;
    let Ok(host) = request_host(req) else {
        return;
    };
    let shard = &snapshot.shards[0];
    let Some(listener) = shard.listener_for(8080, &host) else {
        return;
    };
    assert!(
        listener.hostname.as_ref().is_none_or(|h| h.matches(&host)),
        "listener {} does not cover {host}",
        listener.name
    );
    let view = RequestView::new(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
    );
    let found = listener.routes.find(&host, &view);
    let expected = reference(&listener.routes.groups(), &host, &view);
    assert_eq!(
        found.map(|e| (&e.route_name, e.rule, e.match_index)),
        expected.map(|e| (&e.route_name, e.rule, e.match_index)),
        "host {host}, {view:?}"
    );
    let Some(entry) = found else {
        return;
    };
    assert!(matching::matches(&entry.matcher, &view));
    let route = cfg
        .routes
        .iter()
        .find(|r| *r.id == *entry.route)
        .expect("a matched route is in the config");
    assert!(
        route.hostnames.is_empty() || route.hostnames.iter().any(|h| h.matches(&host)),
        "route {} matched host {host}, not one of its hostnames",
        route.id
    );
});
