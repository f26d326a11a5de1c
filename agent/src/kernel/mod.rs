//! The eBPF datapath as seen from user space: desired map contents, a narrow
//! trait over the maps (with a fake for tests), the reconciler that converges
//! the maps, and the loader that loads and attaches the programs.
mod aya_maps;
mod fast_path;
mod loader;
pub mod maps;
mod penalty;
pub mod pins;
pub mod port_ranges;
mod reconcile;
pub mod retry;

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use sluice_common::{source_rule_prefix_len, ListenerKey, ListenerValue, SourceRuleKey};

pub use loader::{KernelDatapath, KernelOptions, SockmapPref, XdpAttachMode, XdpModePref};
pub use penalty::KernelPenalties;
pub use port_ranges::PortBlock;
pub use reconcile::{reconcile, ChangeKind, MapChange, ReconcileReport, ReconcileStats};

/// Maps whose capacity `--map-size NAME=N` may set.
pub const SIZABLE_MAPS: [&str; 9] = [
    "LISTENERS",
    "PORT_RANGES",
    "SOURCE_RULES",
    "SYN_BUDGET",
    "SOURCE_NS",
    "CGROUP_NS",
    "ADMISSION",
    "SOCK_PAIRS",
    "PENALTY",
];

/// Map contents the control plane wants. Compared against what the maps hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelDesired {
    pub listeners: BTreeMap<ListenerKey, ListenerValue>,
    /// Port ranges, as prefix-aligned blocks.
    pub port_ranges: BTreeMap<PortBlock, ListenerValue>,
    pub source_rules: BTreeMap<SourceRule, u32>,
    /// Source prefix (address, prefix length in the 128-bit space) → namespace id.
    pub source_namespaces: BTreeMap<([u8; 16], u8), u32>,
    /// cgroup id → namespace id.
    pub cgroup_namespaces: BTreeMap<u64, u32>,
    /// (shard, namespace id) pairs admitted.
    pub admissions: std::collections::BTreeSet<sluice_common::AdmitKey>,
}

impl KernelDesired {
    /// Entries per map (by map name), for occupancy reporting: the maps hold
    /// exactly these once reconciled (the drift check repairs differences).
    pub fn entries_by_map(&self) -> [(&'static str, usize); 6] {
        [
            ("LISTENERS", self.listeners.len()),
            ("PORT_RANGES", self.port_ranges.len()),
            ("SOURCE_RULES", self.source_rules.len()),
            ("SOURCE_NS", self.source_namespaces.len()),
            ("CGROUP_NS", self.cgroup_namespaces.len()),
            ("ADMISSION", self.admissions.len()),
        ]
    }
}

/// One LPM entry: shard + source prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRule {
    pub shard: u32,
    pub addr: [u8; 16],
    /// Prefix length in the 128-bit address space (IPv4 prefixes + 96).
    pub prefix: u8,
}

impl SourceRule {
    pub fn new(shard: u32, net: IpNet) -> Self {
        let (addr, prefix) = match net {
            IpNet::V4(n) => (addr16(IpAddr::V4(n.network())), 96 + n.prefix_len()),
            IpNet::V6(n) => (addr16(IpAddr::V6(n.network())), n.prefix_len()),
        };
        Self {
            shard,
            addr,
            prefix,
        }
    }

    pub fn key(&self) -> (u32, SourceRuleKey) {
        (
            source_rule_prefix_len(u32::from(self.prefix)),
            SourceRuleKey {
                shard_be: self.shard.to_be_bytes(),
                addr: self.addr,
            },
        )
    }

    pub fn from_key(prefix_len: u32, key: &SourceRuleKey) -> Self {
        Self {
            shard: u32::from_be_bytes(key.shard_be),
            addr: key.addr,
            prefix: prefix_len.saturating_sub(32) as u8,
        }
    }
}

/// A prefix in the 16-byte key space: IPv4 prefixes are shifted by 96 bits.
pub fn prefix16(net: IpNet) -> ([u8; 16], u8) {
    match net {
        IpNet::V4(n) => (addr16(IpAddr::V4(n.network())), 96 + n.prefix_len()),
        IpNet::V6(n) => (addr16(IpAddr::V6(n.network())), n.prefix_len()),
    }
}

/// The 16-byte form every map key uses (IPv4 mapped into IPv6).
pub fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => sluice_common::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Errors of the eBPF datapath.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("loading the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {program}: {action}: {source}")]
    Program {
        program: &'static str,
        action: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {map}: {action}: {source}")]
    Map {
        map: &'static str,
        action: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "eBPF map {map} is full; raise its size with --map-size {map}=N (a pinned map keeps \
         the size it was created with until the last agent using it stops)"
    )]
    MapFull { map: &'static str },
    #[error("eBPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("interface {0:?} does not exist in this network namespace")]
    NoSuchInterface(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "eBPF needs root or CAP_BPF + CAP_NET_ADMIN (+ CAP_SYS_ADMIN for sk_lookup); running as uid {0}"
    )]
    NotPrivileged(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_rule_round_trips_through_the_lpm_key() {
        let r = SourceRule::new(7, "10.1.0.0/16".parse().unwrap());
        assert_eq!(r.prefix, 112);
        let (len, key) = r.key();
        assert_eq!(len, 32 + 112);
        assert_eq!(SourceRule::from_key(len, &key), r);
        let r6 = SourceRule::new(7, "fd00::/8".parse().unwrap());
        assert_eq!(r6.prefix, 8);
    }
}
