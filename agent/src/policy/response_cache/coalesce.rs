//! Request coalescing: concurrent misses of one key make one upstream
//! request. The first becomes the *leader* and holds a [`FlightGuard`]
//! until the response is stored (or turned out not to be storable, or
//! failed); the others wait for the guard to go, at most a bounded time,
//! then look again and go upstream themselves when nothing was stored.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;

use super::key::Key;

/// The flights in the air, per key.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<Key, watch::Receiver<()>>>,
}

/// What a miss does.
#[derive(Debug)]
pub enum Join {
    /// Go upstream; the others wait until the guard is dropped.
    Leader(FlightGuard),
    /// Wait for the leader ([`Waiter::wait`]).
    Follower(Waiter),
}

impl Flights {
    /// Joins the flight of `key`, or starts it.
    pub fn join(self: &Arc<Self>, key: &Key) -> Join {
        let mut map = self.map.lock().expect("flights lock");
        if let Some(rx) = map.get(key) {
            return Join::Follower(Waiter(rx.clone()));
        }
        let (tx, rx) = watch::channel(());
        map.insert(key.clone(), rx);
        Join::Leader(FlightGuard {
            flights: self.clone(),
            key: key.clone(),
            _done: tx,
        })
    }

    /// Flights in the air (tests, admin).
    pub fn len(&self) -> usize {
        self.map.lock().expect("flights lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held by the leader; dropping it releases the followers.
#[derive(Debug)]
pub struct FlightGuard {
    flights: Arc<Flights>,
    key: Key,
    /// Dropped after the key left the map: waiters see the channel close.
    _done: watch::Sender<()>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.flights.map.lock() {
            map.remove(&self.key);
        }
    }
}

/// A follower's wait.
#[derive(Debug)]
pub struct Waiter(watch::Receiver<()>);

impl Waiter {
    /// Waits until the leader is done, at most `limit`; whether it was.
    pub async fn wait(mut self, limit: Duration) -> bool {
        // The sender never sends: `changed` ends with an error once it is dropped.
        tokio::time::timeout(limit, self.0.changed()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::response_cache::key::BaseKey;

    fn key(path: &str) -> Key {
        Key {
            base: BaseKey::new(&Arc::from("ns/r"), 0, "http", "h", &path.parse().unwrap()),
            variant: 0,
        }
    }

    #[tokio::test]
    async fn one_leader_per_key_and_followers_wake_when_it_is_done() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(guard) = flights.join(&key("/a")) else {
            panic!("first is the leader")
        };
        assert!(
            matches!(flights.join(&key("/b")), Join::Leader(_)),
            "other key"
        );
        let Join::Follower(w) = flights.join(&key("/a")) else {
            panic!("second waits")
        };
        let waiting = tokio::spawn(w.wait(Duration::from_secs(30)));
        drop(guard);
        assert!(
            waiting.await.unwrap(),
            "released by the leader, not the limit"
        );
        assert!(flights.is_empty());
        assert!(matches!(flights.join(&key("/a")), Join::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_stops_waiting_at_the_limit() {
        let flights = Arc::new(Flights::default());
        let _guard = flights.join(&key("/a"));
        let Join::Follower(w) = flights.join(&key("/a")) else {
            panic!("second waits")
        };
        assert!(!w.wait(Duration::from_secs(5)).await);
    }
}
