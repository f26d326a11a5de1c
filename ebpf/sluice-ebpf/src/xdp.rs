//! `xdp_ingress`: admission of gateway traffic at the NIC.
//!
//! Parses Ethernet (with up to two VLAN tags), IPv4/IPv6 and the TCP/UDP
//! destination port, looks the destination up in `LISTENERS`, and applies the
//! shard's source rules. Everything that is not addressed to a gateway
//! listener passes untouched.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use sluice_common::{
    penalty_active, syn_take, v4_mapped, ListenerKey, ListenerValue, Reason, SourceRuleKey,
    SynBucket, SynKey, LISTENER_F_PARKED, LISTENER_F_SOURCE_FILTER, PROTO_TCP, PROTO_UDP,
    SOURCE_ALLOW,
};

use crate::{
    maps::{count, find_listener, PENALTY, SOURCE_RULES, SYN_BUDGET},
    packet::ptr_at,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV6_HLEN: usize = 40;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

#[xdp]
pub fn xdp_ingress(ctx: XdpContext) -> u32 {
    match try_xdp_ingress(&ctx) {
        Ok(action) => action,
        // A frame too short for the headers it claims: not ours to judge, the
        // kernel stack drops or accepts it as it always would.
        Err(()) => {
            count(0, Reason::PassMalformed);
            XDP_PASS
        }
    }
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, ()> {
    // Headers are not naturally aligned after VLAN tags or IPv4 options.
    Ok(unsafe { core::ptr::read_unaligned(ptr_at::<T>(ctx, offset)?) })
}

struct Flow {
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    l4: usize,
}

fn try_xdp_ingress(ctx: &XdpContext) -> Result<u32, ()> {
    let mut off = ETH_HLEN;
    let mut ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    // 802.1ad outer tag, then 802.1Q inner tag.
    if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
        ethertype = u16::from_be(read::<u16>(ctx, off + 2)?);
        off += 4;
        if ethertype == ETH_P_8021Q {
            ethertype = u16::from_be(read::<u16>(ctx, off + 2)?);
            off += 4;
        }
    }

    let flow = match ethertype {
        ETH_P_IP => match parse_ipv4(ctx, off)? {
            Some(f) => f,
            None => return Ok(pass_not_gateway()),
        },
        ETH_P_IPV6 => Flow {
            proto: read::<u8>(ctx, off + 6)?,
            src: read::<[u8; 16]>(ctx, off + 8)?,
            dst: read::<[u8; 16]>(ctx, off + 24)?,
            // Extension headers are not walked: gateway traffic does not carry them.
            l4: off + IPV6_HLEN,
        },
        _ => return Ok(pass_not_gateway()),
    };
    if flow.proto != PROTO_TCP && flow.proto != PROTO_UDP {
        return Ok(pass_not_gateway());
    }
    let dport = u16::from_be(read::<u16>(ctx, flow.l4 + 2)?);

    let Some(listener) = find_listener(&ListenerKey::new(flow.dst, dport, flow.proto)) else {
        return Ok(pass_not_gateway());
    };
    let shard = listener.shard;

    if listener.flags & LISTENER_F_SOURCE_FILTER != 0 && !source_allowed(shard, &flow.src) {
        count(shard, Reason::DropSourceDenied);
        debug!(
            ctx,
            "xdp_ingress: drop source-denied shard={} port={}", shard, dport
        );
        return Ok(XDP_DROP);
    }
    if penalized(shard, &flow.src) {
        count(shard, Reason::DropPenalty);
        debug!(
            ctx,
            "xdp_ingress: drop penalty shard={} port={}", shard, dport
        );
        return Ok(XDP_DROP);
    }
    if flow.proto == PROTO_TCP && listener.flags & LISTENER_F_PARKED != 0 {
        let flags = read::<u8>(ctx, flow.l4 + 13)?;
        if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
            count(shard, Reason::DropRestarting);
            return Ok(XDP_DROP);
        }
    }
    if flow.proto == PROTO_TCP && listener.syn_rate != 0 {
        let flags = read::<u8>(ctx, flow.l4 + 13)?;
        if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
            && !syn_budget_allows(&listener, &flow.src)
        {
            count(shard, Reason::DropSynBudget);
            debug!(
                ctx,
                "xdp_ingress: drop syn-budget shard={} port={}", shard, dport
            );
            return Ok(XDP_DROP);
        }
    }
    count(shard, Reason::PassAllowed);
    Ok(XDP_PASS)
}

/// Takes a token from the source's bucket; a new source starts with a full bucket.
#[inline(always)]
fn syn_budget_allows(listener: &ListenerValue, src: &[u8; 16]) -> bool {
    let key = SynKey {
        shard: listener.shard,
        addr: *src,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let bucket = match SYN_BUDGET.get_ptr(&key) {
        Some(b) => unsafe { *b },
        None => SynBucket {
            tokens_milli: u64::from(listener.syn_burst) * 1000,
            last_ns: now,
        },
    };
    let (next, pass) = syn_take(bucket, now, listener.syn_rate, listener.syn_burst);
    // Racing CPUs may both refill from the same old state: the budget is
    // approximate under contention, which is fine for flood control.
    let _ = SYN_BUDGET.insert(&key, &next, 0);
    pass
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Result<Option<Flow>, ()> {
    let ver_ihl = read::<u8>(ctx, off)?;
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(());
    }
    let frag = u16::from_be(read::<u16>(ctx, off + 6)?);
    if frag & 0x1fff != 0 {
        // Non-first fragment: no L4 header to look at.
        return Ok(None);
    }
    Ok(Some(Flow {
        proto: read::<u8>(ctx, off + 9)?,
        src: v4_mapped(read::<[u8; 4]>(ctx, off + 12)?),
        dst: v4_mapped(read::<[u8; 4]>(ctx, off + 16)?),
        l4: off + ihl,
    }))
}

#[inline(always)]
fn source_allowed(shard: u32, src: &[u8; 16]) -> bool {
    let key = Key::new(
        sluice_common::source_rule_prefix_len(128),
        SourceRuleKey {
            shard_be: shard.to_be_bytes(),
            addr: *src,
        },
    );
    matches!(SOURCE_RULES.get(&key), Some(&SOURCE_ALLOW))
}

/// Whether the source's prefix is in the penalty box of the shard: the
/// entry's expiry against the clock, no sweep needed here.
#[inline(always)]
fn penalized(shard: u32, src: &[u8; 16]) -> bool {
    let key = Key::new(
        sluice_common::source_rule_prefix_len(128),
        SourceRuleKey {
            shard_be: shard.to_be_bytes(),
            addr: *src,
        },
    );
    match PENALTY.get(&key) {
        Some(&expires) => penalty_active(expires, unsafe { bpf_ktime_get_ns() }),
        None => false,
    }
}

#[inline(always)]
fn pass_not_gateway() -> u32 {
    count(0, Reason::PassNotGateway);
    XDP_PASS
}
