//! The route table of one listener: entries grouped by effective hostname,
//! each group pre-sorted by Gateway API precedence.
//!
//! The table is persistent: a clone shares every group, and
//! [`RouteTable::update`] copies only the groups a change touches (and, for
//! exact hostnames, one shard of the host index). A one-route change to a
//! listener with 50,000 routes therefore costs microseconds, not a rebuild,
//! and the new snapshot shares everything else with the one it replaces.
use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    hash::BuildHasher,
    sync::Arc,
};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::{matching, RequestView, RouteEntry};
use crate::config::{Hostname, ObjectRef};

/// Entries of one hostname, in precedence order.
pub type Bucket = Arc<[RouteEntry]>;

/// Routes of one listener, grouped by effective hostname and pre-sorted by
/// Gateway API precedence, so matching is a walk that stops at the first hit.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    exact: HostMap,
    /// Longest suffix first (then by suffix, for a stable order).
    wildcard: Arc<[(Box<str>, Bucket)]>,
    any: Bucket,
    len: usize,
}

impl RouteTable {
    /// Builds the table; `entries` come with their effective hostname (`None`:
    /// any host the listener accepts).
    pub fn build(entries: Vec<(Option<Hostname>, RouteEntry)>) -> Self {
        let len = entries.len();
        let mut exact: HashMap<String, Vec<RouteEntry>> = HashMap::new();
        let mut wild: HashMap<String, Vec<RouteEntry>> = HashMap::new();
        let mut any = Vec::new();
        for (host, e) in entries {
            match host {
                Some(Hostname::Exact(h)) => exact.entry(h).or_default().push(e),
                Some(Hostname::Wildcard(s)) => wild.entry(s).or_default().push(e),
                None => any.push(e),
            }
        }
        let bucket = |mut v: Vec<RouteEntry>| -> Bucket {
            v.sort_by(matching::precedence);
            v.into()
        };
        let mut wildcard: Vec<(Box<str>, Bucket)> = wild
            .into_iter()
            .map(|(s, v)| (s.into_boxed_str(), bucket(v)))
            .collect();
        sort_wildcards(&mut wildcard);
        RouteTable {
            exact: HostMap::build(exact.into_iter().map(|(h, v)| (Arc::from(h), bucket(v)))),
            wildcard: wildcard.into(),
            any: bucket(any),
            len,
        }
    }

    /// A copy of this table without the entries of the routes in `removed`
    /// (by namespace/name, found under the hostnames given) and with
    /// `added`. Only the groups of those hostnames are copied; the result
    /// equals [`RouteTable::build`] of the same entries when no two routes
    /// share a namespace/name.
    pub fn update(
        &self,
        removed: &[(Option<Hostname>, ObjectRef)],
        added: Vec<(Option<Hostname>, RouteEntry)>,
    ) -> RouteTable {
        // Per touched hostname: the routes whose entries leave, the entries that come.
        let mut touched: HashMap<Option<Hostname>, (Vec<&ObjectRef>, Vec<RouteEntry>)> =
            HashMap::new();
        for (host, route) in removed {
            touched.entry(host.clone()).or_default().0.push(route);
        }
        for (host, e) in added {
            touched.entry(host).or_default().1.push(e);
        }
        let mut out = self.clone();
        let mut wildcard: Option<Vec<(Box<str>, Bucket)>> = None;
        for (host, (gone, mut new)) in touched {
            let mut merge = |old: Option<&Bucket>, out_len: &mut usize| -> Option<Bucket> {
                let old = old.map(|b| &b[..]).unwrap_or_default();
                let kept = old.iter().filter(|e| !gone.contains(&&*e.route));
                new.sort_by(matching::precedence);
                let merged = merge_sorted(kept, std::mem::take(&mut new));
                *out_len = *out_len + merged.len() - old.len();
                (!merged.is_empty()).then(|| merged.into())
            };
            match host {
                Some(Hostname::Exact(h)) => {
                    let next = merge(out.exact.get(&h), &mut out.len);
                    out.exact.set(&h, next);
                }
                Some(Hostname::Wildcard(s)) => {
                    let w = wildcard.get_or_insert_with(|| self.wildcard.to_vec());
                    let at = w.iter().position(|(x, _)| **x == *s);
                    match (at, merge(at.map(|i| &w[i].1), &mut out.len)) {
                        (Some(i), Some(b)) => w[i].1 = b,
                        (Some(i), None) => {
                            w.remove(i);
                        }
                        (None, Some(b)) => w.push((s.into_boxed_str(), b)),
                        (None, None) => {}
                    }
                }
                None => {
                    out.any = merge(Some(&self.any), &mut out.len).unwrap_or_default();
                }
            }
        }
        if let Some(mut w) = wildcard {
            sort_wildcards(&mut w);
            out.wildcard = w.into();
        }
        out
    }

    /// The highest-precedence entry matching `host` and the request. Routes
    /// with a more specific matching hostname win over any other precedence
    /// (Gateway API).
    pub fn find<'a>(&'a self, host: &str, req: &RequestView<'_>) -> Option<&'a RouteEntry> {
        let hit = |v: &'a [RouteEntry]| v.iter().find(|e| matching::matches(&e.matcher, req));
        if let Some(e) = self.exact.get(host).and_then(|v| hit(v)) {
            return Some(e);
        }
        for (suffix, v) in self.wildcard.iter() {
            if host.len() > suffix.len() && host.ends_with(&**suffix) {
                if let Some(e) = hit(v) {
                    return Some(e);
                }
            }
        }
        hit(&self.any)
    }

    /// The distinct routes with at least one entry in the table.
    pub fn routes(&self) -> BTreeSet<&ObjectRef> {
        self.exact
            .buckets()
            .chain(self.wildcard.iter().map(|(_, v)| v))
            .chain(std::iter::once(&self.any))
            .flat_map(|v| v.iter())
            .map(|e| &*e.route)
            .collect()
    }

    /// Every group with its hostname (`None`: any host), exact hostnames
    /// sorted: a canonical view for comparisons and dumps.
    pub fn groups(&self) -> Vec<(Option<Hostname>, &[RouteEntry])> {
        let mut exact: Vec<(&str, &Bucket)> = self.exact.iter().collect();
        exact.sort_by(|a, b| a.0.cmp(b.0));
        exact
            .into_iter()
            .map(|(h, v)| (Some(Hostname::Exact(h.to_owned())), &v[..]))
            .chain(
                self.wildcard
                    .iter()
                    .map(|(s, v)| (Some(Hostname::Wildcard(s.to_string())), &v[..])),
            )
            .chain((!self.any.is_empty()).then(|| (None, &self.any[..])))
            .collect()
    }

    /// Every entry with the hostname it is filed under (`None`: any host the
    /// listener accepts), for the admin page; matching uses [`Self::find`].
    pub fn entries(&self) -> impl Iterator<Item = (Option<Hostname>, &RouteEntry)> {
        let exact = self.exact.iter().flat_map(|(h, v)| {
            v.iter()
                .map(move |e| (Some(Hostname::Exact(h.to_owned())), e))
        });
        let wildcard = self.wildcard.iter().flat_map(|(s, v)| {
            v.iter()
                .map(move |e| (Some(Hostname::Wildcard(s.to_string())), e))
        });
        exact
            .chain(wildcard)
            .chain(self.any.iter().map(|e| (None, e)))
    }

    /// Number of entries (matches × hostnames).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn sort_wildcards(w: &mut [(Box<str>, Bucket)]) {
    w.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
}

/// Merges two runs that are each in precedence order.
fn merge_sorted<'a>(
    old: impl Iterator<Item = &'a RouteEntry>,
    new: Vec<RouteEntry>,
) -> Vec<RouteEntry> {
    let mut out = Vec::with_capacity(new.len());
    let mut old = old.peekable();
    let mut new = new.into_iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (Some(o), Some(n)) => {
                // Ties (only possible for identical entries) keep the old first.
                if matching::precedence(n, o).is_lt() {
                    out.extend(new.next());
                } else {
                    out.extend(old.next().cloned());
                }
            }
            (Some(_), None) => out.extend(old.next().cloned()),
            (None, Some(_)) => out.extend(new.next()),
            (None, None) => return out,
        }
    }
}

/// Exact hostname → group, as a hash index split into shards that are
/// shared between copies: changing one hostname copies one shard.
#[derive(Clone, Default)]
struct HostMap {
    hasher: DefaultHashBuilder,
    /// A power of two in length; empty for an empty map.
    shards: Arc<[Arc<HostShard>]>,
}

/// One shard of a [`HostMap`].
type HostShard = HashTable<(Arc<str>, Bucket)>;

/// Hostnames per shard aimed at when a map is built: small enough that
/// copying one is cheap, large enough that the shard list stays short.
const HOSTS_PER_SHARD: usize = 32;

impl HostMap {
    fn build(groups: impl ExactSizeIterator<Item = (Arc<str>, Bucket)>) -> Self {
        let hasher = DefaultHashBuilder::default();
        let n = (groups.len() / HOSTS_PER_SHARD).next_power_of_two();
        let mut shards: Vec<HashTable<(Arc<str>, Bucket)>> =
            (0..n).map(|_| HashTable::new()).collect();
        for (host, bucket) in groups {
            let hash = hasher.hash_one(&*host);
            shards[Self::shard_of(hash, n)]
                .insert_unique(hash, (host, bucket), |(h, _)| hasher.hash_one(&**h));
        }
        HostMap {
            hasher,
            shards: shards.into_iter().map(Arc::new).collect(),
        }
    }

    fn shard_of(hash: u64, shards: usize) -> usize {
        // The table uses the low bits for its slots; the high bits pick the shard.
        (hash >> 40) as usize & (shards - 1)
    }

    fn get(&self, host: &str) -> Option<&Bucket> {
        if self.shards.is_empty() {
            return None;
        }
        let hash = self.hasher.hash_one(host);
        self.shards[Self::shard_of(hash, self.shards.len())]
            .find(hash, |(h, _)| **h == *host)
            .map(|(_, b)| b)
    }

    /// Sets (or with `None` removes) the group of `host`, copying its shard.
    fn set(&mut self, host: &str, bucket: Option<Bucket>) {
        if self.shards.is_empty() {
            if bucket.is_none() {
                return;
            }
            self.shards = Arc::from([Arc::new(HashTable::new())]);
        }
        let hash = self.hasher.hash_one(host);
        let i = Self::shard_of(hash, self.shards.len());
        let mut shards: Vec<Arc<HostShard>> = self.shards.to_vec();
        let shard = Arc::make_mut(&mut shards[i]);
        let hasher = &self.hasher;
        match (shard.find_entry(hash, |(h, _)| **h == *host), bucket) {
            (Ok(mut e), Some(b)) => e.get_mut().1 = b,
            (Ok(e), None) => {
                e.remove();
            }
            (Err(_), Some(b)) => {
                shard.insert_unique(hash, (Arc::from(host), b), |(h, _)| hasher.hash_one(&**h));
            }
            (Err(_), None) => {}
        }
        self.shards = shards.into();
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Bucket)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter())
            .map(|(h, b)| (&**h, b))
    }

    fn buckets(&self) -> impl Iterator<Item = &Bucket> {
        self.iter().map(|(_, b)| b)
    }
}

impl fmt::Debug for HostMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hosts: Vec<(&str, &Bucket)> = self.iter().collect();
        hosts.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_map().entries(hosts).finish()
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};

    use super::*;
    use crate::{
        config::{PathMatch, RouteMatch},
        snapshot::RuleAction,
    };

    fn entries(
        route: &Arc<ObjectRef>,
        hosts: &[Option<Hostname>],
        path: &str,
    ) -> Vec<(Option<Hostname>, RouteEntry)> {
        let action = Arc::new(RuleAction::default());
        let matcher = Arc::new(RouteMatch::path(PathMatch::Prefix(path.into())));
        hosts
            .iter()
            .map(|h| {
                (
                    h.clone(),
                    RouteEntry {
                        route: route.clone(),
                        route_name: Arc::from(route.to_string()),
                        created: (0, 0),
                        rule: 0,
                        match_index: 0,
                        matcher: matcher.clone(),
                        action: action.clone(),
                    },
                )
            })
            .collect()
    }

    fn view(t: &RouteTable) -> Vec<(Option<Hostname>, Vec<String>)> {
        t.groups()
            .into_iter()
            .map(|(h, v)| {
                (
                    h,
                    v.iter()
                        .map(|e| format!("{} {:?}", e.route, e.matcher.path))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn updates_equal_a_rebuild_and_leave_the_original_alone() {
        let exact = |h: &str| Some(Hostname::Exact(h.into()));
        let wild = |s: &str| Some(Hostname::Wildcard(s.into()));
        let ids: Vec<Arc<ObjectRef>> = (0..300)
            .map(|i| Arc::new(ObjectRef::new("ns", format!("r{i:03}"))))
            .collect();
        // Many exact hostnames (several shards), some shared, wildcards and "any".
        let hosts = |i: usize| -> Vec<Option<Hostname>> {
            match i % 10 {
                0 => vec![None],
                1 => vec![wild(".example.com")],
                2 => vec![
                    wild(&format!(".z{}.org", i % 3)),
                    exact("shared.example.com"),
                ],
                _ => vec![exact(&format!("h{i}.example.com"))],
            }
        };
        let all = |skip: &[usize], changed: &[usize]| {
            let mut v = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if skip.contains(&i) {
                    continue;
                }
                let path = if changed.contains(&i) { "/new" } else { "/" };
                v.extend(entries(id, &hosts(i), path));
            }
            v
        };
        let before = RouteTable::build(all(&[], &[]));
        let snapshot = view(&before);
        // Remove routes 0, 1, 2, 5; change 10, 11, 12, 15 (new path).
        let gone = [0, 1, 2, 5];
        let changed = [10, 11, 12, 15];
        let removed: Vec<(Option<Hostname>, ObjectRef)> = gone
            .iter()
            .chain(&changed)
            .flat_map(|&i| {
                let id = ObjectRef::clone(&ids[i]);
                hosts(i).into_iter().map(move |h| (h, id.clone()))
            })
            .collect();
        let added: Vec<_> = changed
            .iter()
            .flat_map(|&i| entries(&ids[i], &hosts(i), "/new"))
            .collect();
        let after = before.update(&removed, added);
        let want = RouteTable::build(all(&gone, &changed));
        assert_eq!(view(&after), view(&want));
        assert_eq!(after.len(), want.len());
        assert_eq!(view(&before), snapshot, "the old table is unchanged");
        // Lookups on the updated table.
        let headers = HeaderMap::new();
        let req = RequestView::new(&Method::GET, "/new", None, &headers);
        assert_eq!(
            after.find("h15.example.com", &req).unwrap().route.name,
            "r015"
        );
        assert!(
            after
                .groups()
                .iter()
                .all(|(h, _)| *h != exact("h5.example.com")),
            "r005 is gone, and its hostname's group with it"
        );
        assert_eq!(
            after.find("x.example.com", &req).unwrap().route.name,
            "r011",
            "wildcard entries of a changed route are replaced"
        );
        // Removing every route of a wildcard empties and drops its group.
        let z: Vec<(Option<Hostname>, ObjectRef)> = (0..300)
            .filter(|i| i % 10 == 2)
            .map(|i| (wild(&format!(".z{}.org", i % 3)), ObjectRef::clone(&ids[i])))
            .collect();
        let without_z = after.update(&z, Vec::new());
        assert!(without_z
            .groups()
            .iter()
            .all(|(h, _)| !matches!(h, Some(Hostname::Wildcard(s)) if s.ends_with(".org"))));
    }
}
