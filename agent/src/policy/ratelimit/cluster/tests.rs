use super::{
    window::{civil_from_days, days_from_civil},
    *,
};

#[test]
fn urls_parse_with_auth_tls_db_and_ipv6() {
    let s = StoreSettings::from_url("redis://127.0.0.1:6380/2").unwrap();
    assert_eq!((s.host.as_str(), s.port, s.db), ("127.0.0.1", 6380, 2));
    assert!(s.tls.is_none() && s.password.is_none());
    let s = StoreSettings::from_url("rediss://app:s3cr@t@redis.example:6390").unwrap();
    assert_eq!(s.username.as_deref(), Some("app"));
    assert_eq!(s.password.as_deref(), Some("s3cr@t"));
    assert!(s.tls.is_some());
    assert_eq!(s.addr(), "redis.example:6390");
    let s = StoreSettings::from_url("redis://:pw@[::1]").unwrap();
    assert_eq!((s.host.as_str(), s.port), ("::1", 6379));
    assert_eq!(s.username, None);
    assert_eq!(s.addr(), "[::1]:6379");
    let e = StoreSettings::from_url("http://u:pw@x")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("pw"), "{e}");
    assert!(StoreSettings::from_url("redis://x/db").is_err());
    assert!(!format!("{s:?}").contains("pw"));
}

#[test]
fn calendar_windows() {
    // 2024-02-29T12:00:00Z
    let t = 1_709_208_000_000;
    let m = Window::Month.id(t);
    assert_eq!(m, 2024 * 12 + 1);
    assert_eq!(Window::Month.start_ms(m), 1_706_745_600_000, "2024-02-01");
    assert_eq!(Window::Month.end_ms(m), 1_709_251_200_000, "2024-03-01");
    // December rolls into the next year.
    let dec = 2023 * 12 + 11;
    assert_eq!(Window::Month.end_ms(dec), 1_704_067_200_000, "2024-01-01");
    assert_eq!(Window::Day.end_ms(Window::Day.id(t)), 1_709_251_200_000);
    assert_eq!(Window::Fixed(1000).id(t + 999), t / 1000);
    for days in [0i64, 59, 365, 10_000, 20_000] {
        let (y, mo, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, mo, d), days);
    }
}

fn store(wall: &Arc<AtomicU64>) -> ClusterStore {
    ClusterStore::new(
        None,
        64,
        WallClock::Fake(wall.clone()),
        RateLimitMetrics::default(),
    )
}

fn label() -> CounterLabel {
    CounterLabel {
        kind: "cluster",
        policy: "ns/p".into(),
        rule: "r".into(),
        key: "k".into(),
    }
}

#[test]
fn unreachable_store_follows_the_failure_mode() {
    let wall = Arc::new(AtomicU64::new(1_000_000));
    let s = store(&wall);
    let c = s.counter([1; 16], Window::Fixed(1000), label);
    assert_eq!(s.acquire(&c, 5, FailureMode::Closed), Decision::Unavailable);
    // Open: the agent enforces the limit on its own count.
    let allowed = (0..10)
        .filter(|_| {
            matches!(
                s.acquire(&c, 5, FailureMode::Open),
                Decision::Allowed { .. }
            )
        })
        .count();
    assert_eq!(allowed, 5);
    // A new window starts over; the old admissions wait to be pushed.
    wall.fetch_add(1000, Ordering::AcqRel);
    assert!(matches!(
        s.acquire(&c, 5, FailureMode::Open),
        Decision::Allowed { remaining: 4, .. }
    ));
    assert_eq!(c.st.lock().unwrap().carry, Some((1000, 5)));
}

#[test]
fn counters_are_bounded_and_idle_ones_go_first() {
    let wall = Arc::new(AtomicU64::new(1_000_000));
    let s = store(&wall);
    for i in 0..10_000u32 {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        let c = s.counter(id, Window::Fixed(1000), label);
        s.acquire(&c, 10, FailureMode::Open);
        if i % 100 == 0 {
            wall.fetch_add(10, Ordering::AcqRel);
        }
    }
    assert!(s.len() <= 64 + SHARDS, "{}", s.len());
}
