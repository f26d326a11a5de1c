//! The agent binary's global allocator (set in `main.rs`; tests and benches
//! keep the system allocator).

/// mimalloc as the global allocator, asked for plain blocks whenever the
/// alignment allows: `mi_malloc` is a thread-local free-list pop, while
/// `mi_malloc_aligned` (what the `mimalloc` crate calls for every block)
/// takes a slower generic path in mimalloc 3.
pub struct MiMalloc;

/// Every mimalloc block of at least this size is aligned to it (x86_64 and
/// aarch64: `MI_MAX_ALIGN_SIZE`); smaller blocks to their size class.
const MI_MIN_ALIGN: usize = 16;

impl MiMalloc {
    fn plain(layout: std::alloc::Layout) -> bool {
        layout.align() <= MI_MIN_ALIGN && layout.align() <= layout.size()
    }
}

// SAFETY: the mimalloc functions return blocks of at least the requested
// size and alignment (the plain ones only where `plain` holds), or null.
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        if Self::plain(layout) {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        if Self::plain(layout) {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        if layout.align() <= MI_MIN_ALIGN && layout.align() <= new_size {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}
