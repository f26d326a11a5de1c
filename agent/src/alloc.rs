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

/// Gives mimalloc's freed pages back to the kernel now, in every thread's
/// arena, instead of when some thread next allocates after the purge delay
/// (see `reload::release_free_heap`). Harmless where mimalloc is not the
/// global allocator (tests, benches): it then only has its own empty heap.
pub fn release_free_pages() {
    // SAFETY: no preconditions; a forced collect frees this thread's empty
    // pages and purges the free pages of all arenas, whatever their delay.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// mimalloc 3's `mi_option_arena_eager_commit` (not among the -sys crate's
/// constants): its place in `mi_option_e`.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets mimalloc's options for an agent whose heap is mostly a long-lived
/// config. An option given in the environment (`MIMALLOC_…`) is left as
/// given. It must run before the first allocation creates mimalloc's first
/// arena, which happens before `main`: the agent binary calls it from an
/// `.init_array` entry ahead of the default priority, where mimalloc's own
/// constructor and Rust's start-up run.
///
/// Arenas are committed on demand, not eagerly. With eager commit (the
/// default where the OS overcommits) the idle agent's RSS carried 3.3–3.7 MB
/// more with 0, 5,000 or 50,000 routes (2.2 MB more under the proxy
/// benchmark's load): bookkeeping that grows with the arena's reserved size
/// (1 GiB; with `MIMALLOC_ARENA_RESERVE=64M` it was 2 MB), which on-demand
/// commit leaves untouched until it is used. The price is a system call when
/// the heap grows (a commit is an `mprotect`: 1,587 of them in a cold start
/// at 50,000 routes, none with eager commit); that start took 1.09–1.23 s
/// against 1.02–1.06 s (three runs each), and request throughput did not
/// change (README, memory figures).
pub extern "C" fn configure() {
    // SAFETY: getenv with a NUL-terminated name; before `main` nothing else
    // runs, so nothing changes the environment meanwhile.
    let given = unsafe { libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()) };
    if given.is_null() {
        // SAFETY: mi_option_set is not thread-safe; it runs before `main`,
        // on the only thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_eager_commit_option_is_the_one_set() {
        // Its default (2: only where the OS overcommits) tells it apart from
        // its neighbours in `mi_option_e`, which default to 1.
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            // SAFETY: reading an option has no preconditions.
            let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_ARENA_EAGER_COMMIT) };
            assert_eq!(v, 2);
        }
    }
}
