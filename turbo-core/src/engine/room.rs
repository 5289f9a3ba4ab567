//! A resend's place under the auto bound.
//!
//! In auto mode the lane's bound counts worker slots, and a node keeps its
//! slot through its retries. After a burst of 429s on a lane without limits
//! the refused nodes all held slots, and they all resent the moment the
//! pause ended however far the bound had been cut: a new burst of 429s,
//! another pause, longer each time. So what is on the wire is counted apart
//! (`LaneRuntime::sending`: a node's first attempt from its launch, a retry
//! from when it takes its place here, each until its outcome), and a retry
//! waits until fewer than the bound are on the wire.
//!
//! Only atomics and the lane's `room` notify; no lock. Lost wake-ups are
//! ruled out Dekker-style: a waiter counts itself in `room_waiters` before
//! it reads `sending`, a sender lowers `sending` before it reads
//! `room_waiters` (both sequentially consistent), so one of the two sees
//! the other and the waiter, registered before its read, is woken.

use std::sync::atomic::Ordering;

use super::{Concurrency, LaneRuntime, Shared};

/// One attempt's place on the wire; given back on drop.
pub(super) struct Sending<'a> {
    lane: &'a LaneRuntime,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.lane.sending.fetch_sub(1, Ordering::SeqCst);
        if self.lane.room_waiters.load(Ordering::SeqCst) > 0 {
            self.lane.room.notify_waiters();
        }
    }
}

impl LaneRuntime {
    /// A place on the wire taken without waiting: a first attempt's worker
    /// slot, taken under the bound at launch, already stands for it, as
    /// every attempt's permit does with a fixed worker count.
    pub(super) fn place_on_wire(&self) -> Sending<'_> {
        self.sending.fetch_add(1, Ordering::SeqCst);
        Sending { lane: self }
    }

    /// Wakes resends waiting for a place (the bound grew).
    pub(super) fn room_grew(&self) {
        if self.room_waiters.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }
}

impl Shared {
    /// Waits for a place to send a node's next attempt on `lane`: in auto
    /// mode, until fewer than the lane's bound are on the wire; at once with
    /// a fixed worker count (the node's permit is its place). `None` when
    /// the engine halted first.
    pub(super) async fn room_to_resend<'a>(&self, lane: &'a LaneRuntime) -> Option<Sending<'a>> {
        if !matches!(self.concurrency, Concurrency::Auto { .. }) {
            return Some(lane.place_on_wire());
        }
        let mut halted = self.halted.subscribe();
        loop {
            lane.room_waiters.fetch_add(1, Ordering::SeqCst);
            let room = lane.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let target = lane.target.load(Ordering::Relaxed).max(1);
            let on_wire = lane.sending.load(Ordering::SeqCst);
            if on_wire < target {
                lane.room_waiters.fetch_sub(1, Ordering::SeqCst);
                if lane
                    .sending
                    .compare_exchange(on_wire, on_wire + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return Some(Sending { lane });
                }
                continue;
            }
            let halted_now = tokio::select! {
                () = &mut room => false,
                _ = halted.wait_for(|halted| *halted) => true,
            };
            lane.room_waiters.fetch_sub(1, Ordering::SeqCst);
            if halted_now {
                return None;
            }
        }
    }
}
