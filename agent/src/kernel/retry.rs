//! Retrying map programming: a failed update (EIO, ENOMEM, EBUSY ... from a
//! kernel under pressure) is retried with bounded, jittered exponential
//! backoff instead of failing the configuration change at once. Errors that
//! another try cannot fix (a full map, a missing map) fail at once, and a
//! newer configuration or the agent stopping cancels the wait.
use std::{
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use tokio::sync::Notify;

use super::KernelError;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Longest delay between two tries.
    pub cap: Duration,
    /// Retries after the first try.
    pub retries: u32,
}

impl Default for RetryPolicy {
    /// Six retries over about three seconds: long enough for a transient
    /// kernel condition to clear, short enough that a change is never held
    /// back for long.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
            retries: 6,
        }
    }
}

/// Exponential delays with jitter: each delay is drawn from `[d/2, d]`, `d`
/// doubling from `base` up to `cap`, so agents that fail together do not
/// retry in lockstep.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            policy,
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// The delay before the next retry, `None` once the retries are spent.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.retries {
            return None;
        }
        let ceiling = self
            .policy
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.policy.cap);
        self.attempt += 1;
        // xorshift64: plenty for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = ceiling / 2;
        let spread = (ceiling - half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.rng % (spread + 1)
        };
        Some(half + Duration::from_nanos(jitter))
    }
}

impl KernelError {
    /// Whether trying the same update again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            KernelError::Map {
                source: aya::maps::MapError::SyscallError(s),
                ..
            } => !matches!(
                s.io_error.raw_os_error(),
                Some(libc::EINVAL | libc::EPERM | libc::EACCES | libc::E2BIG | libc::ENOSPC)
            ),
            KernelError::Io { .. } => true,
            _ => false,
        }
    }

    /// The map the error is about, if any (a metrics label).
    pub fn map_name(&self) -> Option<&'static str> {
        match self {
            KernelError::Map { map, .. } | KernelError::MapFull { map } => Some(map),
            KernelError::MissingMap(map) => Some(map),
            _ => None,
        }
    }
}

/// Cancels retry waits: a newer configuration supersedes the one being
/// applied, and stopping the agent ends every wait.
#[derive(Debug, Default)]
pub struct Interrupt {
    notify: Notify,
    requests: AtomicU64,
    stopping: AtomicBool,
}

impl Interrupt {
    /// A new configuration is on its way: waits of earlier ones end. Returns
    /// the ticket of the new one.
    pub fn supersede(&self) -> u64 {
        let ticket = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        self.notify.notify_waiters();
        ticket
    }

    /// The ticket of the most recent configuration.
    pub fn current(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// The agent is stopping: every wait ends now and later ones at once.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Why a configuration with `ticket` should not go on, if it should not.
    pub fn cancelled(&self, ticket: u64) -> Option<&'static str> {
        if self.stopping.load(Ordering::Acquire) {
            Some("the agent is stopping")
        } else if self.current() != ticket {
            Some("superseded by a newer configuration")
        } else {
            None
        }
    }

    /// Sleeps `delay` unless cancelled first; returns why it was cancelled.
    pub async fn sleep(&self, ticket: u64, delay: Duration) -> Option<&'static str> {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a notification in between is not lost.
        notified.as_mut().enable();
        if let Some(why) = self.cancelled(ticket) {
            return Some(why);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = notified => {}
        }
        self.cancelled(ticket)
    }
}

/// Why [`retry`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(transparent)]
    Failed(#[from] KernelError),
    #[error("cancelled: {0}")]
    Cancelled(&'static str),
}

/// Runs `attempt` until it succeeds, fails for good, the retries are spent
/// or `interrupt` cancels `ticket`. `on_error` sees every failure and the
/// delay before the next try (`None`: no further try).
pub async fn retry<T>(
    policy: RetryPolicy,
    interrupt: &Interrupt,
    ticket: u64,
    mut attempt: impl FnMut() -> Result<T, KernelError>,
    mut on_error: impl FnMut(&KernelError, Option<Duration>),
) -> Result<T, RetryError> {
    let mut backoff = Backoff::new(policy);
    loop {
        let err = match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let delay = err.is_transient().then(|| backoff.next_delay()).flatten();
        on_error(&err, delay);
        let Some(delay) = delay else {
            return Err(RetryError::Failed(err));
        };
        if let Some(why) = interrupt.sleep(ticket, delay).await {
            return Err(RetryError::Cancelled(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sluice_common::{ListenerKey, ListenerValue, PROTO_TCP};

    use super::*;
    use crate::kernel::{maps::FakeMaps, reconcile, KernelDesired};

    fn desired() -> KernelDesired {
        let mut d = KernelDesired::default();
        for port in [80, 81, 82] {
            d.listeners.insert(
                ListenerKey::new([0; 16], port, PROTO_TCP),
                ListenerValue::new(1, 0),
            );
        }
        d
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_then_stops() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
            retries: 5,
        };
        let mut b = Backoff::new(policy);
        let delays: Vec<Duration> = std::iter::from_fn(|| b.next_delay()).collect();
        assert_eq!(delays.len(), 5);
        for (d, ceiling) in delays.iter().zip([100u64, 200, 400, 400, 400]) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(*d >= ceiling / 2 && *d <= ceiling, "{d:?} vs {ceiling:?}");
        }
        // Jitter: two backoffs do not produce the same sequence.
        let seq = |mut b: Backoff| std::iter::from_fn(move || b.next_delay()).collect::<Vec<_>>();
        assert_ne!(seq(Backoff::new(policy)), seq(Backoff::new(policy)));
    }

    #[tokio::test(start_paused = true)]
    async fn injected_failures_are_retried_until_the_maps_converge() {
        let maps = Arc::new(Mutex::new(FakeMaps::default()));
        maps.lock().unwrap().failures.insert("LISTENERS", 3);
        let interrupt = Interrupt::default();
        let ticket = interrupt.supersede();
        let mut errors = Vec::new();
        let d = desired();
        let report = retry(
            RetryPolicy::default(),
            &interrupt,
            ticket,
            || reconcile(&mut *maps.lock().unwrap(), &d),
            |e, delay| errors.push((e.map_name(), delay.is_some())),
        )
        .await
        .unwrap();
        assert_eq!(errors, vec![(Some("LISTENERS"), true); 3]);
        // The last try wrote what the failed ones could not.
        assert!(report.stats.written >= 1);
        assert_eq!(maps.lock().unwrap().listeners, d.listeners);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_and_permanent_errors_are_not_retried() {
        let maps = Mutex::new(FakeMaps::default());
        maps.lock().unwrap().failures.insert("LISTENERS", 100);
        let interrupt = Interrupt::default();
        let ticket = interrupt.supersede();
        let d = desired();
        let mut tries = 0;
        let policy = RetryPolicy {
            retries: 4,
            ..Default::default()
        };
        let r = retry(
            policy,
            &interrupt,
            ticket,
            || {
                tries += 1;
                reconcile(&mut *maps.lock().unwrap(), &d)
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(r, Err(RetryError::Failed(_))), "{r:?}");
        assert_eq!(tries, 5, "one try and four retries");

        let full = Mutex::new(FakeMaps {
            max_listeners: Some(1),
            ..Default::default()
        });
        let mut tries = 0;
        let r = retry(
            policy,
            &interrupt,
            ticket,
            || {
                tries += 1;
                reconcile(&mut *full.lock().unwrap(), &d)
            },
            |_, _| {},
        )
        .await;
        assert!(
            matches!(
                &r,
                Err(RetryError::Failed(KernelError::MapFull {
                    map: "LISTENERS"
                }))
            ),
            "{r:?}"
        );
        assert_eq!(tries, 1, "a full map is not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_configuration_or_stopping_cancels_the_wait() {
        let interrupt = Arc::new(Interrupt::default());
        let failing = || -> Result<(), KernelError> {
            Err(KernelError::Io {
                what: "test".into(),
                source: std::io::Error::other("transient"),
            })
        };
        let policy = RetryPolicy {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(60),
            retries: 10,
        };
        let ticket = interrupt.supersede();
        let i = interrupt.clone();
        let task = tokio::spawn(async move { retry(policy, &i, ticket, failing, |_, _| {}).await });
        tokio::task::yield_now().await;
        interrupt.supersede();
        let r = task.await.unwrap();
        assert!(
            matches!(
                r,
                Err(RetryError::Cancelled("superseded by a newer configuration"))
            ),
            "{r:?}"
        );

        let ticket = interrupt.supersede();
        let i = interrupt.clone();
        let task = tokio::spawn(async move { retry(policy, &i, ticket, failing, |_, _| {}).await });
        tokio::task::yield_now().await;
        interrupt.stop();
        let r = task.await.unwrap();
        assert!(
            matches!(r, Err(RetryError::Cancelled("the agent is stopping"))),
            "{r:?}"
        );
    }
}
