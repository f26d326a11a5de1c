//! `GET /cache` (occupancy and counters of every response cache) and
//! `DELETE /cache?policy=NAMESPACE/NAME&prefix=/PATH` (purge: the entries of
//! one policy, of every policy under a path prefix, or both).
use std::sync::Arc;

use http::StatusCode;

use super::{text, AdminState};
use crate::{gateway::Body, policy::response_cache::store::Store};

/// Every response cache store held by the agent, sorted by policy.
fn stores(state: &AdminState) -> Vec<Arc<Store>> {
    let Some(runtime) = state.runtime.upgrade() else {
        return Vec::new();
    };
    let mut all: Vec<Arc<Store>> = runtime
        .policy_state
        .all::<Store>()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    all.sort_by(|a, b| a.policy.cmp(&b.policy));
    all
}

/// `GET /cache`.
pub(super) fn view(state: &AdminState) -> http::Response<Body> {
    let list: Vec<serde_json::Value> = stores(state)
        .iter()
        .map(|s| {
            serde_json::json!({
                "policy": format!("{}/{}", s.policy.namespace, s.policy.name),
                "stats": s.stats(),
            })
        })
        .collect();
    text(
        StatusCode::OK,
        serde_json::to_string_pretty(&serde_json::json!({ "caches": list })).unwrap_or_default(),
        "application/json",
    )
}

/// `DELETE /cache?policy=ns/name&prefix=/path`.
pub(super) fn purge(state: &AdminState, query: &str) -> http::Response<Body> {
    let mut policy = None;
    let mut prefix = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("policy", v)) => policy = Some(v.replace("%2F", "/").replace("%2f", "/")),
            Some(("prefix", v)) => prefix = Some(v.replace("%2F", "/").replace("%2f", "/")),
            _ => {}
        }
    }
    if policy.is_none() && prefix.is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            "name what to purge: ?policy=NAMESPACE/NAME and/or ?prefix=/PATH\n".into(),
            "text/plain",
        );
    }
    if let Some(p) = &policy {
        if p.split_once('/').is_none() {
            return text(
                StatusCode::BAD_REQUEST,
                format!("policy must be NAMESPACE/NAME: {p:?}\n"),
                "text/plain",
            );
        }
    }
    let mut removed = 0;
    let mut matched = false;
    for store in stores(state) {
        let name = format!("{}/{}", store.policy.namespace, store.policy.name);
        if policy.as_ref().is_some_and(|p| *p != name) {
            continue;
        }
        matched = true;
        removed += store.purge(|k| {
            prefix
                .as_ref()
                .is_none_or(|p| k.target.starts_with(p.as_str()))
        });
    }
    let status = if matched {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    text(
        status,
        format!(
            "purged {removed} entr{}\n",
            if removed == 1 { "y" } else { "ies" }
        ),
        "text/plain",
    )
}
