//! Fair sharing of a data-path worker between shards (Gateways): the
//! noisy-neighbour guard of sharded gateways.
//!
//! Every worker is a single-threaded runtime whose run queue is FIFO across
//! all its tasks, so a Gateway flooded with a few hundred busy connections
//! puts each of its requests ahead of a quiet Gateway's next one: the quiet
//! Gateway's latency grows with the flood. Here each shard's work on a
//! worker — its accept loops, connections and HTTP/2 streams, wrapped in
//! [`Fair`] — is timed per poll. Every [`EPOCH`] the worker works out which
//! shards used more than their fair share of the time its shards used
//! together (only while it is busy, and only among shards that had work).
//! A task of such a *heavy* shard is not polled when the runtime picks it:
//! it waits in its shard's queue, and a dispatcher task releases
//! [`RELEASE_PER_TICK`] of them per turn of the run queue, taking turns
//! between heavy shards. Light shards' tasks run as soon as they are woken.
//!
//! The heavy shard loses no throughput when nobody else wants the worker:
//! the dispatcher keeps releasing its tasks every turn (work-conserving),
//! and a shard alone on a worker is never heavy. Nothing is rejected here —
//! a flood is slowed by the kernel's socket buffers filling up, not by
//! errors; shedding is the connection and in-flight limits' job.
//!
//! All state is thread-local (no atomics on the request path beyond the
//! task's own flag). Only current-thread runtimes defer tasks: on a
//! multi-thread runtime a task may move between threads and its queue entry
//! would be stranded, so there [`Fair`] is a plain pass-through.
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use hyper::rt::Executor;

use crate::snapshot::ShardId;

/// How often a worker re-decides which shards are heavy.
pub const EPOCH: Duration = Duration::from_millis(5);
/// Tasks of heavy shards released per turn of the run queue.
pub const RELEASE_PER_TICK: usize = 8;
/// A worker is busy (and shares are enforced) when its shards' tasks used
/// at least this fraction of the last epochs' wall time.
const BUSY_FRACTION: f64 = 0.25;
/// A shard is heavy above this multiple of the fair share.
const HEAVY_MARGIN: f64 = 1.25;
/// A shard shares the worker while it was polled this recently: a Gateway
/// with sparse requests still gets its share (and its latency) when they come.
const ACTIVE_FOR: Duration = Duration::from_secs(1);

/// Whether shards share workers fairly (`--shard-fairness`); on by default.
static ENABLED: AtomicBool = AtomicBool::new(true);
/// Polls of heavy shards' tasks deferred, all workers (a metric).
static DEFERRED: AtomicU64 = AtomicU64::new(0);

/// Turns fair scheduling on or off for the whole process (tasks already
/// queued are still released).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Task polls deferred because their shard was over its share.
pub fn deferred_total() -> u64 {
    DEFERRED.load(Ordering::Relaxed)
}

/// A shard's task: polled through its worker's [`Scheduler`].
pub struct Fair<F> {
    inner: F,
    shard: ShardId,
    state: Arc<TaskState>,
}

/// Where a task is between its worker's queue and a poll.
struct TaskState(AtomicU8);

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RELEASED: u8 = 2;

impl<F> Fair<F> {
    /// Wraps `inner`, a task doing `shard`'s work.
    pub fn new(shard: ShardId, inner: F) -> Self {
        Self {
            inner,
            shard,
            state: Arc::new(TaskState(AtomicU8::new(IDLE))),
        }
    }
}

impl<F: Future> Future for Fair<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self` and `Fair` has no Drop impl that could move it.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let Some(start) =
            SCHEDULER.with(|s| s.borrow_mut().admit(this.shard, &this.state, cx.waker()))
        else {
            return Poll::Pending;
        };
        let out = inner.poll(cx);
        if let Some(start) = start {
            let spent = start.elapsed();
            SCHEDULER.with(|s| s.borrow_mut().charge(this.shard, spent));
        }
        out
    }
}

/// hyper's executor for a shard's connections: their HTTP/2 streams run as
/// [`Fair`] tasks of the shard. (Upgraded connections are Fair tasks too,
/// see `upgrade.rs`; pooled upstream connection drivers and mirrors are
/// not accounted: their work follows from requests the shard's accounted
/// tasks let through.)
#[derive(Clone, Copy, Debug)]
pub struct ShardExecutor(pub ShardId);

impl<F> Executor<F> for ShardExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Fair::new(self.0, fut));
    }
}

thread_local! {
    static SCHEDULER: RefCell<Scheduler> = RefCell::new(Scheduler::new());
    /// A dispatcher task is running on this thread. Apart from the
    /// scheduler so that a dispatcher dropped anywhere (even while the
    /// scheduler is borrowed, e.g. by a runtime shutting down) can clear it.
    static DISPATCHING: Cell<bool> = const { Cell::new(false) };
}

/// One worker's view of its shards.
struct Scheduler {
    /// Whether this thread runs a current-thread runtime (decided once).
    local: Option<bool>,
    epoch_start: Instant,
    shards: Vec<ShardUse>,
    /// The heavy shard the dispatcher serves first next turn.
    next: usize,
}

struct ShardUse {
    shard: ShardId,
    /// Nanoseconds polled this epoch.
    used: u64,
    /// Smoothed nanoseconds per epoch.
    average: f64,
    heavy: bool,
    /// When a task of the shard last ran here.
    seen: Instant,
    queue: VecDeque<(Waker, Arc<TaskState>)>,
}

impl Scheduler {
    fn new() -> Self {
        Self {
            local: None,
            epoch_start: Instant::now(),
            shards: Vec::new(),
            next: 0,
        }
    }

    /// Decides a poll: `None` defers it (the task is queued), `Some(t)` lets
    /// it run, timed from `t` when time is being accounted.
    fn admit(
        &mut self,
        shard: ShardId,
        task: &Arc<TaskState>,
        waker: &Waker,
    ) -> Option<Option<Instant>> {
        if !ENABLED.load(Ordering::Relaxed) || !self.is_local() {
            return Some(None);
        }
        let now = Instant::now();
        if now.duration_since(self.epoch_start) >= EPOCH {
            self.roll(now);
        }
        let i = self.index(shard, now);
        match task.0.swap(IDLE, Ordering::Relaxed) {
            RELEASED => {
                self.shards[i].seen = now;
                return Some(Some(now));
            }
            QUEUED => {
                // Woken by something else while waiting: stays queued.
                task.0.store(QUEUED, Ordering::Relaxed);
                return None;
            }
            _ => {}
        }
        if !self.shards[i].heavy {
            self.shards[i].seen = now;
            return Some(Some(now));
        }
        task.0.store(QUEUED, Ordering::Relaxed);
        self.shards[i]
            .queue
            .push_back((waker.clone(), task.clone()));
        DEFERRED.fetch_add(1, Ordering::Relaxed);
        if !DISPATCHING.replace(true) {
            tokio::spawn(dispatch());
        }
        None
    }

    fn charge(&mut self, shard: ShardId, spent: Duration) {
        // The shard was recorded by `admit` just before.
        let i = self.index(shard, self.epoch_start);
        self.shards[i].used += u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
    }

    fn is_local(&mut self) -> bool {
        *self.local.get_or_insert_with(|| {
            tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
        })
    }

    fn index(&mut self, shard: ShardId, now: Instant) -> usize {
        match self.shards.iter().position(|s| s.shard == shard) {
            Some(i) => i,
            None => {
                self.shards.push(ShardUse {
                    shard,
                    used: 0,
                    average: 0.0,
                    heavy: false,
                    seen: now,
                    queue: VecDeque::new(),
                });
                self.shards.len() - 1
            }
        }
    }

    /// Ends an epoch: smooths each shard's use and re-decides heavy shards.
    fn roll(&mut self, now: Instant) {
        let wall = now.duration_since(self.epoch_start).as_nanos() as f64;
        self.epoch_start = now;
        // Per EPOCH, so that a late roll (an idle worker) does not inflate.
        let scale = EPOCH.as_nanos() as f64 / wall.max(1.0);
        let mut total = 0.0;
        let mut active = 0usize;
        for s in &mut self.shards {
            s.average = 0.5 * s.average + 0.5 * (s.used as f64 * scale);
            s.used = 0;
            total += s.average;
            if now.duration_since(s.seen) <= ACTIVE_FOR {
                active += 1;
            }
        }
        let busy = total >= BUSY_FRACTION * EPOCH.as_nanos() as f64;
        let share = total / active.max(1) as f64;
        for s in &mut self.shards {
            s.heavy = busy && active > 1 && s.average > HEAVY_MARGIN * share;
            if !s.heavy {
                // No longer over its share: its waiting tasks go now.
                for (waker, task) in s.queue.drain(..) {
                    task.0.store(RELEASED, Ordering::Relaxed);
                    waker.wake();
                }
            }
        }
        // Shards gone quiet with nothing queued are forgotten.
        self.shards
            .retain(|s| now.duration_since(s.seen) <= ACTIVE_FOR || !s.queue.is_empty());
    }

    /// Wakes up to [`RELEASE_PER_TICK`] queued tasks, one per heavy shard in
    /// turn. Returns whether any remain.
    fn release(&mut self) -> bool {
        let mut released = 0;
        let mut empty_in_a_row = 0;
        let n = self.shards.len();
        if n == 0 {
            return false;
        }
        while released < RELEASE_PER_TICK && empty_in_a_row < n {
            self.next = (self.next + 1) % n;
            let s = &mut self.shards[self.next];
            match s.queue.pop_front() {
                Some((waker, task)) => {
                    task.0.store(RELEASED, Ordering::Relaxed);
                    waker.wake();
                    released += 1;
                    empty_in_a_row = 0;
                }
                None => empty_in_a_row += 1,
            }
        }
        self.shards.iter().any(|s| !s.queue.is_empty())
    }
}

/// Releases queued tasks a few per turn of the scheduler until none are
/// left; `yield_now` puts it behind every task woken meanwhile, which is
/// what lets light shards' tasks run first.
fn dispatch() -> impl Future<Output = ()> + Send + 'static {
    /// Clears the running flag however the task ends — also when it is
    /// dropped before its first poll (its runtime shutting down), which is
    /// why it is made here and not inside the async block.
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = DISPATCHING.try_with(|d| d.set(false));
        }
    }
    let running = Running;
    async move {
        let _running = running;
        loop {
            if !SCHEDULER.with(|s| s.borrow_mut().release()) {
                return;
            }
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests;
