//! `xdp_ingress` under `BPF_PROG_TEST_RUN`, the kernel's own test hook: the
//! real program, verified and run by the kernel against maps programmed by
//! the agent's reconciler, with no interface involved.
//!
//! Known frames get the verdicts the design says. Then 30,000 generated and
//! mutated frames (seeded, so a failure is reproducible: the seed and the
//! frame are printed) are each judged exactly as a reference model of the
//! program's rules judges them — header walk, listener lookup, source rules,
//! penalty box, parked listeners — and every verdict is counted once under
//! the model's reason. Needs root; with CI=true a missing privilege fails.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use ipnet::IpNet;
use sluice::{
    kernel::{
        reconcile, KernelDatapath, KernelDesired, KernelOptions, KernelPenalties, SourceRule,
    },
    policy::ratelimit::penalty::PenaltyMap,
};
use sluice_common::{
    ListenerKey, ListenerValue, Reason, LISTENER_F_PARKED, LISTENER_F_SOURCE_FILTER, PROTO_TCP,
    PROTO_UDP, SOURCE_ALLOW, SOURCE_DENY,
};
use sluice_tests::netns::privileged;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&a);
    out
}

fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => v4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// What the maps hold, as the model sees it.
struct Rules {
    listeners: BTreeMap<ListenerKey, ListenerValue>,
    /// Per shard: (prefix as a v4-mapped/v6 network, allow?).
    sources: Vec<(u32, IpNet, bool)>,
    penalties: Vec<(u32, IpNet)>,
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn rules() -> Rules {
    let mut listeners = BTreeMap::new();
    let filtered = ListenerValue::new(1, LISTENER_F_SOURCE_FILTER);
    listeners.insert(ListenerKey::new(v4([10, 0, 0, 1]), 80, PROTO_TCP), filtered);
    listeners.insert(
        ListenerKey::new(addr16("2001:db8::1".parse().unwrap()), 443, PROTO_TCP),
        filtered,
    );
    // Any address, port 8080: the wildcard entry.
    listeners.insert(
        ListenerKey::new([0; 16], 8080, PROTO_TCP),
        ListenerValue::new(2, 0),
    );
    listeners.insert(
        ListenerKey::new(v4([10, 0, 0, 3]), 53, PROTO_UDP),
        ListenerValue::new(3, 0),
    );
    listeners.insert(
        ListenerKey::new(v4([10, 0, 0, 4]), 80, PROTO_TCP),
        ListenerValue::new(4, LISTENER_F_PARKED),
    );
    Rules {
        listeners,
        sources: vec![
            (1, net("192.0.2.0/24"), true),
            (1, net("192.0.2.128/25"), false),
            (1, net("2001:db8:aa::/48"), true),
        ],
        penalties: vec![
            (3, net("198.51.100.0/24")),
            (1, net("192.0.2.7/32")),
            (2, net("2001:db8:bad::/64")),
        ],
    }
}

fn contains(n: &IpNet, a: &[u8; 16]) -> bool {
    let mapped = a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    match n {
        IpNet::V4(n) if mapped => n.contains(&std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15])),
        IpNet::V6(n) if !mapped => n.contains(&std::net::Ipv6Addr::from(*a)),
        _ => false,
    }
}

fn read(f: &[u8], off: usize, n: usize) -> Result<&[u8], ()> {
    f.get(off..off + n).ok_or(())
}

fn u16_at(f: &[u8], off: usize) -> Result<u16, ()> {
    let b = read(f, off, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// The reference model: the verdict and (shard, reason) the program counts.
fn model(f: &[u8], r: &Rules) -> (u32, u32, Reason) {
    match model_inner(f, r) {
        Ok(v) => v,
        Err(()) => (XDP_PASS, 0, Reason::PassMalformed),
    }
}

fn model_inner(f: &[u8], r: &Rules) -> Result<(u32, u32, Reason), ()> {
    let not_gateway = Ok((XDP_PASS, 0, Reason::PassNotGateway));
    let mut off = 14;
    let mut ethertype = u16_at(f, 12)?;
    if ethertype == 0x88a8 || ethertype == 0x8100 {
        ethertype = u16_at(f, off + 2)?;
        off += 4;
        if ethertype == 0x8100 {
            ethertype = u16_at(f, off + 2)?;
            off += 4;
        }
    }
    let (proto, src, dst, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(read(f, off, 1)?[0] & 0x0f) * 4;
            if ihl < 20 {
                return Err(());
            }
            if u16_at(f, off + 6)? & 0x1fff != 0 {
                return not_gateway;
            }
            let proto = read(f, off + 9, 1)?[0];
            let src = v4(read(f, off + 12, 4)?.try_into().unwrap());
            let dst = v4(read(f, off + 16, 4)?.try_into().unwrap());
            (proto, src, dst, off + ihl)
        }
        0x86dd => {
            let proto = read(f, off + 6, 1)?[0];
            let src: [u8; 16] = read(f, off + 8, 16)?.try_into().unwrap();
            let dst: [u8; 16] = read(f, off + 24, 16)?.try_into().unwrap();
            (proto, src, dst, off + 40)
        }
        _ => return not_gateway,
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return not_gateway;
    }
    let dport = u16_at(f, l4 + 2)?;
    let listener = r
        .listeners
        .get(&ListenerKey::new(dst, dport, proto))
        .or_else(|| r.listeners.get(&ListenerKey::new([0; 16], dport, proto)));
    let Some(l) = listener else {
        return not_gateway;
    };
    let shard = l.shard;
    if l.flags & LISTENER_F_SOURCE_FILTER != 0 {
        let best = r
            .sources
            .iter()
            .filter(|(s, n, _)| *s == shard && contains(n, &src))
            .max_by_key(|(_, n, _)| match n {
                IpNet::V4(n) => 96 + n.prefix_len(),
                IpNet::V6(n) => n.prefix_len(),
            });
        if !matches!(best, Some((_, _, true))) {
            return Ok((XDP_DROP, shard, Reason::DropSourceDenied));
        }
    }
    if r.penalties
        .iter()
        .any(|(s, n)| *s == shard && contains(n, &src))
    {
        return Ok((XDP_DROP, shard, Reason::DropPenalty));
    }
    if proto == PROTO_TCP && l.flags & LISTENER_F_PARKED != 0 {
        let flags = read(f, l4 + 13, 1)?[0];
        if flags & 0x12 == 0x02 {
            return Ok((XDP_DROP, shard, Reason::DropRestarting));
        }
    }
    Ok((XDP_PASS, shard, Reason::PassAllowed))
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A well-formed frame for the given flow; `vlan`: 0 none, 1 802.1Q,
/// 2 802.1ad+802.1Q, 3 802.1Q+802.1Q.
#[allow(clippy::too_many_arguments)]
fn frame(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    dport: u16,
    tcp_flags: u8,
    vlan: u8,
    ihl_words: u8,
    frag: u16,
) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let push_tag = |f: &mut Vec<u8>, tpid: u16| {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x0a]);
    };
    match vlan {
        1 => push_tag(&mut f, 0x8100),
        2 => {
            push_tag(&mut f, 0x88a8);
            push_tag(&mut f, 0x8100);
        }
        3 => {
            push_tag(&mut f, 0x8100);
            push_tag(&mut f, 0x8100);
        }
        _ => {}
    }
    let l4 = {
        let mut l4 = vec![0u8; if proto == PROTO_UDP { 8 } else { 20 }];
        l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        if proto == PROTO_TCP {
            l4[12] = 5 << 4;
            l4[13] = tcp_flags;
        }
        l4
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let hl = usize::from(ihl_words) * 4;
            let mut ip = vec![0u8; hl.max(20)];
            ip[0] = 0x40 | ihl_words;
            ip[6..8].copy_from_slice(&frag.to_be_bytes());
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            f.extend_from_slice(&ip);
        }
        (s, d) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&addr16(s));
            ip[24..40].copy_from_slice(&addr16(d));
            f.extend_from_slice(&ip);
        }
    }
    f.extend_from_slice(&l4);
    f
}

/// A cgroup of our own for the connect hooks (removed on drop), so the
/// test never attaches to the host's root cgroup.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Loads the datapath in a network namespace of this thread's own, with
/// the rules programmed, and runs `f` with it.
fn with_datapath(test: &str, f: impl FnOnce(&mut KernelDatapath, &Rules) + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            let root = sluice::config::identity::cgroup2_root().expect("a cgroup v2 hierarchy");
            let cg = Cgroup(root.join(format!("sluice-{test}-{}", std::process::id())));
            std::fs::create_dir_all(&cg.0).expect("create a test cgroup");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _guard = rt.enter();
            let opts = KernelOptions {
                log_level: 1,
                bpffs: None,
                cgroup: Some(cg.0.clone()),
                ..KernelOptions::default()
            };
            let dp = KernelDatapath::load(&opts).expect("the eBPF datapath loads");
            let dp = Arc::new(Mutex::new(dp));
            let r = rules();
            let mut desired = KernelDesired {
                listeners: r.listeners.clone(),
                ..KernelDesired::default()
            };
            for (shard, n, allow) in &r.sources {
                desired.source_rules.insert(
                    SourceRule::new(*shard, *n),
                    if *allow { SOURCE_ALLOW } else { SOURCE_DENY },
                );
            }
            reconcile(&mut dp.lock().unwrap().maps, &desired).expect("maps programmed");
            let mut penalties = KernelPenalties(dp.clone());
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid timespec pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
            let in_an_hour = (now.tv_sec as u64 + 3600) * 1_000_000_000;
            for (shard, n) in &r.penalties {
                penalties
                    .put(*shard, *n, in_an_hour)
                    .expect("penalty entry");
            }
            // A penalty that already expired is no penalty.
            penalties
                .put(3, net("203.0.113.0/24"), 1)
                .expect("expired penalty entry");
            drop(penalties);
            let mut dp = Arc::try_unwrap(dp)
                .unwrap_or_else(|_| panic!("the penalty writer is gone"))
                .into_inner()
                .unwrap();
            f(&mut dp, &r);
            drop(dp);
            drop(cg);
        });
    });
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

#[test]
fn known_frames_get_the_designed_verdicts() {
    if !privileged("known_frames_get_the_designed_verdicts") {
        return;
    }
    with_datapath("xdp-known", |dp, r| {
        let cases: Vec<(&str, Vec<u8>, u32)> = vec![
            (
                "allowed source to a filtered listener",
                frame(
                    ip("192.0.2.10"),
                    ip("10.0.0.1"),
                    PROTO_TCP,
                    80,
                    SYN,
                    0,
                    5,
                    0,
                ),
                XDP_PASS,
            ),
            (
                "denied by the longer deny prefix",
                frame(
                    ip("192.0.2.200"),
                    ip("10.0.0.1"),
                    PROTO_TCP,
                    80,
                    SYN,
                    0,
                    5,
                    0,
                ),
                XDP_DROP,
            ),
            (
                "no allow rule matches",
                frame(
                    ip("203.0.113.9"),
                    ip("10.0.0.1"),
                    PROTO_TCP,
                    80,
                    SYN,
                    1,
                    5,
                    0,
                ),
                XDP_DROP,
            ),
            (
                "allowed IPv6 source",
                frame(
                    ip("2001:db8:aa::5"),
                    ip("2001:db8::1"),
                    PROTO_TCP,
                    443,
                    ACK,
                    2,
                    5,
                    0,
                ),
                XDP_PASS,
            ),
            (
                "in the penalty box",
                frame(ip("192.0.2.7"), ip("10.0.0.1"), PROTO_TCP, 80, ACK, 0, 5, 0),
                XDP_DROP,
            ),
            (
                "penalty prefix on a UDP listener",
                frame(
                    ip("198.51.100.77"),
                    ip("10.0.0.3"),
                    PROTO_UDP,
                    53,
                    0,
                    3,
                    5,
                    0,
                ),
                XDP_DROP,
            ),
            (
                "expired penalty",
                frame(ip("203.0.113.1"), ip("10.0.0.3"), PROTO_UDP, 53, 0, 0, 5, 0),
                XDP_PASS,
            ),
            (
                "wildcard listener, any address",
                frame(
                    ip("203.0.113.1"),
                    ip("172.16.0.9"),
                    PROTO_TCP,
                    8080,
                    SYN,
                    0,
                    7,
                    0,
                ),
                XDP_PASS,
            ),
            (
                "SYN to a parked listener",
                frame(
                    ip("203.0.113.1"),
                    ip("10.0.0.4"),
                    PROTO_TCP,
                    80,
                    SYN,
                    0,
                    5,
                    0,
                ),
                XDP_DROP,
            ),
            (
                "established traffic to a parked listener",
                frame(
                    ip("203.0.113.1"),
                    ip("10.0.0.4"),
                    PROTO_TCP,
                    80,
                    SYN | ACK,
                    0,
                    5,
                    0,
                ),
                XDP_PASS,
            ),
            (
                "not a gateway port",
                frame(
                    ip("192.0.2.200"),
                    ip("10.0.0.1"),
                    PROTO_TCP,
                    22,
                    SYN,
                    0,
                    5,
                    0,
                ),
                XDP_PASS,
            ),
            (
                "non-first fragment",
                frame(
                    ip("192.0.2.200"),
                    ip("10.0.0.1"),
                    PROTO_TCP,
                    80,
                    SYN,
                    0,
                    5,
                    0x0010,
                ),
                XDP_PASS,
            ),
            (
                "IHL below 5 is malformed",
                frame(
                    ip("192.0.2.200"),
                    ip("10.0.0.1"),
                    PROTO_TCP,
                    80,
                    SYN,
                    0,
                    4,
                    0,
                ),
                XDP_PASS,
            ),
        ];
        for (what, f, want) in &cases {
            let got = dp.run_xdp(f).expect("test run");
            assert_eq!(got, *want, "{what}");
            assert_eq!(model(f, r).0, *want, "the model agrees: {what}");
        }
    });
}

#[test]
fn generated_and_mutated_frames_are_judged_as_the_model_judges_them() {
    if !privileged("generated_and_mutated_frames_are_judged_as_the_model_judges_them") {
        return;
    }
    const FRAMES: usize = 30_000;
    let seed = std::env::var("XDP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_1234u64);
    with_datapath("xdp-fuzz", |dp, r| {
        let shards = [1, 2, 3, 4];
        let before = dp.counters(&shards);
        let mut rng = Rng(seed);
        let sources = [
            "192.0.2.10",
            "192.0.2.200",
            "192.0.2.7",
            "198.51.100.3",
            "203.0.113.1",
            "2001:db8:aa::1",
            "2001:db8:bad::9",
            "2001:db8:ff::1",
            "10.0.0.1",
        ];
        let v4_dsts = ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.4", "172.16.0.1"];
        let v6_dsts = ["2001:db8::1", "2001:db8::2"];
        let ports = [80u16, 80, 443, 8080, 53, 22, 0, 65535];
        let mut expected: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        let mut verdicts: BTreeMap<u32, u64> = BTreeMap::new();
        for i in 0..FRAMES {
            let src = ip(rng.pick::<&str>(&sources));
            let dst = match src {
                IpAddr::V4(_) => ip(rng.pick::<&str>(&v4_dsts)),
                IpAddr::V6(_) => ip(rng.pick::<&str>(&v6_dsts)),
            };
            let proto = if rng.below(4) == 0 {
                PROTO_UDP
            } else {
                PROTO_TCP
            };
            let flags = *rng.pick(&[SYN, SYN | ACK, ACK, 0xff, 0]);
            let ihl = *rng.pick(&[5u8, 5, 5, 6, 15, 4, 0]);
            let frag = *rng.pick(&[0u16, 0, 0, 0x4000, 0x2001, 0x1fff]);
            let vlan = rng.below(4) as u8;
            let mut f = frame(src, dst, proto, *rng.pick(&ports), flags, vlan, ihl, frag);
            // Mutations: flip bytes, or cut the frame anywhere past the
            // Ethernet header (the kernel wants at least that).
            match rng.below(4) {
                0 => {
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(f.len());
                        f[at] ^= (rng.next() as u8) | 1;
                    }
                }
                1 => {
                    let keep = 14 + rng.below(f.len() - 13);
                    f.truncate(keep);
                }
                2 => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                _ => {}
            }
            let got = dp.run_xdp(&f).expect("test run");
            let (want, shard, reason) = model(&f, r);
            assert_eq!(
                got, want,
                "frame {i} (seed {seed:#x}): kernel {got}, model {want} ({reason:?}); frame {f:02x?}"
            );
            *expected.entry((shard, reason as u32)).or_default() += 1;
            *verdicts.entry(got).or_default() += 1;
        }
        let after = dp.counters(&shards);
        for ((s, reason, a), (_, _, b)) in after.iter().zip(&before) {
            let want = expected.get(&(*s, *reason as u32)).copied().unwrap_or(0);
            assert_eq!(a - b, want, "counter shard {s} {reason:?}");
        }
        let total: u64 = expected.values().sum();
        assert_eq!(total, FRAMES as u64);
        // The generator reaches every branch, not just the easy ones.
        for reason in [
            Reason::PassNotGateway,
            Reason::PassAllowed,
            Reason::DropSourceDenied,
            Reason::PassMalformed,
            Reason::DropRestarting,
            Reason::DropPenalty,
        ] {
            let n: u64 = expected
                .iter()
                .filter(|((_, r), _)| *r == reason as u32)
                .map(|(_, n)| n)
                .sum();
            assert!(n >= 50, "{reason:?} reached only {n} times");
        }
        eprintln!("xdp fuzz: {FRAMES} frames, seed {seed:#x}, verdicts {verdicts:?}");
    });
}
