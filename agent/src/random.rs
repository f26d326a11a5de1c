//! One per-thread source of random-looking numbers for the data path:
//! request ids, trace and span ids, access-log sampling and load-balancer
//! draws. A random 128-bit seed per thread and a counter run through
//! SplitMix64's bijective finalizer: no system call or lock per draw, and a
//! thread never returns the same value twice in 2^64 draws (ids stay
//! unique per thread even if the seed could not be read). Not for secrets.
use std::cell::Cell;

thread_local! {
    /// (counter, key) of this thread.
    static STATE: Cell<(u64, u64)> = Cell::new(seed());
}

fn seed() -> (u64, u64) {
    let mut b = [0u8; 16];
    // Without randomness the values are still distinct, only predictable.
    let _ = getrandom::fill(&mut b);
    let a = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let c = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
    (a, c | 1)
}

/// SplitMix64's finalizer: a bijection on u64 with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The next value of this thread: distinct from every earlier one of it.
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let (counter, key) = s.get();
        s.set((counter.wrapping_add(1), key));
        mix(counter ^ key)
    })
}

/// A value below `n` (`n > 0`), evenly spread for any `n` far below 2^64.
pub fn below(n: u64) -> u64 {
    // Multiply-shift instead of `%`: no division, and no bias worth naming.
    ((u128::from(next_u64()) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_do_not_repeat_and_spread_evenly() {
        let mut seen = std::collections::HashSet::new();
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            assert!(seen.insert(next_u64()));
            buckets[below(10) as usize] += 1;
        }
        // 10,000 expected per bucket; ±5 % is > 15 standard deviations.
        for b in buckets {
            assert!((9_500..=10_500).contains(&b), "{buckets:?}");
        }
    }
}
