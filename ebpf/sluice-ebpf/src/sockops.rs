//! The opt-in sockmap fast path between node-local sockets.
//!
//! `sockops_track` (cgroup sock_ops) puts each TCP socket of the agent's
//! network namespace whose connection has both ends on this node into
//! `SOCK_PAIRS` when the connection is established, keyed by the 4-tuple as
//! that socket sees it. `msg_redirect` (sk_msg, attached to `SOCK_PAIRS`) runs
//! on every send of such a socket and, when the socket at the other end is in
//! the map too, queues the payload straight onto that socket's receive side:
//! no TCP segments, no loopback device, no softirq. A send whose peer is not
//! tracked takes the TCP stack as usual.
//!
//! Both ends are inserted at their ESTABLISHED callbacks, which on loopback
//! run in the handshake's softirq before connect() returns, so a connection
//! does not start on TCP and switch to redirects with TCP data still unread
//! (the receiver reads redirected data first, which would reorder it).
use aya_ebpf::{
    bindings::{
        sk_action::SK_PASS, BPF_ANY, BPF_F_INGRESS, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    },
    helpers::bpf_get_netns_cookie,
    macros::{sk_msg, sock_ops},
    programs::{SkMsgContext, SockOpsContext},
    EbpfContext as _,
};
use sluice_common::{v4_mapped, FastPathEvent, SockPairKey};

use crate::{
    connect::NETNS_COOKIE,
    maps::{count_fast_path, SOCK_PAIRS},
    sk_lookup::words,
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// Reads a field of the context `$ptr` points to with one load at a constant
/// offset (see sk_lookup.rs for why).
macro_rules! ctx_field {
    ($ptr:expr, $field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const (*$ptr).$field) }
    };
}

/// The connection as one socket sees it. `remote_port` holds the port in
/// network byte order in its upper 16 bits (sock_ops and sk_msg alike);
/// `local_port` is in host byte order.
#[inline(always)]
fn pair_key(
    family: u32,
    local4: u32,
    remote4: u32,
    local6: [u32; 4],
    remote6: [u32; 4],
    local_port: u32,
    remote_port: u32,
) -> Option<SockPairKey> {
    let (local_addr, remote_addr) = match family {
        AF_INET => (
            v4_mapped(local4.to_ne_bytes()),
            v4_mapped(remote4.to_ne_bytes()),
        ),
        AF_INET6 => (words(local6), words(remote6)),
        _ => return None,
    };
    Some(SockPairKey {
        local_addr,
        remote_addr,
        local_port,
        remote_port: u32::from_be(remote_port),
    })
}

#[sock_ops]
pub fn sockops_track(ctx: SockOpsContext) -> u32 {
    // Tracking is an optimisation: whatever happens, the connection goes on.
    let _ = try_sockops_track(&ctx);
    1
}

fn try_sockops_track(ctx: &SockOpsContext) -> Result<(), i32> {
    // Straight-line context loads first.
    let op = ctx_field!(ctx.ops, op);
    let family = ctx_field!(ctx.ops, family);
    let local4 = ctx_field!(ctx.ops, local_ip4);
    let remote4 = ctx_field!(ctx.ops, remote_ip4);
    let local6 = ctx_field!(ctx.ops, local_ip6);
    let remote6 = ctx_field!(ctx.ops, remote_ip6);
    let local_port = ctx_field!(ctx.ops, local_port);
    let remote_port = ctx_field!(ctx.ops, remote_port);
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        return Ok(());
    }
    // The hook sits on a cgroup that spans network namespaces: only sockets
    // of the agent's own namespace are ours to touch.
    if unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != NETNS_COOKIE.load() {
        return Ok(());
    }
    let Some(mut key) = pair_key(
        family,
        local4,
        remote4,
        local6,
        remote6,
        local_port,
        remote_port,
    ) else {
        return Ok(());
    };
    if !key.is_node_local() {
        return Ok(());
    }
    // SAFETY: the context pointer is valid for the whole program run.
    let ops = unsafe { &mut *ctx.ops };
    match SOCK_PAIRS.update(&mut key, ops, u64::from(BPF_ANY)) {
        Ok(()) => count_fast_path(FastPathEvent::SocketTracked),
        Err(e) => {
            count_fast_path(FastPathEvent::TrackFailed);
            return Err(e);
        }
    }
    Ok(())
}

#[sk_msg]
pub fn msg_redirect(ctx: SkMsgContext) -> u32 {
    // Never lose a message over a reason of our own: pass it to TCP.
    try_msg_redirect(&ctx).unwrap_or(SK_PASS)
}

fn try_msg_redirect(ctx: &SkMsgContext) -> Result<u32, ()> {
    let family = ctx_field!(ctx.msg, family);
    let local4 = ctx_field!(ctx.msg, local_ip4);
    let remote4 = ctx_field!(ctx.msg, remote_ip4);
    let local6 = ctx_field!(ctx.msg, local_ip6);
    let remote6 = ctx_field!(ctx.msg, remote_ip6);
    let local_port = ctx_field!(ctx.msg, local_port);
    let remote_port = ctx_field!(ctx.msg, remote_port);
    let key = pair_key(
        family,
        local4,
        remote4,
        local6,
        remote6,
        local_port,
        remote_port,
    )
    .ok_or(())?;
    let mut peer = key.peer();
    // SK_PASS with the target recorded, or SK_DROP when the peer is not in
    // the map; then nothing was recorded and passing sends it through TCP.
    if SOCK_PAIRS.redirect_msg(ctx, &mut peer, u64::from(BPF_F_INGRESS)) == i64::from(SK_PASS) {
        count_fast_path(FastPathEvent::MessageRedirected);
    } else {
        count_fast_path(FastPathEvent::MessagePassed);
    }
    Ok(SK_PASS)
}
