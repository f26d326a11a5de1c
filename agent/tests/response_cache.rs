//! The response cache (`cache` section) end to end: the real app on
//! loopback in front of a scripted origin that counts the requests it
//! gets. One test per row of the RFC 9111 table in docs/policy.md, plus
//! coalescing, namespace isolation, the byte bound and purge. Waits for
//! staleness are real (max-age is in seconds) but generous; no test
//! asserts how long anything took.
mod common;

use std::time::Duration;

use common::{origin::Origin, origin::Script, *};
use http::{Method, StatusCode};

/// Route `team-a/api` (host a.example.com) to the origin, with `policy`
/// (YAML documents) added.
async fn setup(policy: &str) -> (sluice::app::App, TestClient, Origin) {
    let origin = Origin::start().await;
    let port = free_port();
    let dir = config_dir();
    write_config(&dir, "all.yaml", &config(port, &origin, policy));
    let app = start(&dir).await;
    (app, TestClient::new(port), origin)
}

fn config(port: u16, origin: &Origin, policy: &str) -> String {
    format!(
        r#"{gw}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: team-a}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [a.example.com]
  rules:
  - backendRefs: [{{name: origin, port: 8080}}]
{svc}
{policy}
"#,
        gw = gateway_yaml(port),
        svc = service_yaml("team-a", "origin", origin.addr),
    )
}

const CACHE: &str = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: cache, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: api}]
  cache: {maxBytes: 1048576, maxEntryBytes: 65536}
"#;

/// Our `Cache-Status` entry.
fn status(r: &Reply) -> String {
    r.headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sluice"))
        .unwrap_or("")
        .to_owned()
}

async fn get(c: &TestClient, path: &str, headers: &[(&str, &str)]) -> Reply {
    c.send(Method::GET, "a.example.com", path, headers).await
}

/// Sleeps past a one-second max-age (generously).
async fn let_it_go_stale() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

#[tokio::test]
async fn max_age_is_served_from_the_cache_until_it_expires() {
    let (_app, c, o) = setup(CACHE).await;
    o.script("/a", Script::ok("one", &[("cache-control", "max-age=1")]));
    let r = get(&c, "/a", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "one"));
    assert!(
        status(&r).starts_with("sluice; fwd=uri-miss; stored"),
        "{}",
        status(&r)
    );
    let r = get(&c, "/a", &[]).await;
    assert_eq!(r.body, "one");
    assert!(
        status(&r).starts_with("sluice; hit; ttl="),
        "{}",
        status(&r)
    );
    assert!(r.headers.contains_key("age"));
    assert_eq!(o.count("/a"), 1, "the second was a hit");
    let_it_go_stale().await;
    let r = get(&c, "/a", &[]).await;
    assert!(
        status(&r).starts_with("sluice; fwd=stale"),
        "{}",
        status(&r)
    );
    assert_eq!(o.count("/a"), 2, "stale: fetched again");
}

#[tokio::test]
async fn s_maxage_wins_over_max_age_in_a_shared_cache() {
    let (_app, c, o) = setup(CACHE).await;
    o.script(
        "/s",
        Script::ok("s", &[("cache-control", "max-age=600, s-maxage=0")]),
    );
    get(&c, "/s", &[]).await;
    get(&c, "/s", &[]).await;
    assert_eq!(o.count("/s"), 2, "s-maxage=0: never fresh here");
}

#[tokio::test]
async fn expires_gives_freshness_when_there_is_no_max_age() {
    let (_app, c, o) = setup(CACHE).await;
    let now = std::time::SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let expires = httpdate::fmt_http_date(now + Duration::from_secs(600));
    o.script(
        "/e",
        Script::ok(
            "e",
            &[("date", date.as_str()), ("expires", expires.as_str())],
        ),
    );
    get(&c, "/e", &[]).await;
    let r = get(&c, "/e", &[]).await;
    assert!(status(&r).starts_with("sluice; hit"), "{}", status(&r));
    assert_eq!(o.count("/e"), 1);
    o.script("/e0", Script::ok("e0", &[("expires", "0")]));
    get(&c, "/e0", &[]).await;
    get(&c, "/e0", &[]).await;
    assert_eq!(o.count("/e0"), 2, "an invalid Expires is already expired");
}

#[tokio::test]
async fn no_store_private_and_no_freshness_are_not_stored() {
    let (_app, c, o) = setup(CACHE).await;
    o.script(
        "/ns",
        Script::ok("x", &[("cache-control", "no-store, max-age=60")]),
    );
    o.script(
        "/p",
        Script::ok("x", &[("cache-control", "private, max-age=60")]),
    );
    o.script("/none", Script::ok("x", &[]));
    for (path, detail) in [
        ("/ns", "no-store"),
        ("/p", "private"),
        ("/none", "no-freshness"),
    ] {
        let r = get(&c, path, &[]).await;
        assert_eq!(status(&r), format!("sluice; fwd=uri-miss; detail={detail}"));
        get(&c, path, &[]).await;
        assert_eq!(o.count(path), 2, "{path}");
    }
    // A request's no-store keeps the answer out of the cache too.
    o.script("/rq", Script::ok("x", &[("cache-control", "max-age=60")]));
    get(&c, "/rq", &[("cache-control", "no-store")]).await;
    get(&c, "/rq", &[]).await;
    assert_eq!(o.count("/rq"), 2);
}

#[tokio::test]
async fn no_cache_is_stored_but_revalidated_on_every_use() {
    let (_app, c, o) = setup(CACHE).await;
    o.script(
        "/nc",
        Script::ok("body", &[("cache-control", "no-cache"), ("etag", "\"v1\"")]),
    );
    get(&c, "/nc", &[]).await;
    let r = get(&c, "/nc", &[]).await;
    assert_eq!(r.body, "body", "the stored body, after a 304");
    assert_eq!(
        status(&r),
        "sluice; fwd=stale; fwd-status=304; stored; ttl=0"
    );
    assert_eq!(o.count("/nc"), 2);
    assert_eq!(o.request("/nc", 1)["if-none-match"], "\"v1\"");
    // A request's no-cache forces the same on a fresh entry.
    o.script(
        "/f",
        Script::ok("f", &[("cache-control", "max-age=60"), ("etag", "\"f\"")]),
    );
    get(&c, "/f", &[]).await;
    let r = get(&c, "/f", &[("cache-control", "no-cache")]).await;
    assert!(
        status(&r).starts_with("sluice; fwd=request; fwd-status=304"),
        "{}",
        status(&r)
    );
    assert_eq!(o.count("/f"), 2);
}

#[tokio::test]
async fn revalidation_with_etag_refreshes_the_entry() {
    let (_app, c, o) = setup(CACHE).await;
    o.script(
        "/v",
        Script::ok("v1", &[("cache-control", "max-age=1"), ("etag", "\"abc\"")]),
    );
    get(&c, "/v", &[]).await;
    let_it_go_stale().await;
    // The origin now says the entry is good for a minute more.
    o.script(
        "/v",
        Script::ok(
            "v2",
            &[("cache-control", "max-age=60"), ("etag", "\"abc\"")],
        ),
    );
    let r = get(&c, "/v", &[]).await;
    assert_eq!(r.body, "v1", "304: the stored body is still right");
    assert!(
        status(&r).starts_with("sluice; fwd=stale; fwd-status=304; stored"),
        "{}",
        status(&r)
    );
    assert_eq!(o.request("/v", 1)["if-none-match"], "\"abc\"");
    let r = get(&c, "/v", &[]).await;
    assert!(
        status(&r).starts_with("sluice; hit"),
        "refreshed: {}",
        status(&r)
    );
    assert_eq!(o.count("/v"), 2);
}

#[tokio::test]
async fn revalidation_with_last_modified_refreshes_the_entry() {
    let (_app, c, o) = setup(CACHE).await;
    let lm = "Mon, 07 Dec 2026 00:00:00 GMT";
    o.script(
        "/lm",
        Script::ok(
            "old",
            &[("cache-control", "max-age=1"), ("last-modified", lm)],
        ),
    );
    get(&c, "/lm", &[]).await;
    let_it_go_stale().await;
    o.script(
        "/lm",
        Script::ok(
            "new",
            &[("cache-control", "max-age=60"), ("last-modified", lm)],
        ),
    );
    let r = get(&c, "/lm", &[]).await;
    assert_eq!(r.body, "old");
    assert_eq!(o.request("/lm", 1)["if-modified-since"], lm);
    assert!(status(&r).contains("fwd-status=304"), "{}", status(&r));
    get(&c, "/lm", &[]).await;
    assert_eq!(o.count("/lm"), 2);
}

#[tokio::test]
async fn vary_keeps_variants_apart() {
    let (_app, c, o) = setup(CACHE).await;
    o.script(
        "/lang",
        Script::ok(
            "hallo",
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        ),
    );
    get(&c, "/lang", &[("accept-language", "de")]).await;
    o.script(
        "/lang",
        Script::ok(
            "bonjour",
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        ),
    );
    let r = get(&c, "/lang", &[("accept-language", "fr")]).await;
    assert_eq!(r.body, "bonjour");
    assert!(
        status(&r).starts_with("sluice; fwd=vary-miss; stored"),
        "{}",
        status(&r)
    );
    let de = get(&c, "/lang", &[("accept-language", "de")]).await;
    let fr = get(&c, "/lang", &[("accept-language", "fr")]).await;
    assert_eq!((de.body.as_str(), fr.body.as_str()), ("hallo", "bonjour"));
    assert!(status(&de).starts_with("sluice; hit") && status(&fr).starts_with("sluice; hit"));
    assert_eq!(o.count("/lang"), 2, "one request per variant");
}

#[tokio::test]
async fn requests_with_authorization_are_stored_only_when_the_response_allows_it() {
    let (_app, c, o) = setup(CACHE).await;
    let auth = [("authorization", "Bearer alice")];
    o.script(
        "/me",
        Script::ok("alice's", &[("cache-control", "max-age=60")]),
    );
    let r = get(&c, "/me", &auth).await;
    assert_eq!(status(&r), "sluice; fwd=uri-miss; detail=authorization");
    let r = get(&c, "/me", &[]).await;
    assert_eq!(
        o.count("/me"),
        2,
        "never answered to another client: {}",
        r.body
    );
    o.script(
        "/pub",
        Script::ok("all", &[("cache-control", "public, max-age=60")]),
    );
    get(&c, "/pub", &auth).await;
    let r = get(&c, "/pub", &auth).await;
    assert!(status(&r).starts_with("sluice; hit"), "{}", status(&r));
    o.script(
        "/sm",
        Script::ok("all", &[("cache-control", "s-maxage=60")]),
    );
    get(&c, "/sm", &auth).await;
    get(&c, "/sm", &[]).await;
    assert_eq!((o.count("/pub"), o.count("/sm")), (1, 1));
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let (_app, c, o) = setup(CACHE).await;
    o.script(
        "/swr",
        Script::ok(
            "v1",
            &[("cache-control", "max-age=1, stale-while-revalidate=60")],
        ),
    );
    get(&c, "/swr", &[]).await;
    let_it_go_stale().await;
    o.script(
        "/swr",
        Script::ok(
            "v2",
            &[("cache-control", "max-age=60, stale-while-revalidate=60")],
        ),
    );
    let r = get(&c, "/swr", &[]).await;
    assert_eq!(r.body, "v1", "the stale entry, at once");
    assert!(status(&r).contains("hit") && status(&r).contains("stale-while-revalidate"));
    // The refresh happens in the background: wait for it (bounded).
    let mut refreshed = None;
    for _ in 0..100 {
        let r = get(&c, "/swr", &[]).await;
        if r.body == "v2" {
            refreshed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = refreshed.expect("the entry was refreshed in the background");
    assert!(status(&r).starts_with("sluice; hit"), "{}", status(&r));
    assert_eq!(o.count("/swr"), 2, "one refresh, however many stale hits");
}

#[tokio::test]
async fn stale_if_error_stands_in_while_the_backend_is_down_unless_it_must_revalidate() {
    let (_app, c, o) = setup(CACHE).await;
    o.script(
        "/sie",
        Script::ok(
            "kept",
            &[("cache-control", "max-age=1, stale-if-error=600")],
        ),
    );
    o.script(
        "/mr",
        Script::ok(
            "kept",
            &[(
                "cache-control",
                "max-age=1, stale-if-error=600, must-revalidate",
            )],
        ),
    );
    get(&c, "/sie", &[]).await;
    get(&c, "/mr", &[]).await;
    let_it_go_stale().await;
    o.take_down();
    let r = get(&c, "/sie", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "kept"));
    assert!(status(&r).contains("stale-if-error"), "{}", status(&r));
    let r = get(&c, "/mr", &[]).await;
    assert!(
        r.status.is_server_error(),
        "must-revalidate: no stale answer ({})",
        r.status
    );
    assert!(
        status(&r).starts_with("sluice; fwd=stale"),
        "{}",
        status(&r)
    );
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let (_app, c, o) = setup(CACHE).await;
    let mut script = Script::ok("shared", &[("cache-control", "max-age=60")]);
    script.delay = Duration::from_millis(500);
    o.script("/hot", script);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { get(&c, "/hot", &[]).await }));
    }
    let mut collapsed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "shared"));
        collapsed += usize::from(status(&r).contains("collapsed") || status(&r).contains("hit"));
    }
    assert_eq!(
        o.count("/hot"),
        1,
        "100 concurrent misses, one upstream request"
    );
    assert_eq!(collapsed, 99);
}

#[tokio::test]
async fn a_failed_leader_lets_the_waiting_requests_go_upstream() {
    let (_app, c, o) = setup(CACHE).await;
    let mut script = Script::ok("nope", &[("cache-control", "private")]);
    script.delay = Duration::from_millis(300);
    o.script("/personal", script);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { get(&c, "/personal", &[]).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(
        o.count("/personal"),
        5,
        "not storable: everyone asked for themselves"
    );
}

#[tokio::test]
async fn one_namespace_never_answers_another_namespaces_route() {
    let origin_b = Origin::start().await;
    // team-b's route: the same host and path, told apart by a header.
    let policy = format!(
        r#"{CACHE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: team-b}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [a.example.com]
  rules:
  - matches: [{{headers: [{{name: x-team, value: b}}]}}]
    backendRefs: [{{name: origin, port: 8080}}]
{svc}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {{name: cache, namespace: team-b}}
spec:
  targetRefs: [{{kind: HTTPRoute, name: api}}]
  cache: {{}}
"#,
        svc = service_yaml("team-b", "origin", origin_b.addr)
    );
    let (app, c, o) = setup(&policy).await;
    o.script(
        "/same",
        Script::ok("team-a", &[("cache-control", "max-age=60")]),
    );
    origin_b.script(
        "/same",
        Script::ok("team-b", &[("cache-control", "max-age=60")]),
    );
    assert_eq!(get(&c, "/same", &[]).await.body, "team-a");
    let b = get(&c, "/same", &[("x-team", "b")]).await;
    assert_eq!(b.body, "team-b");
    assert!(
        status(&b).starts_with("sluice; fwd=uri-miss"),
        "{}",
        status(&b)
    );
    assert_eq!(get(&c, "/same", &[("x-team", "b")]).await.body, "team-b");
    assert_eq!(get(&c, "/same", &[]).await.body, "team-a");
    assert_eq!((o.count("/same"), origin_b.count("/same")), (1, 1));
    let view = admin_get(&app, "/cache").await;
    assert!(
        view.contains("team-a/cache") && view.contains("team-b/cache"),
        "{view}"
    );
}

#[tokio::test]
async fn responses_over_the_entry_limit_stream_through_uncached_and_complete() {
    let (_app, c, o) = setup(CACHE).await;
    let big = "x".repeat(256 * 1024);
    o.script("/big", Script::ok(&big, &[("cache-control", "max-age=60")]));
    let mut chunked = Script::ok(&big, &[("cache-control", "max-age=60")]);
    chunked.chunked = true;
    o.script("/stream", chunked);
    let r = get(&c, "/big", &[]).await;
    assert_eq!(r.body.len(), big.len());
    assert_eq!(status(&r), "sluice; fwd=uri-miss; detail=too-large");
    get(&c, "/big", &[]).await;
    assert_eq!(o.count("/big"), 2);
    // Unknown length: found too large while streaming.
    for _ in 0..2 {
        let r = get(&c, "/stream", &[]).await;
        assert_eq!(r.body.len(), big.len(), "complete");
    }
    assert_eq!(o.count("/stream"), 2, "not stored");
    // Small ones still are.
    o.script(
        "/small",
        Script::ok("s", &[("cache-control", "max-age=60")]),
    );
    get(&c, "/small", &[]).await;
    get(&c, "/small", &[]).await;
    assert_eq!(o.count("/small"), 1);
}

#[tokio::test]
async fn purge_by_policy_and_prefix_and_occupancy_in_admin_and_metrics() {
    let (app, c, o) = setup(CACHE).await;
    for p in ["/p/1", "/p/2", "/q/1"] {
        o.script(p, Script::ok("x", &[("cache-control", "max-age=600")]));
        get(&c, p, &[]).await;
        get(&c, p, &[]).await;
    }
    let view: serde_json::Value = serde_json::from_str(&admin_get(&app, "/cache").await).unwrap();
    let stats = &view["caches"][0]["stats"];
    assert_eq!(view["caches"][0]["policy"], "team-a/cache");
    assert_eq!(
        (stats["entries"].as_u64(), stats["hits"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(stats["bytes"].as_u64().unwrap() > 0);
    let metrics = admin_get(&app, "/metrics").await;
    assert!(
        metrics.contains("sluice_cache_hits_total{namespace=\"team-a\",policy=\"cache\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_cache_entries{namespace=\"team-a\",policy=\"cache\"} 3"));
    let (s, body) = admin_send(&app, Method::DELETE, "/cache?prefix=/p/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "purged 2 entries\n"));
    get(&c, "/p/1", &[]).await;
    get(&c, "/q/1", &[]).await;
    assert_eq!((o.count("/p/1"), o.count("/q/1")), (2, 1));
    let (s, _) = admin_send(&app, Method::DELETE, "/cache?policy=team-a/cache").await;
    assert_eq!(s, StatusCode::OK);
    get(&c, "/q/1", &[]).await;
    assert_eq!(o.count("/q/1"), 2);
    let (s, _) = admin_send(&app, Method::DELETE, "/cache?policy=team-z/none").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = admin_send(&app, Method::DELETE, "/cache").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unsafe_methods_pass_and_invalidate_and_head_is_answered_from_get() {
    let (_app, c, o) = setup(CACHE).await;
    o.script("/r", Script::ok("r", &[("cache-control", "max-age=600")]));
    get(&c, "/r", &[]).await;
    let h = c.send(Method::HEAD, "a.example.com", "/r", &[]).await;
    assert!(status(&h).starts_with("sluice; hit"), "{}", status(&h));
    assert_eq!(h.body, "");
    let p = c
        .send_body(Method::POST, "a.example.com", "/r", "change")
        .await;
    assert_eq!(status(&p), "sluice; fwd=method");
    let r = get(&c, "/r", &[]).await;
    assert!(
        status(&r).starts_with("sluice; fwd=uri-miss"),
        "invalidated: {}",
        status(&r)
    );
    assert_eq!(o.count("/r"), 3);
}

#[tokio::test]
async fn a_hit_still_needs_authentication_and_gets_the_response_transforms() {
    let policy = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: team-a}
stringData: {ci: key-ci-1}
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: cache, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: api}]
  apiKeys: {secretRefs: [{name: keys}]}
  transform: {response: {set: [{name: x-served-by, value: sluice}]}}
  cache: {}
"#;
    let (_app, c, o) = setup(policy).await;
    o.script(
        "/k",
        Script::ok("k", &[("cache-control", "public, max-age=600")]),
    );
    let key = [("x-api-key", "key-ci-1")];
    get(&c, "/k", &key).await;
    let r = get(&c, "/k", &key).await;
    assert!(status(&r).starts_with("sluice; hit"), "{}", status(&r));
    assert_eq!(r.headers["x-served-by"], "sluice");
    let r = get(&c, "/k", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "cached, yet no key no answer"
    );
    assert_eq!(o.count("/k"), 1);
    // Authenticated by the API key (stripped before the backend): the
    // answer may be the client's own, stored only when it says `public`.
    o.script(
        "/mine",
        Script::ok("mine", &[("cache-control", "max-age=600")]),
    );
    let r = get(&c, "/mine", &key).await;
    assert_eq!(status(&r), "sluice; fwd=uri-miss; detail=authorization");
    get(&c, "/mine", &key).await;
    assert_eq!(o.count("/mine"), 2);
}

#[tokio::test]
async fn default_ttl_applies_only_where_the_origin_gives_no_freshness() {
    let policy = r#"
---
apiVersion: sluice.dev/v1alpha1
kind: SluicePolicy
metadata: {name: cache, namespace: team-a}
spec:
  targetRefs: [{kind: HTTPRoute, name: api}]
  cache: {defaultTtl: 10m}
"#;
    let (_app, c, o) = setup(policy).await;
    o.script("/plain", Script::ok("p", &[]));
    o.script("/zero", Script::ok("z", &[("cache-control", "max-age=0")]));
    for p in ["/plain", "/zero"] {
        get(&c, p, &[]).await;
        get(&c, p, &[]).await;
    }
    assert_eq!(o.count("/plain"), 1, "defaultTtl");
    assert_eq!(o.count("/zero"), 2, "the origin's max-age=0 wins");
}

#[tokio::test]
async fn a_reload_keeps_the_entries_of_an_unchanged_policy_and_drops_a_changed_ones() {
    let origin = Origin::start().await;
    let port = free_port();
    let dir = config_dir();
    write_config(&dir, "all.yaml", &config(port, &origin, CACHE));
    let _app = start(&dir).await;
    let c = TestClient::new(port);
    origin.script("/a", Script::ok("a", &[("cache-control", "max-age=600")]));
    get(&c, "/a", &[]).await;
    // Another route added: the policy is untouched.
    let other = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: team-a}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [other.example.com]
  rules: [{backendRefs: [{name: origin, port: 8080}]}]
"#;
    write_config(
        &dir,
        "all.yaml",
        &config(port, &origin, &format!("{CACHE}{other}")),
    );
    let mut applied = false;
    for _ in 0..200 {
        if c.send(Method::GET, "other.example.com", "/x", &[])
            .await
            .status
            == StatusCode::OK
        {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "the reload was applied");
    let r = get(&c, "/a", &[]).await;
    assert!(
        status(&r).starts_with("sluice; hit"),
        "kept: {}",
        status(&r)
    );
    assert_eq!(origin.count("/a"), 1);
    // A changed cache section starts empty.
    let changed = CACHE.replace("maxBytes: 1048576", "maxBytes: 2097152");
    write_config(
        &dir,
        "all.yaml",
        &config(port, &origin, &format!("{changed}{other}")),
    );
    let mut refetched = false;
    for _ in 0..200 {
        let r = get(&c, "/a", &[]).await;
        if status(&r).starts_with("sluice; fwd=uri-miss") {
            refetched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refetched, "a changed policy does not keep the old entries");
    assert_eq!(origin.count("/a"), 2);
}

#[tokio::test]
async fn a_hit_answers_the_clients_own_conditions_with_304() {
    let (_app, c, o) = setup(CACHE).await;
    o.script(
        "/c",
        Script::ok(
            "body",
            &[("cache-control", "max-age=600"), ("etag", "\"e1\"")],
        ),
    );
    get(&c, "/c", &[]).await;
    let r = get(&c, "/c", &[("if-none-match", "\"e1\"")]).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert!(status(&r).starts_with("sluice; hit"), "{}", status(&r));
    assert_eq!(r.headers["etag"], "\"e1\"");
    let r = get(&c, "/c", &[("if-none-match", "\"old\"")]).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "body"));
    assert_eq!(o.count("/c"), 1, "both answered from the cache");
}
