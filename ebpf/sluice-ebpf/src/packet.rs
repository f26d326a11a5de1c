//! The one bounds-checked packet accessor.
use aya_ebpf::programs::XdpContext;

/// Pointer to a `T` at `offset` bytes into the packet, or `Err` if it would read
/// past the end. The explicit `data + offset + size > data_end` check is what
/// the verifier needs to see before any dereference.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    let len = core::mem::size_of::<T>();
    if start + offset + len > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}
