//! `sk_lookup_dispatch`: hands connections for a gateway (address, port) to the
//! shard's listening socket, whatever address/port that socket is bound to.
use aya_ebpf::{bindings::sk_action::SK_PASS, macros::sk_lookup, programs::SkLookupContext};
use aya_log_ebpf::warn;
use sluice_common::{socket_index, v4_mapped, ListenerKey};

use crate::maps::{find_listener, SHARD_SOCKETS};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[sk_lookup]
pub fn sk_lookup_dispatch(ctx: SkLookupContext) -> u32 {
    // On any failure fall back to the kernel's regular socket lookup.
    try_sk_lookup_dispatch(&ctx).unwrap_or(SK_PASS)
}

fn try_sk_lookup_dispatch(ctx: &SkLookupContext) -> Result<u32, i32> {
    let lookup = unsafe { &*ctx.lookup };
    let (addr, ipv6) = match lookup.family {
        // local_ip4 holds the address in network byte order.
        AF_INET => (v4_mapped(lookup.local_ip4.to_ne_bytes()), false),
        AF_INET6 => {
            let w = lookup.local_ip6;
            let mut a = [0u8; 16];
            a[0..4].copy_from_slice(&w[0].to_ne_bytes());
            a[4..8].copy_from_slice(&w[1].to_ne_bytes());
            a[8..12].copy_from_slice(&w[2].to_ne_bytes());
            a[12..16].copy_from_slice(&w[3].to_ne_bytes());
            (a, true)
        }
        _ => return Ok(SK_PASS),
    };
    // local_port is in host byte order (unlike remote_port).
    let port = lookup.local_port as u16;
    let key = ListenerKey::new(addr, port, lookup.protocol as u8);
    let Some(listener) = find_listener(&key) else {
        return Ok(SK_PASS);
    };
    if let Err(e) = SHARD_SOCKETS.redirect_sk_lookup(ctx, socket_index(listener.shard, ipv6), 0) {
        warn!(
            ctx,
            "sk_lookup_dispatch: no socket for shard={} port={} err={}", listener.shard, port, e
        );
    }
    Ok(SK_PASS)
}
