use std::time::Duration;

use super::{tracker::TRACKER_SHARDS, *};

fn boxed() -> (Arc<PenaltyBox>, ClockBase) {
    let base = ClockBase::fake();
    let b = Arc::new(PenaltyBox::new(
        4,
        base.clone(),
        RateLimitMetrics::default(),
    ));
    b.set_resolver(Arc::new(|g: &str| match g {
        "ns/gw" => Some(3),
        "ns/other" => Some(4),
        _ => None,
    }));
    (b, base)
}

#[test]
fn tracker_penalizes_after_n_within_the_window() {
    let base = ClockBase::fake();
    let t = PenaltyTracker::new(1000, base.clone(), RateLimitMetrics::default());
    let s = spec(3, Duration::from_secs(10), Duration::from_secs(60));
    let ip: IpAddr = "10.0.0.7".parse().unwrap();
    assert!(!t.refused(1, "ns/gw", ip, &s));
    assert!(!t.refused(1, "ns/gw", ip, &s));
    // Another rule, Gateway or source counts on its own.
    assert!(!t.refused(2, "ns/gw", ip, &s));
    assert!(!t.refused(1, "ns/other", ip, &s));
    assert!(!t.refused(1, "ns/gw", "10.0.0.8".parse().unwrap(), &s));
    assert!(t.refused(1, "ns/gw", ip, &s), "third within 10 s");
    // The window passes: counting starts over.
    assert!(!t.refused(1, "ns/gw", ip, &s));
    base.advance(Duration::from_secs(11));
    assert!(!t.refused(1, "ns/gw", ip, &s));
    assert!(!t.refused(1, "ns/gw", ip, &s));
    assert!(t.refused(1, "ns/gw", ip, &s));
}

#[test]
fn tracker_memory_is_bounded() {
    let t = PenaltyTracker::new(1024, ClockBase::fake(), RateLimitMetrics::default());
    let s = spec(5, Duration::from_secs(10), Duration::from_secs(60));
    for i in 0..100_000u32 {
        t.refused(1, "ns/gw", IpAddr::V4(i.into()), &s);
    }
    assert!(t.len() <= 1024 + TRACKER_SHARDS, "{}", t.len());
}

#[test]
fn box_blocks_the_prefix_on_its_shard_until_expiry() {
    let (b, base) = boxed();
    let s = PenaltySpec {
        prefix_v4: 24,
        ..spec(1, Duration::from_secs(1), Duration::from_secs(30))
    };
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    assert!(b.admits(3, ip));
    b.penalize("ns/gw", ip, &s, "ns/p rule", PenaltyCause::RateLimit);
    assert!(!b.admits(3, ip));
    assert!(!b.admits(3, "10.1.2.200".parse().unwrap()), "same /24");
    assert!(!b.admits(3, "::ffff:10.1.2.9".parse().unwrap()), "mapped");
    assert!(b.admits(3, "10.1.3.1".parse().unwrap()));
    assert!(b.admits(4, ip), "another Gateway's shard");
    let l = b.list();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].prefix, "10.1.2.0/24");
    assert_eq!(l[0].gateway, "ns/gw");
    base.advance(Duration::from_secs(29));
    assert!(!b.admits(3, ip));
    base.advance(Duration::from_secs(2));
    assert!(b.admits(3, ip), "expired, before any sweep");
    assert_eq!(b.len(), 1);
    b.sweep();
    assert_eq!(b.len(), 0);
    // Unknown Gateways are not penalized.
    b.penalize("ns/none", ip, &s, "x", PenaltyCause::RateLimit);
    assert!(b.is_empty());
}

#[test]
fn box_removal_capacity_and_extension() {
    let (b, base) = boxed();
    let s = spec(1, Duration::from_secs(1), Duration::from_secs(30));
    for i in 1..=4u8 {
        b.penalize(
            "ns/gw",
            IpAddr::from([10, 0, 0, i]),
            &s,
            "r",
            PenaltyCause::AuthFailure,
        );
        base.advance(Duration::from_secs(1));
    }
    assert_eq!(b.len(), 4);
    // Full: the oldest (soonest to expire) makes room.
    b.penalize(
        "ns/gw",
        "10.0.0.5".parse().unwrap(),
        &s,
        "r",
        PenaltyCause::RateLimit,
    );
    assert_eq!(b.len(), 4);
    assert!(b.admits(3, "10.0.0.1".parse().unwrap()));
    assert!(!b.admits(3, "10.0.0.5".parse().unwrap()));
    // A shorter penalty never shortens a longer one.
    let short = spec(1, Duration::from_secs(1), Duration::from_secs(1));
    b.penalize(
        "ns/gw",
        "10.0.0.5".parse().unwrap(),
        &short,
        "r",
        PenaltyCause::RateLimit,
    );
    base.advance(Duration::from_secs(2));
    assert!(!b.admits(3, "10.0.0.5".parse().unwrap()));
    assert_eq!(b.remove("10.0.0.5/32".parse().unwrap(), None), 1);
    assert!(b.admits(3, "10.0.0.5".parse().unwrap()));
    assert_eq!(
        b.remove("10.0.0.2/32".parse().unwrap(), Some("ns/other")),
        0
    );
    assert_eq!(b.remove("10.0.0.2/32".parse().unwrap(), Some("ns/gw")), 1);
}

/// What the kernel map was told, and what it held at attach.
#[derive(Clone, Default)]
struct FakeMap {
    held: Vec<(u32, IpNet, u64)>,
    ops: Arc<Mutex<Vec<String>>>,
}

impl PenaltyMap for FakeMap {
    fn put(&mut self, shard: u32, net: IpNet, expires_ns: u64) -> Result<(), String> {
        self.ops
            .lock()
            .unwrap()
            .push(format!("put {shard} {net} {expires_ns}"));
        Ok(())
    }
    fn delete(&mut self, shard: u32, net: IpNet) -> Result<(), String> {
        self.ops
            .lock()
            .unwrap()
            .push(format!("delete {shard} {net}"));
        Ok(())
    }
    fn dump(&self) -> Result<Vec<(u32, IpNet, u64)>, String> {
        Ok(self.held.clone())
    }
}

#[tokio::test]
async fn the_kernel_map_adopts_live_entries_and_follows_the_box() {
    let (b, _base) = boxed();
    let now = b.now_ns();
    let live: IpNet = "10.9.0.1/32".parse().unwrap();
    let stale: IpNet = "10.9.0.2/32".parse().unwrap();
    let fake = FakeMap {
        held: vec![(3, live, now + 60_000_000_000), (3, stale, now - 1)],
        ..Default::default()
    };
    let ops = fake.ops.clone();
    b.attach_kernel(Box::new(fake));
    // A previous agent's live entry is enforced at accept too.
    assert!(!b.admits(3, "10.9.0.1".parse().unwrap()));
    assert!(b.admits(3, "10.9.0.2".parse().unwrap()));
    let s = spec(1, Duration::from_secs(1), Duration::from_secs(30));
    b.penalize(
        "ns/gw",
        "10.1.1.1".parse().unwrap(),
        &s,
        "r",
        PenaltyCause::RateLimit,
    );
    assert_eq!(b.remove("10.1.1.1/32".parse().unwrap(), None), 1);
    let want = [
        format!("delete 3 {stale}"),
        format!("put 3 10.1.1.1/32 {}", now + 30_000_000_000),
        "delete 3 10.1.1.1/32".to_owned(),
    ];
    // Programmed by a blocking task, in order.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while ops.lock().unwrap().len() < want.len() {
        assert!(
            std::time::Instant::now() < until,
            "{:?}",
            ops.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*ops.lock().unwrap(), want);
}
