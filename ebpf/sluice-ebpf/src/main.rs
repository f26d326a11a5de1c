//! Sluice eBPF programs: `xdp_ingress` (L4 admission at the NIC),
//! `sk_lookup_dispatch` (steering gateway traffic to the shard's socket), the
//! cgroup connect hooks, and the opt-in sockmap fast path (`sockops_track` +
//! `msg_redirect`).
//!
//! Entry points are thin; each calls a `try_*` function. All packet reads go
//! through [`packet::ptr_at`], the one bounds-checked accessor.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod connect;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod sk_lookup;
#[cfg(target_arch = "bpf")]
mod sockops;
#[cfg(target_arch = "bpf")]
mod xdp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Host builds (`cargo build --workspace`, clippy) compile this crate for the host;
/// there is nothing to run there.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
