//! A stand-in for a GPU inference server (vLLM, SGLang, TGI): a fixed number
//! of service slots (its batch, bounded by KV-cache memory), a FIFO queue in
//! front of them, and a latency that grows with the batch.
//!
//! Latency of a request = base × (1 + slowdown × n / N), drawn when it
//! enters service, where base is a draw of [`MockServerConfig::latency`],
//! n the requests in service including it, and N the slots at that moment:
//! with the default slowdown 1, a full batch answers in twice the base
//! latency. Throughput therefore flattens at N / (base × (1 + slowdown)),
//! and beyond N requests wait in the queue; with a queue limit Q, a request
//! arriving to Q queued ones is answered 503.
//!
//! State: one [`CapacityQueue`] behind the [`Capacity`]'s mutex, held only
//! for the synchronous steps (arrive, finish, leave); waiters are woken
//! after it is released. Slot changes apply at the first arrival or
//! completion at or after their time.
//!
//! [`MockServerConfig::latency`]: super::MockServerConfig::latency

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::num::NonZeroUsize;
use std::pin::pin;
use std::str::FromStr;
use std::task::Poll;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::error::ProviderError;
use crate::headers::parse_go_duration;

/// The capacity settings ([`MockServerConfig::capacity`](super::MockServerConfig::capacity)).
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityModel {
    /// Requests served at once.
    pub slots: NonZeroUsize,
    /// How much a full batch slows each request down: latency is
    /// base × (1 + slowdown × in_service / slots). Default 1.
    pub slowdown: f64,
    /// Most requests waiting for a slot; one more is answered 503. `None`: unbounded.
    pub queue_limit: Option<usize>,
    /// Slot counts that take effect at given times after start.
    pub changes: Vec<CapacityChange>,
}

impl CapacityModel {
    /// `slots` slots, slowdown 1, an unbounded queue, no changes.
    pub fn new(slots: NonZeroUsize) -> Self {
        Self {
            slots,
            slowdown: 1.0,
            queue_limit: None,
            changes: Vec::new(),
        }
    }

    /// Checks that the slowdown is finite and not negative.
    pub fn validate(&self) -> Result<(), ProviderError> {
        if !(self.slowdown.is_finite() && self.slowdown >= 0.0) {
            return Err(ProviderError::InvalidConfig {
                message: format!(
                    "capacity slowdown {} must be finite and >= 0",
                    self.slowdown
                ),
            });
        }
        Ok(())
    }

    /// The latency of a request entering service as the `in_service`-th of `slots`.
    pub fn latency(&self, base: Duration, start: ServiceStart) -> Duration {
        let load = start.in_service as f64 / start.slots.max(1) as f64;
        base.mul_f64(1.0 + self.slowdown * load)
    }
}

/// A slot count that takes effect at a time after start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityChange {
    /// Time after the server's start (a `POST /reset` does not restart it).
    pub at: Duration,
    /// The new number of slots.
    pub slots: NonZeroUsize,
}

impl FromStr for CapacityChange {
    type Err = ProviderError;

    /// `60s:32`: a Go duration, then the slots.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| ProviderError::InvalidConfig {
            message: format!("capacity change {text:?}: {why} (expected e.g. 60s:32)"),
        };
        let (at, slots) = text
            .split_once(':')
            .ok_or_else(|| invalid("no `:` after the time"))?;
        Ok(Self {
            at: parse_go_duration(at).map_err(|_| invalid("the time is not a duration"))?,
            slots: slots
                .trim()
                .parse()
                .map_err(|_| invalid("the slots are not a positive whole number"))?,
        })
    }
}

/// The load a request found when it entered service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceStart {
    /// Requests in service, this one included.
    pub in_service: usize,
    /// Slots at that moment.
    pub slots: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    Serve(ServiceStart),
    Queued(u64),
    Overloaded,
}

/// The queue model, on the clock its caller passes; `W` is whatever wakes a
/// queued request (a oneshot sender in the server, a number in tests).
pub(super) struct CapacityQueue<W> {
    slots: usize,
    in_service: usize,
    queue: VecDeque<(u64, W)>,
    next_ticket: u64,
    queue_limit: Option<usize>,
    /// Not applied yet, latest first.
    changes: Vec<CapacityChange>,
    started: Instant,
}

impl<W> CapacityQueue<W> {
    pub(super) fn new(model: &CapacityModel, now: Instant) -> Self {
        let mut changes = model.changes.clone();
        changes.sort_by_key(|change| std::cmp::Reverse(change.at));
        Self {
            slots: model.slots.get(),
            in_service: 0,
            queue: VecDeque::new(),
            next_ticket: 0,
            queue_limit: model.queue_limit,
            changes,
            started: now,
        }
    }

    fn apply_changes(&mut self, now: Instant) {
        while let Some(change) = self.changes.last().copied() {
            if self.started + change.at > now {
                break;
            }
            self.changes.pop();
            self.slots = change.slots.get();
        }
    }

    /// Moves queued requests into free slots, in arrival order.
    fn promote(&mut self) -> Vec<(W, ServiceStart)> {
        let mut promoted = Vec::new();
        while self.in_service < self.slots {
            let Some((_, waiter)) = self.queue.pop_front() else {
                break;
            };
            self.in_service += 1;
            promoted.push((
                waiter,
                ServiceStart {
                    in_service: self.in_service,
                    slots: self.slots,
                },
            ));
        }
        promoted
    }

    /// A request arrives: served at once, queued (with its waiter) or refused;
    /// plus the queued requests a slot change let in.
    pub(super) fn arrive(&mut self, now: Instant, waiter: W) -> (Arrival, Vec<(W, ServiceStart)>) {
        self.apply_changes(now);
        let promoted = self.promote();
        let arrival = if self.in_service < self.slots && self.queue.is_empty() {
            self.in_service += 1;
            Arrival::Serve(ServiceStart {
                in_service: self.in_service,
                slots: self.slots,
            })
        } else if self
            .queue_limit
            .is_some_and(|limit| self.queue.len() >= limit)
        {
            Arrival::Overloaded
        } else {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.queue.push_back((ticket, waiter));
            Arrival::Queued(ticket)
        };
        (arrival, promoted)
    }

    /// A request in service ends: the queued requests let in.
    pub(super) fn finish(&mut self, now: Instant) -> Vec<(W, ServiceStart)> {
        self.in_service = self.in_service.saturating_sub(1);
        self.apply_changes(now);
        self.promote()
    }

    /// A queued request gives up: `true` if it was still queued, `false` if
    /// it had been let in already (it then holds a slot to finish).
    pub(super) fn leave(&mut self, ticket: u64) -> bool {
        match self.queue.iter().position(|(queued, _)| *queued == ticket) {
            Some(index) => {
                self.queue.remove(index);
                true
            }
            None => false,
        }
    }

    pub(super) fn in_service(&self) -> usize {
        self.in_service
    }

    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn slots(&self) -> usize {
        self.slots
    }
}

type Waiter = oneshot::Sender<ServiceStart>;

/// The server's capacity: the queue behind its lock.
pub(super) struct Capacity {
    queue: Mutex<CapacityQueue<Waiter>>,
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoSlot {
    /// The queue is full.
    Overloaded,
    /// The server is stopping.
    Stopping,
}

fn wake(promoted: Vec<(Waiter, ServiceStart)>) {
    for (waiter, start) in promoted {
        // A waiter that went away meanwhile releases its slot from its guard.
        let _ = waiter.send(start);
    }
}

/// A slot held by a request in service; released when dropped.
pub(super) struct ServiceSlot<'a>(&'a Capacity);

impl Drop for ServiceSlot<'_> {
    fn drop(&mut self) {
        let promoted = self.0.queue.lock().finish(super::state::now());
        wake(promoted);
    }
}

/// A place in the queue; leaves it when dropped before being let in.
struct QueuedGuard<'a> {
    capacity: &'a Capacity,
    ticket: u64,
    armed: bool,
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = self.capacity.queue.lock();
            if !queue.leave(self.ticket) {
                let promoted = queue.finish(super::state::now());
                drop(queue);
                wake(promoted);
            }
        }
    }
}

impl Capacity {
    pub(super) fn new(model: &CapacityModel, now: Instant) -> Self {
        Self {
            queue: Mutex::new(CapacityQueue::new(model, now)),
        }
    }

    /// In service, queued, slots.
    pub(super) fn load(&self) -> (usize, usize, usize) {
        let queue = self.queue.lock();
        (queue.in_service(), queue.queued(), queue.slots())
    }

    /// Waits for a slot (FIFO), unless the queue is full or `stop` turns true.
    pub(super) async fn enter(
        &self,
        stop: &watch::Sender<bool>,
    ) -> Result<(ServiceSlot<'_>, ServiceStart), NoSlot> {
        let (sender, receiver) = oneshot::channel();
        let (arrival, promoted) = self.queue.lock().arrive(super::state::now(), sender);
        wake(promoted);
        let ticket = match arrival {
            Arrival::Serve(start) => return Ok((ServiceSlot(self), start)),
            Arrival::Overloaded => return Err(NoSlot::Overloaded),
            Arrival::Queued(ticket) => ticket,
        };
        let mut guard = QueuedGuard {
            capacity: self,
            ticket,
            armed: true,
        };
        let mut stop = stop.subscribe();
        let mut stopped = pin!(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
        let mut receiver = pin!(receiver);
        let woken = poll_fn(|cx| {
            if let Poll::Ready(start) = receiver.as_mut().poll(cx) {
                return Poll::Ready(start.ok());
            }
            stopped.as_mut().poll(cx).map(|()| None)
        })
        .await;
        match woken {
            Some(start) => {
                guard.armed = false;
                Ok((ServiceSlot(self), start))
            }
            // The guard leaves the queue (or frees the slot it was just given).
            None => Err(NoSlot::Stopping),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(slots: usize, queue_limit: Option<usize>) -> CapacityModel {
        CapacityModel {
            queue_limit,
            ..CapacityModel::new(NonZeroUsize::new(slots).unwrap())
        }
    }

    fn start(in_service: usize, slots: usize) -> ServiceStart {
        ServiceStart { in_service, slots }
    }

    proptest::proptest! {
        /// Whatever arrives, finishes or leaves: never more in service than
        /// slots, the queue is let in strictly in arrival order, and a
        /// request waits only while every slot is taken.
        #[test]
        fn the_queue_is_fifo_and_never_overfills(
            slots in 1usize..6,
            steps in proptest::collection::vec(0u8..3, 1..200),
        ) {
            let now = Instant::now();
            let mut queue = CapacityQueue::new(&model(slots, None), now);
            let mut next_waiter = 0u32;
            let mut last_promoted = None;
            let mut queued: Vec<(u64, u32)> = Vec::new();
            for step in steps {
                let promoted = match step {
                    0 => {
                        next_waiter += 1;
                        let (arrival, promoted) = queue.arrive(now, next_waiter);
                        if let Arrival::Queued(ticket) = arrival {
                            queued.push((ticket, next_waiter));
                        }
                        promoted
                    }
                    1 if queue.in_service() > 0 => queue.finish(now),
                    _ => {
                        // The oldest queued request gives up.
                        if let Some((ticket, _)) = queued.first().copied() {
                            proptest::prop_assert!(queue.leave(ticket));
                            queued.remove(0);
                        }
                        Vec::new()
                    }
                };
                for (waiter, start) in promoted {
                    let (_, expected) = queued.remove(0);
                    proptest::prop_assert_eq!(waiter, expected);
                    proptest::prop_assert!(last_promoted < Some(waiter));
                    last_promoted = Some(waiter);
                    proptest::prop_assert!(start.in_service <= start.slots);
                }
                proptest::prop_assert!(queue.in_service() <= slots);
                proptest::prop_assert_eq!(queue.queued(), queued.len());
                if queue.queued() > 0 {
                    proptest::prop_assert_eq!(queue.in_service(), slots);
                }
            }
        }
    }

    #[test]
    fn requests_beyond_the_slots_queue_in_order_and_overflow_with_503() {
        let now = Instant::now();
        let mut queue = CapacityQueue::new(&model(2, Some(2)), now);
        assert_eq!(queue.arrive(now, 1).0, Arrival::Serve(start(1, 2)));
        assert_eq!(queue.arrive(now, 2).0, Arrival::Serve(start(2, 2)));
        assert_eq!(queue.arrive(now, 3).0, Arrival::Queued(0));
        assert_eq!(queue.arrive(now, 4).0, Arrival::Queued(1));
        assert_eq!(queue.arrive(now, 5).0, Arrival::Overloaded);
        assert_eq!((queue.in_service(), queue.queued()), (2, 2));
        let promoted: Vec<_> = queue.finish(now).into_iter().map(|(w, _)| w).collect();
        assert_eq!(promoted, [3]);
        assert!(queue.leave(1));
        assert!(!queue.leave(0));
        assert_eq!(queue.finish(now).len(), 0);
        assert_eq!((queue.in_service(), queue.queued()), (1, 0));
    }

    #[test]
    fn slot_changes_apply_at_their_time_and_let_the_queue_in() {
        let now = Instant::now();
        let mut model = model(1, None);
        model.changes = vec![
            CapacityChange {
                at: Duration::from_secs(10),
                slots: NonZeroUsize::new(3).unwrap(),
            },
            CapacityChange {
                at: Duration::from_secs(20),
                slots: NonZeroUsize::MIN,
            },
        ];
        let mut queue = CapacityQueue::new(&model, now);
        assert!(matches!(queue.arrive(now, 1).0, Arrival::Serve(_)));
        assert_eq!(queue.arrive(now, 2).0, Arrival::Queued(0));
        assert_eq!(queue.arrive(now, 3).0, Arrival::Queued(1));
        let later = now + Duration::from_secs(10);
        let (arrival, promoted) = queue.arrive(later, 4);
        let promoted: Vec<_> = promoted.into_iter().collect();
        assert_eq!(promoted, [(2, start(2, 3)), (3, start(3, 3))]);
        assert_eq!(arrival, Arrival::Queued(2));
        // Back to one slot: three in service drain before the queue moves.
        let shrunk = now + Duration::from_secs(20);
        assert!(queue.finish(shrunk).is_empty());
        assert!(queue.finish(shrunk).is_empty());
        assert_eq!(queue.finish(shrunk).len(), 1);
    }

    #[test]
    fn latency_grows_with_the_batch() {
        let model = model(4, None);
        let base = Duration::from_millis(200);
        assert_eq!(model.latency(base, start(1, 4)), Duration::from_millis(250));
        assert_eq!(model.latency(base, start(4, 4)), Duration::from_millis(400));
        let flat = CapacityModel {
            slowdown: 0.0,
            ..model
        };
        assert_eq!(flat.latency(base, start(4, 4)), base);
    }

    #[test]
    fn capacity_changes_parse() {
        let change: CapacityChange = "1m:32".parse().unwrap();
        assert_eq!(change.at, Duration::from_secs(60));
        assert_eq!(change.slots.get(), 32);
        for bad in ["60s", "later:3", "60s:0"] {
            assert!(bad.parse::<CapacityChange>().is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_that_leaves_frees_its_place() {
        let capacity = Capacity::new(&model(1, None), Instant::now());
        let stop = watch::Sender::new(false);
        let (slot, _) = capacity.enter(&stop).await.unwrap();
        {
            let waiting = capacity.enter(&stop);
            let mut waiting = pin!(waiting);
            assert!(futures_poll_once(waiting.as_mut()).await.is_none());
            assert_eq!(capacity.load(), (1, 1, 1));
        }
        assert_eq!(capacity.load(), (1, 0, 1));
        // Let in when the slot frees: it keeps the slot even if the stop
        // comes before it runs, and gives it back when dropped.
        let second = capacity.enter(&stop);
        let mut second = pin!(second);
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        drop(slot);
        assert_eq!(capacity.load(), (1, 0, 1));
        stop.send_replace(true);
        assert!(second.await.is_ok());
        assert_eq!(capacity.load(), (0, 0, 1));
        let third = capacity.enter(&stop).await;
        assert!(third.is_ok());
    }

    async fn futures_poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
        poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut future).poll(cx) {
                Poll::Ready(output) => Some(output),
                Poll::Pending => None,
            })
        })
        .await
    }

    use std::pin::Pin;
}
