//! Port ranges in the kernel: a range of destination ports is stored in the
//! `PORT_RANGES` LPM trie as the few prefix-aligned blocks that cover it
//! exactly, so one lookup with the full port answers for every port of every
//! range, whatever the number of ranges.
use sluice_common::{port_range_prefix_len, PortRangeKey};

/// One prefix-aligned block of ports on one destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortBlock {
    /// Destination address (16-byte form; all-zero: any local address).
    pub addr: [u8; 16],
    pub proto: u8,
    /// First port of the block (aligned to the block size).
    pub port: u16,
    /// Leading port bits that are fixed: the block holds `2^(16 - bits)` ports.
    pub bits: u8,
}

impl PortBlock {
    /// First and last port of the block.
    pub fn ports(&self) -> (u16, u16) {
        let size = 1u32 << (16 - u32::from(self.bits));
        (self.port, (u32::from(self.port) + size - 1) as u16)
    }

    pub fn key(&self) -> (u32, PortRangeKey) {
        (
            port_range_prefix_len(u32::from(self.bits)),
            PortRangeKey::new(self.addr, self.port, self.proto),
        )
    }

    pub fn from_key(prefix_len: u32, key: &PortRangeKey) -> Self {
        Self {
            addr: key.addr,
            proto: key.proto,
            port: u16::from_be_bytes(key.port_be),
            bits: prefix_len.saturating_sub(port_range_prefix_len(0)) as u8,
        }
    }
}

impl std::fmt::Display for PortBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, last) = self.ports();
        let addr = std::net::IpAddr::from(self.addr);
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
            a => a,
        };
        write!(f, "{addr} ports {first}-{last} proto {}", self.proto)
    }
}

/// The prefix-aligned blocks `(first port, fixed bits)` that cover
/// `first..=last` exactly, largest first from the low end. At most 30 blocks
/// for any range of 16-bit ports.
pub fn split(first: u16, last: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut start, end) = (u32::from(first), u32::from(last));
    while start <= end {
        // The largest block aligned at `start` that does not pass `end`.
        let mut size = if start == 0 {
            1 << 16
        } else {
            1 << start.trailing_zeros().min(16)
        };
        while start + size - 1 > end {
            size >>= 1;
        }
        out.push((start as u16, (16 - size.trailing_zeros()) as u8));
        start += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(blocks: &[(u16, u8)]) -> Vec<u32> {
        let mut ports: Vec<u32> = blocks
            .iter()
            .flat_map(|&(p, bits)| {
                let size = 1u32 << (16 - u32::from(bits));
                assert_eq!(u32::from(p) % size, 0, "block {p}/{bits} not aligned");
                u32::from(p)..u32::from(p) + size
            })
            .collect();
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n, "blocks overlap: {blocks:?}");
        ports
    }

    #[test]
    fn splits_a_range_into_aligned_blocks_covering_it_exactly() {
        assert_eq!(split(31000, 31000), vec![(31000, 16)]);
        assert_eq!(split(0, 65535), vec![(0, 0)]);
        assert_eq!(split(30000, 30001), vec![(30000, 15)]);
        assert_eq!(split(30001, 30002), vec![(30001, 16), (30002, 16)]);
        // The NodePort range: a handful of blocks, not 2,768 entries.
        assert_eq!(
            split(30000, 32767),
            vec![(30000, 12), (30016, 10), (30080, 9), (30208, 7), (30720, 5)]
        );
        for (first, last) in [
            (30000, 30100),
            (30000, 32767),
            (1, 65535),
            (1, 1),
            (65535, 65535),
            (1023, 1025),
            (8080, 8089),
        ] {
            let blocks = split(first, last);
            assert!(
                blocks.len() <= 30,
                "{first}-{last}: {} blocks",
                blocks.len()
            );
            assert_eq!(
                covered(&blocks),
                (u32::from(first)..=u32::from(last)).collect::<Vec<_>>(),
                "{first}-{last}"
            );
        }
    }

    #[test]
    fn block_round_trips_through_the_lpm_key() {
        let b = PortBlock {
            addr: sluice_common::v4_mapped([10, 0, 0, 1]),
            proto: sluice_common::PROTO_TCP,
            port: 30016,
            bits: 12,
        };
        assert_eq!(b.ports(), (30016, 30031));
        let (len, key) = b.key();
        assert_eq!(len, 8 + 128 + 12);
        assert_eq!(key.port_be, 30016u16.to_be_bytes());
        assert_eq!(PortBlock::from_key(len, &key), b);
        assert_eq!(b.to_string(), "10.0.0.1 ports 30016-30031 proto 6");
    }
}
