//! `connect4` / `connect6` (cgroup sock_addr): a local process connecting to a
//! gateway listener must belong to a namespace the shard admits, else its
//! connect() fails with EPERM. Steering itself is left to `sk_lookup_dispatch`
//! (the L7 router needs the address and port the client dialled).
//!
//! The hooks sit on a cgroup that spans network namespaces; they act only on
//! sockets of the agent's own namespace (`NETNS_COOKIE`).
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_netns_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext as _, Global,
};
use aya_log_ebpf::debug;
use sluice_common::{v4_mapped, ListenerKey, Reason, LISTENER_F_NS_ADMISSION, PROTO_TCP};

use crate::{
    maps::{admitted, count, find_listener, CGROUP_NS},
    sk_lookup::words,
};

/// Network namespace cookie of the agent, set at load time.
#[unsafe(no_mangle)]
pub(crate) static NETNS_COOKIE: Global<u64> = Global::new(0);

const ALLOW: i32 = 1;
const DENY: i32 = 0;

macro_rules! ctx_field {
    ($ctx:expr, $field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const (*$ctx.sock_addr).$field) }
    };
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // Never break connect() for a reason of our own: fail open.
    try_connect::<false>(&ctx).unwrap_or(ALLOW)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    try_connect::<true>(&ctx).unwrap_or(ALLOW)
}

/// `V6` is a const so that each program reads only the address field its
/// attach type may read (user_ip4 in connect4, user_ip6 in connect6).
fn try_connect<const V6: bool>(ctx: &SockAddrContext) -> Result<i32, ()> {
    // Straight-line context loads first (see sk_lookup.rs).
    let protocol = ctx_field!(ctx, protocol);
    let user_port = ctx_field!(ctx, user_port);
    let addr = if V6 {
        words(ctx_field!(ctx, user_ip6))
    } else {
        v4_mapped(ctx_field!(ctx, user_ip4).to_ne_bytes())
    };
    if unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != NETNS_COOKIE.load() {
        return Ok(ALLOW);
    }
    if protocol != u32::from(PROTO_TCP) {
        return Ok(ALLOW);
    }
    // user_port holds the port in network byte order in its low 16 bits.
    let port = u16::from_be(user_port as u16);
    let Some(listener) = find_listener(&ListenerKey::new(addr, port, PROTO_TCP)) else {
        return Ok(ALLOW);
    };
    if listener.flags & LISTENER_F_NS_ADMISSION == 0 {
        return Ok(ALLOW);
    }
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let namespace = unsafe { CGROUP_NS.get(&cgroup) }.copied().unwrap_or(0);
    if admitted(listener.shard, namespace) {
        return Ok(ALLOW);
    }
    count(listener.shard, Reason::DenyNamespaceConnect);
    debug!(
        ctx,
        "connect: deny namespace shard={} port={}", listener.shard, port
    );
    Ok(DENY)
}
