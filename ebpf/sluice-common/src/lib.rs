//! Map key/value types shared by the eBPF programs (`sluice-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of padding the kernel could
//! misread: the byte layout *is* the map ABI. Addresses are always 16 bytes;
//! IPv4 uses the IPv4-mapped form `::ffff:a.b.c.d` so one key type serves both
//! families. The all-zero address is the wildcard ("any local address").
#![no_std]

/// Upper bound on shards (Gateways) one agent serves; sizes the SockMap and counters.
pub const MAX_SHARDS: u32 = 1024;
/// Default capacity of the listener map.
pub const DEFAULT_MAX_LISTENERS: u32 = 4096;
/// Default capacity of the source-CIDR LPM trie.
pub const DEFAULT_MAX_SOURCE_RULES: u32 = 16384;

/// IP protocol numbers as they appear in packets and in `bpf_sk_lookup.protocol`.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Why `xdp_ingress` let a packet through or dropped it. Index into the counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not addressed to a gateway listener: passed untouched.
    PassNotGateway = 0,
    /// Gateway traffic whose source is allowed: passed to the stack.
    PassAllowed = 1,
    /// Gateway traffic from a source outside the shard's allow list (or in its deny list).
    DropSourceDenied = 2,
    /// SYN over the per-source budget.
    DropSynBudget = 3,
    /// Frame too short or malformed headers for its declared protocol: passed to the
    /// kernel, which owns the decision about broken packets.
    PassMalformed = 4,
    /// sk_lookup: the source address belongs to a namespace the shard does not admit.
    DenyNamespaceLookup = 5,
    /// cgroup connect4/6: a local process of a namespace the shard does not admit (EPERM).
    DenyNamespaceConnect = 6,
    /// SYN to a gateway port while its agent restarts (`LISTENER_F_PARKED`):
    /// dropped so that the client retransmits it.
    DropRestarting = 7,
    /// The source prefix is in the penalty box (`PENALTY`) until its expiry.
    DropPenalty = 8,
}

/// Number of reason slots per shard in the counter array (room to grow).
pub const REASON_SLOTS: u32 = 16;

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::PassNotGateway,
        Reason::PassAllowed,
        Reason::DropSourceDenied,
        Reason::DropSynBudget,
        Reason::PassMalformed,
        Reason::DenyNamespaceLookup,
        Reason::DenyNamespaceConnect,
        Reason::DropRestarting,
        Reason::DropPenalty,
    ];

    /// Stable label used for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Reason::PassNotGateway => "pass_not_gateway",
            Reason::PassAllowed => "pass_allowed",
            Reason::DropSourceDenied => "drop_source_denied",
            Reason::DropSynBudget => "drop_syn_budget",
            Reason::PassMalformed => "pass_malformed",
            Reason::DenyNamespaceLookup => "deny_namespace_lookup",
            Reason::DenyNamespaceConnect => "deny_namespace_connect",
            Reason::DropRestarting => "drop_restarting",
            // As the rate-limit docs and dashboards name it.
            Reason::DropPenalty => "penalty",
        }
    }
}

/// Index of a (shard, reason) counter in the `COUNTERS` per-CPU array.
/// Shard 0 is reserved for traffic that matched no shard.
#[inline(always)]
pub const fn counter_index(shard: u32, reason: Reason) -> u32 {
    shard * REASON_SLOTS + reason as u32
}

/// Total entries of the `COUNTERS` array.
pub const COUNTER_ENTRIES: u32 = MAX_SHARDS * REASON_SLOTS;

/// Index of a shard's listening socket in the `SHARD_SOCKETS` SockMap.
#[inline(always)]
pub const fn socket_index(shard: u32, ipv6: bool) -> u32 {
    shard * 2 + ipv6 as u32
}

/// A gateway listener: destination address, port (host byte order) and IP protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl ListenerKey {
    pub const fn new(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }

    /// The same port and protocol on any address.
    pub const fn wildcard(&self) -> Self {
        Self::new([0; 16], self.port, self.proto)
    }
}

/// What a listener belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerValue {
    /// Shard id, `1..MAX_SHARDS`.
    pub shard: u32,
    /// `LISTENER_F_*` bits.
    pub flags: u32,
    /// New TCP connections (SYNs) per second allowed per source address; 0: unlimited.
    pub syn_rate: u32,
    /// Bucket size: SYNs a source may send in a burst before the rate applies.
    pub syn_burst: u32,
}

impl ListenerValue {
    pub const fn new(shard: u32, flags: u32) -> Self {
        Self {
            shard,
            flags,
            syn_rate: 0,
            syn_burst: 0,
        }
    }
}

/// Default capacity of the per-source SYN budget LRU.
pub const DEFAULT_MAX_SYN_SOURCES: u32 = 65536;

/// Key of a SYN budget: one bucket per (shard, source address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SynKey {
    pub shard: u32,
    pub addr: [u8; 16],
}

/// Token bucket state. Tokens are kept in thousandths so that slow rates refill
/// smoothly; `last_ns` is `bpf_ktime_get_ns` at the last update.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SynBucket {
    pub tokens_milli: u64,
    pub last_ns: u64,
}

/// Refills and takes one token. Returns the new bucket and whether the SYN may pass.
/// Pure, so user space tests the arithmetic the kernel runs.
#[inline(always)]
pub const fn syn_take(bucket: SynBucket, now_ns: u64, rate: u32, burst: u32) -> (SynBucket, bool) {
    let cap = burst as u64 * 1000;
    let mut elapsed = now_ns.saturating_sub(bucket.last_ns);
    // Bound the product below: anything past 10 s refills a full bucket anyway
    // for every rate and burst a u32 can express.
    if elapsed > 10_000_000_000 {
        elapsed = 10_000_000_000;
    }
    let refill = elapsed * rate as u64 / 1_000_000;
    // Frequent updates must not round slow refills away: the clock only moves
    // on once at least one thousandth of a token was credited.
    let last_ns = if refill > 0 { now_ns } else { bucket.last_ns };
    let mut tokens = bucket.tokens_milli + refill;
    if tokens > cap {
        tokens = cap;
    }
    let pass = tokens >= 1000;
    if pass {
        tokens -= 1000;
    }
    (
        SynBucket {
            tokens_milli: tokens,
            last_ns,
        },
        pass,
    )
}

/// The shard has source rules: a source matching no allow rule is dropped.
pub const LISTENER_F_SOURCE_FILTER: u32 = 1;
/// The shard admits only some namespaces (`ADMISSION`); unknown sources are refused.
pub const LISTENER_F_NS_ADMISSION: u32 = 2;
/// The shard's agent stopped and left the datapath for the next one
/// (`--keep-datapath-on-exit`): `xdp_ingress` drops new connections' SYNs so
/// clients retransmit them once the next agent's socket is in place, instead
/// of being refused. The next agent's first reconcile clears it.
pub const LISTENER_F_PARKED: u32 = 4;

/// Default capacities of the namespace identity maps.
pub const DEFAULT_MAX_NS_SOURCES: u32 = 16384;
pub const DEFAULT_MAX_CGROUPS: u32 = 65536;
pub const DEFAULT_MAX_ADMISSIONS: u32 = 16384;

/// A namespace admitted to a shard. Namespace ids are assigned by the agent;
/// 0 means "no known namespace".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdmitKey {
    pub shard: u32,
    pub namespace: u32,
}

/// LPM trie data for per-shard source rules: the shard id (big endian, so it is
/// the leading 32 bits of the prefix) followed by the 16-byte source address.
/// The full prefix length of a lookup is `32 + 128`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceRuleKey {
    pub shard_be: [u8; 4],
    pub addr: [u8; 16],
}

/// Prefix length of an LPM key covering a shard and an address prefix of
/// `addr_prefix_len` bits (in the 128-bit address space).
pub const fn source_rule_prefix_len(addr_prefix_len: u32) -> u32 {
    32 + addr_prefix_len
}

/// Value of a source rule.
pub const SOURCE_ALLOW: u32 = 1;
pub const SOURCE_DENY: u32 = 2;

/// Default capacity of the penalty box map (`PENALTY`).
pub const DEFAULT_MAX_PENALTIES: u32 = 16384;

/// Whether a penalty entry (its expiry, `bpf_ktime_get_ns` nanoseconds)
/// still blocks at `now_ns`. Expired entries stay in the map until user
/// space sweeps them; the data path never has to.
#[inline(always)]
pub const fn penalty_active(expires_ns: u64, now_ns: u64) -> bool {
    now_ns < expires_ns
}

/// Default capacity of the port-range LPM trie (prefix-aligned blocks, not ranges:
/// a range of n ports takes at most 2·log2(n) blocks).
pub const DEFAULT_MAX_PORT_RANGES: u32 = 4096;

/// LPM trie data for port ranges served by one shard: protocol, destination
/// address (all-zero: any local address), destination port big endian. A
/// range is stored as prefix-aligned blocks: a block of 2^k ports is a prefix
/// of `port_range_prefix_len(16 - k)` bits. The trailing pad byte is never
/// part of a prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRangeKey {
    pub proto: u8,
    pub addr: [u8; 16],
    pub port_be: [u8; 2],
    pub _pad: u8,
}

impl PortRangeKey {
    pub const fn new(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            proto,
            addr,
            port_be: port.to_be_bytes(),
            _pad: 0,
        }
    }
}

/// Prefix length of a port-range key whose first `port_bits` port bits are fixed.
pub const fn port_range_prefix_len(port_bits: u32) -> u32 {
    8 + 128 + port_bits
}

/// IPv4 address in the IPv4-mapped IPv6 form used by every key.
#[inline(always)]
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// Default capacity of the sockmap fast path's socket hash (`SOCK_PAIRS`).
pub const DEFAULT_MAX_SOCK_PAIRS: u32 = 65536;

/// A TCP connection seen from one of its sockets, the key of `SOCK_PAIRS`.
/// Addresses in the 16-byte form of every key, ports in host byte order. The
/// socket at the other end of the same connection has the [`peer`](Self::peer) key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockPairKey {
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u32,
    pub remote_port: u32,
}

impl SockPairKey {
    /// The key of the socket at the other end of this connection.
    #[inline(always)]
    pub const fn peer(&self) -> Self {
        Self {
            local_addr: self.remote_addr,
            remote_addr: self.local_addr,
            local_port: self.remote_port,
            remote_port: self.local_port,
        }
    }

    /// Whether both ends of the connection are on this node, so that the
    /// fast path may hand payload from one socket to the other: both on
    /// loopback, or the same address at both ends (a local process dialling
    /// one of the node's own addresses).
    #[inline(always)]
    pub const fn is_node_local(&self) -> bool {
        is_loopback(&self.local_addr) && is_loopback(&self.remote_addr)
            || eq16(&self.local_addr, &self.remote_addr)
    }
}

#[inline(always)]
const fn eq16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// 127.0.0.0/8 (IPv4-mapped) or `::1`.
#[inline(always)]
pub const fn is_loopback(a: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 10 {
        if a[i] != 0 {
            return false;
        }
        i += 1;
    }
    if a[10] == 0xff && a[11] == 0xff {
        return a[12] == 127;
    }
    a[10] == 0 && a[11] == 0 && a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] == 1
}

/// Events of the sockmap fast path, indices into `FASTPATH_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastPathEvent {
    /// `sockops_track` put a node-local socket into `SOCK_PAIRS`.
    SocketTracked = 0,
    /// `sockops_track` could not insert a socket (map full, socket busy).
    TrackFailed = 1,
    /// `msg_redirect` handed a message straight to the peer socket.
    MessageRedirected = 2,
    /// `msg_redirect` found no peer socket: the message took the TCP stack.
    MessagePassed = 3,
}

/// Entries of the `FASTPATH_COUNTERS` per-CPU array.
pub const FASTPATH_COUNTER_ENTRIES: u32 = 4;

impl FastPathEvent {
    pub const ALL: [FastPathEvent; 4] = [
        FastPathEvent::SocketTracked,
        FastPathEvent::TrackFailed,
        FastPathEvent::MessageRedirected,
        FastPathEvent::MessagePassed,
    ];

    /// Stable label used for metrics.
    pub const fn label(self) -> &'static str {
        match self {
            FastPathEvent::SocketTracked => "socket_tracked",
            FastPathEvent::TrackFailed => "track_failed",
            FastPathEvent::MessageRedirected => "message_redirected",
            FastPathEvent::MessagePassed => "message_passed",
        }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all are repr(C), Copy, contain only integers/byte arrays, and have no
    // implicit padding (checked by the size assertions below).
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for ListenerValue {}
    unsafe impl aya::Pod for SourceRuleKey {}
    unsafe impl aya::Pod for SynKey {}
    unsafe impl aya::Pod for AdmitKey {}
    unsafe impl aya::Pod for SynBucket {}
    unsafe impl aya::Pod for PortRangeKey {}
    unsafe impl aya::Pod for SockPairKey {}

    const _: () = assert!(core::mem::size_of::<ListenerKey>() == 20);
    const _: () = assert!(core::mem::size_of::<ListenerValue>() == 16);
    const _: () = assert!(core::mem::size_of::<SynKey>() == 20);
    const _: () = assert!(core::mem::size_of::<SynBucket>() == 16);
    const _: () = assert!(core::mem::size_of::<SourceRuleKey>() == 20);
    const _: () = assert!(core::mem::size_of::<PortRangeKey>() == 20);
    const _: () = assert!(core::mem::size_of::<SockPairKey>() == 40);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_socket_indices_do_not_collide() {
        assert_eq!(counter_index(0, Reason::PassNotGateway), 0);
        assert_eq!(counter_index(1, Reason::PassNotGateway), REASON_SLOTS);
        assert!(counter_index(MAX_SHARDS - 1, Reason::PassMalformed) < COUNTER_ENTRIES);
        assert_ne!(socket_index(3, false), socket_index(3, true));
        assert_eq!(socket_index(3, true) + 1, socket_index(4, false));
    }

    #[test]
    fn syn_bucket_refills_at_rate_and_caps_at_burst() {
        let full = SynBucket {
            tokens_milli: 2000,
            last_ns: 0,
        };
        let (b, ok1) = syn_take(full, 0, 1, 2);
        let (b, ok2) = syn_take(b, 1, 1, 2);
        let (b, ok3) = syn_take(b, 2, 1, 2);
        assert!(ok1 && ok2 && !ok3, "burst of 2 then empty");
        // Half a second at 1/s: half a token, still not enough.
        let (b, ok) = syn_take(b, 500_000_000, 1, 2);
        assert!(!ok);
        let (b, ok) = syn_take(b, 1_000_000_010, 1, 2);
        assert!(ok, "a full token after one second: {b:?}");
        // A long pause refills to the burst, not beyond.
        let (b, _) = syn_take(b, u64::MAX / 2, 1, 2);
        assert_eq!(b.tokens_milli, 1000);
    }

    #[test]
    fn sock_pair_peer_and_node_locality() {
        let lo = v4_mapped([127, 0, 0, 1]);
        let lo2 = v4_mapped([127, 0, 0, 2]);
        let node = v4_mapped([10, 77, 0, 2]);
        let other = v4_mapped([10, 77, 0, 1]);
        let key = |l, r| SockPairKey {
            local_addr: l,
            remote_addr: r,
            local_port: 40000,
            remote_port: 8080,
        };
        let k = key(lo, lo2);
        assert_eq!(k.peer().local_port, 8080);
        assert_eq!(k.peer().remote_addr, lo);
        assert_eq!(k.peer().peer(), k);
        assert!(k.is_node_local());
        assert!(key(node, node).is_node_local(), "own address at both ends");
        assert!(!key(node, other).is_node_local(), "remote peer");
        assert!(!key(lo, other).is_node_local());
        let mut v6lo = [0u8; 16];
        v6lo[15] = 1;
        assert!(key(v6lo, v6lo).is_node_local());
        assert!(is_loopback(&v6lo) && is_loopback(&lo2) && !is_loopback(&node));
        assert!(!is_loopback(&[0; 16]), "the wildcard is not loopback");
    }

    #[test]
    fn penalties_expire_by_the_clock_alone() {
        assert!(penalty_active(2_000, 1_999));
        assert!(!penalty_active(2_000, 2_000));
        assert!(Reason::ALL.len() as u32 <= REASON_SLOTS);
        assert_eq!(Reason::DropPenalty.label(), "penalty");
    }

    #[test]
    fn v4_mapped_layout() {
        let a = v4_mapped([10, 1, 2, 3]);
        assert_eq!(&a[10..], &[0xff, 0xff, 10, 1, 2, 3]);
        assert_eq!(ListenerKey::new(a, 80, PROTO_TCP).wildcard().addr, [0; 16]);
    }
}
