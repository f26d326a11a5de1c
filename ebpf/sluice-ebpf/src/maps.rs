//! Maps shared by all programs in the object. Names are the ABI with user space
//! (`agent/src/datapath/maps.rs` opens them by these names).
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SockHash, SockMap},
};
use sluice_common::{
    port_range_prefix_len, AdmitKey, FastPathEvent, ListenerKey, ListenerValue, PortRangeKey,
    SockPairKey, SourceRuleKey, SynBucket, SynKey, COUNTER_ENTRIES, DEFAULT_MAX_ADMISSIONS,
    DEFAULT_MAX_CGROUPS, DEFAULT_MAX_LISTENERS, DEFAULT_MAX_NS_SOURCES, DEFAULT_MAX_PENALTIES,
    DEFAULT_MAX_PORT_RANGES, DEFAULT_MAX_SOCK_PAIRS, DEFAULT_MAX_SOURCE_RULES,
    DEFAULT_MAX_SYN_SOURCES, FASTPATH_COUNTER_ENTRIES, MAX_SHARDS,
};

/// (address, port, proto) → shard. Address all-zero = any local address.
#[map]
pub static LISTENERS: HashMap<ListenerKey, ListenerValue> =
    HashMap::with_max_entries(DEFAULT_MAX_LISTENERS, 0);

/// (proto, address, port block) → shard: port ranges as prefix-aligned blocks.
/// Consulted after an exact `LISTENERS` miss on the same address.
#[map]
pub static PORT_RANGES: LpmTrie<PortRangeKey, ListenerValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PORT_RANGES, 0);

/// (shard, source prefix) → SOURCE_ALLOW / SOURCE_DENY; longest prefix wins.
#[map]
pub static SOURCE_RULES: LpmTrie<SourceRuleKey, u32> =
    LpmTrie::with_max_entries(DEFAULT_MAX_SOURCE_RULES, 0);

/// The penalty box: (shard, source prefix) → expiry (`bpf_ktime_get_ns`
/// nanoseconds). Written by user space when a source was refused too often;
/// an expired entry no longer drops, whether or not it was removed yet.
#[map]
pub static PENALTY: LpmTrie<SourceRuleKey, u64> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PENALTIES, 0);

/// Per-(shard, source) SYN token buckets. LRU: a flood of spoofed sources
/// evicts old buckets instead of failing inserts.
#[map]
pub static SYN_BUDGET: LruHashMap<SynKey, SynBucket> =
    LruHashMap::with_max_entries(DEFAULT_MAX_SYN_SOURCES, 0);

/// Listening sockets of the shards at `socket_index(shard, ipv6)`.
#[map]
pub static SHARD_SOCKETS: SockMap = SockMap::with_max_entries(MAX_SHARDS * 2, 0);

/// Source address prefix → namespace id (longest prefix wins).
#[map]
pub static SOURCE_NS: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_MAX_NS_SOURCES, 0);

/// cgroup id (cgroup v2 inode) → namespace id, for local processes.
#[map]
pub static CGROUP_NS: HashMap<u64, u32> = HashMap::with_max_entries(DEFAULT_MAX_CGROUPS, 0);

/// (shard, namespace) pairs that may connect; checked when the listener has
/// `LISTENER_F_NS_ADMISSION`.
#[map]
pub static ADMISSION: HashMap<AdmitKey, u8> = HashMap::with_max_entries(DEFAULT_MAX_ADMISSIONS, 0);

#[inline(always)]
pub fn source_namespace(addr: &[u8; 16]) -> u32 {
    let key = aya_ebpf::maps::lpm_trie::Key::new(128, *addr);
    SOURCE_NS.get(&key).copied().unwrap_or(0)
}

#[inline(always)]
pub fn admitted(shard: u32, namespace: u32) -> bool {
    namespace != 0 && unsafe { ADMISSION.get(&AdmitKey { shard, namespace }) }.is_some()
}

/// Pid of the agent that owns the pinned state. No program reads it: a
/// restarting agent writes its pid, and the agent that stops checks it to tell
/// a hand-over (leave everything attached) from a final stop (clean up).
#[map]
pub static OWNER: Array<u32> = Array::with_max_entries(1, 0);

/// Packet counters at `counter_index(shard, reason)`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);

#[inline(always)]
pub fn count(shard: u32, reason: sluice_common::Reason) {
    if let Some(c) = COUNTERS.get_ptr_mut(sluice_common::counter_index(shard, reason)) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *c += 1 };
    }
}

/// Listener for a destination. The destination address is more specific than
/// the wildcard, and on the same address an exact port beats a port range:
/// exact (address, port), then a range on the address, then the wildcard
/// address with the exact port, then a range on the wildcard address.
#[inline(always)]
pub fn find_listener(key: &ListenerKey) -> Option<ListenerValue> {
    if let Some(v) = unsafe { LISTENERS.get(key) } {
        return Some(*v);
    }
    if let Some(v) = find_range(key.addr, key.port, key.proto) {
        return Some(v);
    }
    if let Some(v) = unsafe { LISTENERS.get(&key.wildcard()) } {
        return Some(*v);
    }
    find_range([0; 16], key.port, key.proto)
}

#[inline(always)]
fn find_range(addr: [u8; 16], port: u16, proto: u8) -> Option<ListenerValue> {
    let key = Key::new(
        port_range_prefix_len(16),
        PortRangeKey::new(addr, port, proto),
    );
    PORT_RANGES.get(&key).copied()
}

/// Node-local TCP sockets of the sockmap fast path, by connection 4-tuple as
/// each socket sees it. `msg_redirect` is attached to this map.
#[map]
pub static SOCK_PAIRS: SockHash<SockPairKey> =
    SockHash::with_max_entries(DEFAULT_MAX_SOCK_PAIRS, 0);

/// Fast path events at `FastPathEvent as u32`.
#[map]
pub static FASTPATH_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(FASTPATH_COUNTER_ENTRIES, 0);

#[inline(always)]
pub fn count_fast_path(event: FastPathEvent) {
    if let Some(c) = FASTPATH_COUNTERS.get_ptr_mut(event as u32) {
        // Per-CPU slot: no other writer.
        unsafe { *c += 1 };
    }
}
