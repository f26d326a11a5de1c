//! `sk_lookup_dispatch`: hands connections for a gateway (address, port) to the
//! shard's listening socket, whatever address/port that socket is bound to,
//! after checking that the source's namespace is admitted to the shard.
use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use aya_log_ebpf::{debug, warn};
use sluice_common::{socket_index, v4_mapped, ListenerKey, Reason, LISTENER_F_NS_ADMISSION};

use crate::maps::{admitted, count, find_listener, source_namespace, SHARD_SOCKETS};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// `lo` is interface 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

#[sk_lookup]
pub fn sk_lookup_dispatch(ctx: SkLookupContext) -> u32 {
    // On any failure fall back to the kernel's regular socket lookup.
    try_sk_lookup_dispatch(&ctx).unwrap_or(SK_PASS)
}

/// Reads a context field with one load at a constant offset from the context
/// pointer: the verifier rejects loads through a ctx pointer that LLVM has
/// offset into another register, which plain field reads can compile to.
macro_rules! ctx_field {
    ($ctx:expr, $field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const (*$ctx.lookup).$field) }
    };
}

fn try_sk_lookup_dispatch(ctx: &SkLookupContext) -> Result<u32, i32> {
    // All loads first, unconditionally, in straight-line code: branches make
    // LLVM share one offset ctx pointer between paths, which the verifier rejects.
    let family = ctx_field!(ctx, family);
    let protocol = ctx_field!(ctx, protocol);
    // local_port is in host byte order (unlike remote_port).
    let port = ctx_field!(ctx, local_port) as u16;
    // local_ip4 holds the address in network byte order.
    let ip4 = ctx_field!(ctx, local_ip4);
    let ip6 = ctx_field!(ctx, local_ip6);
    let remote4 = ctx_field!(ctx, remote_ip4);
    let remote6 = ctx_field!(ctx, remote_ip6);
    let ingress = ctx_field!(ctx, ingress_ifindex);
    let (addr, ipv6) = match family {
        AF_INET => (v4_mapped(ip4.to_ne_bytes()), false),
        AF_INET6 => (words(ip6), true),
        _ => return Ok(SK_PASS),
    };
    let key = ListenerKey::new(addr, port, protocol as u8);
    let Some(listener) = find_listener(&key) else {
        return Ok(SK_PASS);
    };
    if listener.flags & LISTENER_F_NS_ADMISSION != 0 {
        let remote = if ipv6 {
            words(remote6)
        } else {
            v4_mapped(remote4.to_ne_bytes())
        };
        // A connection from a local process (over loopback, or from the
        // node's own address) was checked at connect() by the cgroup hooks,
        // which know the process; the source address says nothing here.
        let local = ingress == LOOPBACK_IFINDEX || remote == addr;
        if !local && !admitted(listener.shard, source_namespace(&remote)) {
            count(listener.shard, Reason::DenyNamespaceLookup);
            debug!(
                ctx,
                "sk_lookup_dispatch: deny namespace shard={} port={}", listener.shard, port
            );
            return Ok(SK_DROP);
        }
    }
    if let Err(e) = SHARD_SOCKETS.redirect_sk_lookup(ctx, socket_index(listener.shard, ipv6), 0) {
        warn!(
            ctx,
            "sk_lookup_dispatch: no socket for shard={} port={} err={}", listener.shard, port, e
        );
    }
    Ok(SK_PASS)
}

/// An IPv6 address from the four network-order words of a BPF context.
#[inline(always)]
pub fn words(w: [u32; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&w[0].to_ne_bytes());
    a[4..8].copy_from_slice(&w[1].to_ne_bytes());
    a[8..12].copy_from_slice(&w[2].to_ne_bytes());
    a[12..16].copy_from_slice(&w[3].to_ne_bytes());
    a
}
