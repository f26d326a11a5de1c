//! The penalty box's kernel map (`PENALTY`), behind the rate-limit
//! service's [`PenaltyMap`] trait: (shard, source prefix) → expiry in
//! `bpf_ktime_get_ns` nanoseconds, the same LPM key layout as the source
//! rules.
use std::sync::{Arc, Mutex};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;

use super::{loader::is_enoent, KernelDatapath, SourceRule};
use crate::policy::ratelimit::penalty::PenaltyMap;

/// The agent's kernel datapath seen as the penalty map.
pub struct KernelPenalties(pub Arc<Mutex<KernelDatapath>>);

fn key(shard: u32, net: IpNet) -> Key<sluice_common::SourceRuleKey> {
    let (len, data) = SourceRule::new(shard, net).key();
    Key::new(len, data)
}

impl PenaltyMap for KernelPenalties {
    fn put(&mut self, shard: u32, net: IpNet, expires_ns: u64) -> Result<(), String> {
        let mut k = self.0.lock().map_err(|_| "kernel lock poisoned")?;
        k.penalty
            .insert(&key(shard, net), expires_ns, 0)
            .map_err(|e| format!("PENALTY insert {net} (shard {shard}): {e}"))
    }

    fn delete(&mut self, shard: u32, net: IpNet) -> Result<(), String> {
        let mut k = self.0.lock().map_err(|_| "kernel lock poisoned")?;
        match k.penalty.remove(&key(shard, net)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(e) => Err(format!("PENALTY delete {net} (shard {shard}): {e}")),
        }
    }

    fn dump(&self) -> Result<Vec<(u32, IpNet, u64)>, String> {
        let k = self.0.lock().map_err(|_| "kernel lock poisoned")?;
        let mut out = Vec::new();
        for entry in k.penalty.iter() {
            let (key, expires) = entry.map_err(|e| format!("PENALTY dump: {e}"))?;
            let rule = SourceRule::from_key(key.prefix_len(), &key.data());
            let net = prefix_net(rule.addr, rule.prefix);
            out.push((rule.shard, net, expires));
        }
        Ok(out)
    }
}

/// A 16-byte key prefix back to a network (IPv4-mapped prefixes as IPv4).
fn prefix_net(addr: [u8; 16], prefix: u8) -> IpNet {
    let v6 = std::net::Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) if prefix >= 96 => IpNet::new(v4.into(), prefix - 96).expect("valid length"),
        _ => IpNet::new(v6.into(), prefix.min(128)).expect("valid length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_to_networks() {
        for (shard, net) in [
            (3u32, "10.1.2.0/24"),
            (9, "fd00:1::/64"),
            (1, "192.0.2.7/32"),
        ] {
            let net: IpNet = net.parse().unwrap();
            let (len, data) = SourceRule::new(shard, net).key();
            let r = SourceRule::from_key(len, &data);
            assert_eq!(r.shard, shard);
            assert_eq!(prefix_net(r.addr, r.prefix), net);
        }
    }
}
