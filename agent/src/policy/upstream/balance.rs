//! `loadBalancer`: which endpoint of a backend a request goes to.
//!
//! - `RoundRobin` — each endpoint in turn (the behaviour without a policy).
//! - `LeastRequest` — the power of two random choices: two endpoints drawn
//!   at random, the one with fewer requests in flight wins. Cheap (two
//!   atomic loads), and it steers away from a slow endpoint without the
//!   herd effect of always picking the global minimum.
//! - `ConsistentHash` — session affinity on a header, a cookie or the
//!   source address, over a hash ring built at compile time. Each endpoint
//!   owns [`VNODES`] points placed by a hash of its *address*, not of its
//!   position in the list, so an endpoint joining or leaving moves only the
//!   keys of the points it gains or loses (about 1/N of them).
use std::{hash::Hasher, net::SocketAddr};

use http::{HeaderMap, HeaderName};

/// Points per endpoint on the ring. An endpoint's share of the keys varies
/// by about `1 / (N·√VNODES)` around 1/N: with 1,024 points, ±0.8 % of the
/// keys for 4 endpoints. A point takes 8 bytes; each backend's ring is built
/// once per endpoint list and shared by every rule that uses the backend.
pub const VNODES: u32 = 1024;

/// The `loadBalancer` section.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum LoadBalancerSpec {
    /// Each endpoint in turn (default).
    #[default]
    RoundRobin,
    /// Power of two random choices over requests in flight per endpoint.
    LeastRequest,
    /// Affinity: the same key goes to the same endpoint while it is available.
    ConsistentHash(HashOn),
}

/// What a consistent hash is computed over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashOn {
    /// A request header's value (all values, in order).
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client's address (the connection's peer).
    SourceAddress,
}

impl HashOn {
    /// The hash of the request's key; `None` when the request has none
    /// (no such header or cookie): it is balanced round robin instead.
    pub fn key(&self, headers: &HeaderMap, peer: std::net::IpAddr) -> Option<u64> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match self {
            HashOn::Header(name) => {
                let mut any = false;
                for v in headers.get_all(name) {
                    h.write(v.as_bytes());
                    h.write_u8(0);
                    any = true;
                }
                if !any {
                    return None;
                }
            }
            HashOn::Cookie(name) => {
                let value = cookie(headers, name)?;
                h.write(value.as_bytes());
            }
            HashOn::SourceAddress => match peer.to_canonical() {
                std::net::IpAddr::V4(a) => h.write(&a.octets()),
                std::net::IpAddr::V6(a) => h.write(&a.octets()),
            },
        }
        Some(h.finish())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// A hash ring over a backend's endpoints: sorted (point, endpoint index),
/// points being the top 32 bits of a hash.
#[derive(Debug, Default)]
pub struct Ring {
    points: Box<[(u32, u32)]>,
}

/// Position of an endpoint's `i`-th point: a function of its address only.
fn point(addr: SocketAddr, i: u32) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match addr.ip().to_canonical() {
        std::net::IpAddr::V4(a) => h.write(&a.octets()),
        std::net::IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.write_u16(addr.port());
    h.write_u32(i);
    (h.finish() >> 32) as u32
}

impl Ring {
    pub fn new(endpoints: &[SocketAddr]) -> Self {
        let mut points: Vec<(u32, u32)> = endpoints
            .iter()
            .enumerate()
            .flat_map(|(e, a)| (0..VNODES).map(move |i| (point(*a, i), e as u32)))
            .collect();
        points.sort_unstable();
        Self {
            points: points.into(),
        }
    }

    /// The endpoint owning `key`: the first point at or after it (wrapping)
    /// whose endpoint `usable` accepts; `None` when none does.
    pub fn pick(&self, key: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let key = (key >> 32) as u32;
        let start = self.points.partition_point(|(p, _)| *p < key);
        // Walking on past unusable endpoints; bounded by the ring's size.
        (0..n)
            .map(|k| self.points[(start + k) % n].1 as usize)
            .find(|&e| usable(e))
    }
}

/// A random index below `n` (`n > 0`).
pub fn random_below(n: usize) -> usize {
    crate::random::below(n as u64) as usize
}

/// Power of two choices: of two distinct random usable endpoints, the one
/// with fewer requests in flight (`load`). `None` when none is usable.
pub fn least_request(
    n: usize,
    usable: impl Fn(usize) -> bool,
    load: impl Fn(usize) -> u32,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    // The first usable endpoint from a random start (a few draws, then a scan).
    let first = (0..4)
        .map(|_| random_below(n))
        .find(|&i| usable(i))
        .or_else(|| {
            let start = random_below(n);
            (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
        })?;
    if n == 1 {
        return Some(first);
    }
    // Another one, never the first again: with two endpoints this is
    // exactly the less loaded one.
    let start = random_below(n - 1);
    let second = (0..n - 1)
        .map(|k| (first + 1 + (start + k) % (n - 1)) % n)
        .find(|&i| usable(i));
    Some(match second {
        Some(b) if load(b) < load(first) => b,
        _ => first,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn eps(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080)))
            .collect()
    }

    #[test]
    fn the_same_key_maps_to_the_same_endpoint_and_shares_are_even() {
        let e = eps(4);
        let ring = Ring::new(&e);
        let mut counts = HashMap::new();
        for k in 0..10_000u64 {
            let key = {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                h.write_u64(k);
                h.finish()
            };
            let a = ring.pick(key, |_| true).unwrap();
            assert_eq!(ring.pick(key, |_| true), Some(a));
            *counts.entry(a).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        for (e, c) in counts {
            assert!((2_200..=2_800).contains(&c), "endpoint {e}: {c} of 10,000");
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let all = eps(5);
        let fewer: Vec<SocketAddr> = all.iter().copied().filter(|a| *a != all[2]).collect();
        let (r1, r2) = (Ring::new(&all), Ring::new(&fewer));
        let mut moved = 0;
        for k in 0..10_000u64 {
            let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let before = all[r1.pick(key, |_| true).unwrap()];
            let after = fewer[r2.pick(key, |_| true).unwrap()];
            if before != after {
                // Only keys of the removed endpoint move.
                assert_eq!(before, all[2]);
                moved += 1;
            }
        }
        assert!(moved <= 10_000 / 5 + 300, "moved {moved}");
        assert!(moved >= 10_000 / 5 - 300, "moved {moved}");
        assert!(moved > 0);
    }

    #[test]
    fn unusable_endpoints_are_skipped_on_the_ring() {
        let e = eps(3);
        let ring = Ring::new(&e);
        for k in 0..1000u64 {
            let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let p = ring.pick(key, |i| i != 1).unwrap();
            assert_ne!(p, 1);
        }
        assert_eq!(ring.pick(1, |_| false), None);
        assert_eq!(Ring::new(&[]).pick(1, |_| true), None);
    }

    #[test]
    fn least_request_prefers_the_less_loaded_endpoint() {
        let loads = [10u32, 0, 10, 10];
        let mut wins = [0u32; 4];
        for _ in 0..1000 {
            let i = least_request(4, |_| true, |i| loads[i]).unwrap();
            wins[i] += 1;
        }
        // Endpoint 1 wins whenever it is one of the two draws (1/2 of the time).
        assert!(wins[1] > 350, "{wins:?}");
        // With two endpoints the less loaded one always wins.
        for _ in 0..100 {
            assert_eq!(least_request(2, |_| true, |i| [3, 1][i]), Some(1));
        }
        assert_eq!(least_request(4, |i| i == 2, |i| loads[i]), Some(2));
        assert_eq!(least_request(4, |_| false, |i| loads[i]), None);
    }

    #[test]
    fn keys_come_from_header_cookie_or_address() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert(http::header::COOKIE, "a=1; session=xyz".parse().unwrap());
        let ip: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let by_header = HashOn::Header(HeaderName::from_static("x-user"));
        assert!(by_header.key(&h, ip).is_some());
        assert_eq!(
            by_header.key(&h, ip),
            by_header.key(&h, "10.9.9.9".parse().unwrap())
        );
        assert_eq!(
            HashOn::Header(HeaderName::from_static("x-none")).key(&h, ip),
            None
        );
        let by_cookie = HashOn::Cookie("session".into());
        let mut other = h.clone();
        other.insert(http::header::COOKIE, "session=abc".parse().unwrap());
        assert_ne!(by_cookie.key(&h, ip), by_cookie.key(&other, ip));
        assert_eq!(HashOn::Cookie("none".into()).key(&h, ip), None);
        let by_addr = HashOn::SourceAddress;
        assert_ne!(
            by_addr.key(&h, ip),
            by_addr.key(&h, "10.1.2.4".parse().unwrap())
        );
    }
}
