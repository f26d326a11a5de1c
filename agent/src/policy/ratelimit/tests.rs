//! Rate-limit behaviour with counts on a clock the tests move by hand: no
//! wall-clock timing is asserted.
use std::{net::IpAddr, sync::atomic::AtomicU64, time::Duration};

use http::{Request, StatusCode};

use super::*;
use crate::policy::metrics::PolicyMetrics;

fn service(base: &ClockBase) -> Arc<RateLimitService> {
    Arc::new(RateLimitService::with_clocks(
        ServiceOptions::default(),
        RateLimitMetrics::default(),
        base.clone(),
        WallClock::Fake(Arc::new(AtomicU64::new(1_700_000_000_000))),
    ))
}

fn local(name: &str, requests: u32, burst: u32) -> LocalRuleSpec {
    LocalRuleSpec {
        name: name.into(),
        requests,
        unit: spec::Unit::Second,
        burst,
        key: spec::KeySpec::default(),
        shared: false,
        shadow: false,
        penalty: None,
    }
}

fn section(rules: Vec<LocalRuleSpec>) -> RateLimitSection {
    RateLimitSection {
        headers: None,
        local: rules,
        cluster: vec![],
        quotas: vec![],
    }
}

fn compile(s: &RateLimitSection, svc: &Arc<RateLimitService>, metrics: &PolicyMetrics) -> Bound {
    let id = PolicyId::new("SluicePolicy", "ns", "limits");
    let meta = Arc::new(metrics.section(&id, "rateLimit"));
    Bound::new(Arc::new(RateLimit::compile(
        s,
        |_| id.clone(),
        meta,
        svc.clone(),
    )))
    .bind("ns/gw", Some("ns/route-a"))
}

fn parts() -> Parts {
    Request::get("/orders").body(()).unwrap().into_parts().0
}

fn ctx(ip: &str) -> RequestCtx<'static> {
    let ip: IpAddr = ip.parse().unwrap();
    RequestCtx::new((ip, 40000).into(), ip, "h")
}

/// Offers `rate` requests per second for `seconds` on the fake clock and
/// returns the requests accepted in each second.
async fn offer(b: &Bound, base: &ClockBase, rate: u32, seconds: u32) -> Vec<u32> {
    let step = Duration::from_nanos(1_000_000_000 / u64::from(rate));
    let p = parts();
    let c = ctx("10.0.0.1");
    let mut per_second = vec![0u32; seconds as usize];
    for s in 0..seconds {
        for _ in 0..rate {
            if b.check(&c, &p).await.is_ok() {
                per_second[s as usize] += 1;
            }
            base.advance(step);
        }
    }
    per_second
}

#[tokio::test]
async fn local_limit_accepts_its_rate_under_threefold_overload() {
    let base = ClockBase::fake();
    let svc = service(&base);
    let m = PolicyMetrics::default();
    // 100 req/s, burst 10, offered 300 req/s for 10 s.
    let b = compile(&section(vec![local("per-client", 100, 10)]), &svc, &m);
    let per_second = offer(&b, &base, 300, 10).await;
    // The first second also spends the initial burst.
    assert!(
        (100..=112).contains(&per_second[0]),
        "first second: {per_second:?}"
    );
    for (s, n) in per_second.iter().enumerate().skip(1) {
        assert!((98..=102).contains(n), "second {s}: {n} ({per_second:?})");
    }
    let total: u32 = per_second.iter().sum();
    let decisions = |reason: &'static str, decision: &'static str| {
        m.decisions
            .get_or_create(&crate::policy::metrics::DecisionLabels {
                namespace: crate::metrics::Name(Arc::from("ns")),
                policy: crate::metrics::Name(Arc::from("limits")),
                section: "rateLimit",
                decision,
                reason,
            })
            .get()
    };
    assert_eq!(decisions("ok", "allow"), u64::from(total));
    assert_eq!(decisions("rate_limited", "deny"), 3000 - u64::from(total));
}

#[tokio::test]
async fn refusals_carry_retry_after_and_the_ratelimit_headers() {
    let base = ClockBase::fake();
    let svc = service(&base);
    let m = PolicyMetrics::default();
    let b = compile(&section(vec![local("per-client", 2, 2)]), &svc, &m);
    let (p, c) = (parts(), ctx("10.0.0.1"));
    let first = b.check(&c, &p).await.unwrap();
    let mut h = http::HeaderMap::new();
    first.apply(&mut h);
    assert_eq!(h["ratelimit-policy"], "\"per-client\";q=2;w=1");
    assert_eq!(h["ratelimit"], "\"per-client\";r=1;t=1");
    b.check(&c, &p).await.unwrap();
    let r = b.check(&c, &p).await.unwrap_err();
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.reason, Reason::RateLimited);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["ratelimit"], "\"per-client\";r=0;t=1");
    // Half a second refills one request.
    base.advance(Duration::from_millis(500));
    assert!(b.check(&c, &p).await.is_ok());
}

#[tokio::test]
async fn keys_routes_shared_rules_and_shadow_mode() {
    let base = ClockBase::fake();
    let svc = service(&base);
    let m = PolicyMetrics::default();
    let per_source = LocalRuleSpec {
        key: spec::KeySpec {
            source: Some((24, 64)),
            ..Default::default()
        },
        ..local("per-source", 1, 1)
    };
    let b = compile(&section(vec![per_source.clone()]), &svc, &m);
    let p = parts();
    assert!(b.check(&ctx("10.0.0.1"), &p).await.is_ok());
    assert!(b.check(&ctx("10.0.0.2"), &p).await.is_err(), "same /24");
    assert!(b.check(&ctx("10.0.1.1"), &p).await.is_ok(), "other /24");
    // Another route has its own buckets; a shared rule does not.
    let other = b.bind("ns/gw", Some("ns/route-b"));
    assert!(other.check(&ctx("10.0.0.1"), &p).await.is_ok());
    let shared = compile(
        &section(vec![LocalRuleSpec {
            shared: true,
            ..local("shared", 1, 1)
        }]),
        &svc,
        &m,
    );
    assert!(shared.check(&ctx("10.0.0.1"), &p).await.is_ok());
    assert!(shared
        .bind("ns/gw", Some("ns/route-b"))
        .check(&ctx("10.0.0.1"), &p)
        .await
        .is_err());
    // Shadow: counted and logged, never refused.
    let shadow = compile(
        &section(vec![LocalRuleSpec {
            shadow: true,
            ..local("shadow", 1, 1)
        }]),
        &svc,
        &m,
    );
    for _ in 0..5 {
        assert!(shadow.check(&ctx("10.0.0.1"), &p).await.is_ok());
    }
    let shadowed = m
        .decisions
        .get_or_create(&crate::policy::metrics::DecisionLabels {
            namespace: crate::metrics::Name(Arc::from("ns")),
            policy: crate::metrics::Name(Arc::from("limits")),
            section: "rateLimit",
            decision: "allow",
            reason: "rate_limited_shadow",
        })
        .get();
    assert_eq!(shadowed, 4);
}

#[tokio::test]
async fn buckets_survive_a_recompile_of_the_same_rule_and_a_changed_rule_starts_fresh() {
    let base = ClockBase::fake();
    let svc = service(&base);
    let m = PolicyMetrics::default();
    let s = section(vec![local("r", 1, 1)]);
    let (p, c) = (parts(), ctx("10.0.0.1"));
    assert!(compile(&s, &svc, &m).check(&c, &p).await.is_ok());
    assert!(
        compile(&s, &svc, &m).check(&c, &p).await.is_err(),
        "same rule after a reload: same bucket"
    );
    let changed = section(vec![local("r", 2, 1)]);
    assert!(compile(&changed, &svc, &m).check(&c, &p).await.is_ok());
}

#[tokio::test]
async fn a_source_refused_too_often_goes_into_the_penalty_box() {
    let base = ClockBase::fake();
    let svc = service(&base);
    svc.penalties
        .set_resolver(Arc::new(|g: &str| (g == "ns/gw").then_some(7)));
    let m = PolicyMetrics::default();
    let rule = LocalRuleSpec {
        key: spec::KeySpec {
            source: Some((32, 128)),
            ..Default::default()
        },
        penalty: Some(PenaltySpec {
            on_auth_failure: true,
            ..penalty::spec(3, Duration::from_secs(10), Duration::from_secs(60))
        }),
        ..local("strict", 1, 1)
    };
    let b = compile(&section(vec![rule]), &svc, &m);
    let p = parts();
    let abusive = ctx("10.0.0.66");
    assert!(b.check(&abusive, &p).await.is_ok());
    for _ in 0..2 {
        assert!(b.check(&abusive, &p).await.is_err());
    }
    assert!(svc.penalties.admits(7, "10.0.0.66".parse().unwrap()));
    assert!(b.check(&abusive, &p).await.is_err(), "third refusal");
    assert!(!svc.penalties.admits(7, "10.0.0.66".parse().unwrap()));
    assert!(svc.penalties.admits(7, "10.0.0.67".parse().unwrap()));
    assert_eq!(svc.penalties.list()[0].by, "ns/limits strict");
    // Authentication failures count for rules that ask for it.
    let scanner = ctx("10.0.0.99");
    for _ in 0..3 {
        b.auth_failed(&scanner);
    }
    assert!(!svc.penalties.admits(7, "10.0.0.99".parse().unwrap()));
    base.advance(Duration::from_secs(61));
    assert!(svc.penalties.admits(7, "10.0.0.66".parse().unwrap()));
}

#[tokio::test]
async fn quotas_and_cluster_rules_without_a_store_follow_their_failure_mode() {
    let base = ClockBase::fake();
    let svc = service(&base);
    let m = PolicyMetrics::default();
    let s = RateLimitSection {
        headers: Some(HeaderStyle::Legacy),
        local: vec![],
        cluster: vec![ClusterRuleSpec {
            name: "fleet".into(),
            requests: 3,
            unit: spec::Unit::Minute,
            key: spec::KeySpec::default(),
            shared: false,
            shadow: false,
            failure_mode: FailureMode::Open,
            penalty: None,
        }],
        quotas: vec![QuotaSpec {
            name: "monthly".into(),
            requests: 2,
            period: QuotaPeriod::Month,
            key: QuotaKey::ApiKeyClient,
            failure_mode: FailureMode::Closed,
        }],
    };
    let b = compile(&s, &svc, &m);
    let p = parts();
    // No client id: the quota does not apply; Open: the agent counts alone.
    let anon = ctx("10.0.0.1");
    let ok = b.check(&anon, &p).await.unwrap();
    let mut h = http::HeaderMap::new();
    ok.apply(&mut h);
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "2");
    b.check(&anon, &p).await.unwrap();
    b.check(&anon, &p).await.unwrap();
    let r = b.check(&anon, &p).await.unwrap_err();
    assert_eq!(r.reason, Reason::RateLimited);
    // With a client id the Closed quota cannot be checked: 503.
    let mut client = ctx("10.0.0.2");
    client.identity.api_client = Some(Arc::from("ci"));
    let b2 = b.bind("ns/gw", Some("ns/route-b"));
    let r = b2.check(&client, &p).await.unwrap_err();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.reason, Reason::RateLimitUnavailable);
    assert_eq!(r.headers()["retry-after"], "1");
}

#[test]
fn a_million_distinct_keys_stay_within_the_store_bound() {
    let base = ClockBase::fake();
    let store = Arc::new(GcraStore::new(100_000, base.clone()));
    let limiter: Limiter = RateLimiter::new(
        quota(&local("flood", 10, 10)),
        SharedStore(store.clone()),
        LimiterClock::new(base.clone()),
    );
    limiter.clock().start();
    let hasher = RandomState::new();
    let mut peak_bytes = 0;
    let mut bytes_when_full = 0;
    for i in 0..1_000_000u64 {
        assert!(limiter.check_key(&hasher.hash_one(i)).is_ok());
        if i % 1000 == 0 {
            // One millisecond per thousand keys: a flood of 1M keys/s.
            base.advance(Duration::from_millis(1));
            peak_bytes = peak_bytes.max(store.allocated_bytes());
        }
        if i == 200_000 {
            bytes_when_full = store.allocated_bytes();
        }
    }
    assert!(store.len() <= store.capacity(), "{}", store.len());
    // The tables stopped growing once the store was full: 800,000 more
    // keys took no more memory.
    assert_eq!(store.allocated_bytes(), bytes_when_full);
    // At most 2 buckets of 17 bytes per entry of capacity (~3.4 MB for
    // 100,000 entries; a table keeps 1/8 free and has a power-of-two
    // size), whatever arrives.
    assert!(
        peak_bytes <= 2 * store.capacity() * 17,
        "{peak_bytes} bytes for {} entries",
        store.capacity()
    );
    // The keys of this flood are all active (a bucket of 10 at 10/s refills
    // in a second): room was made by dropping live entries, and counted.
    assert!(store.evictions() > 0);
    // Expired entries go first, losslessly: once the buckets refilled, a
    // new wave that fits evicts nothing live.
    base.advance(Duration::from_secs(2));
    let before = store.evictions();
    for i in 0..80_000u64 {
        limiter.check_key(&hasher.hash_one(i + 10_000_000)).unwrap();
    }
    assert_eq!(store.evictions(), before, "expired entries made room first");
    assert!(store.len() <= store.capacity());
}
