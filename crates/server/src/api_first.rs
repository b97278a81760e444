//! In a process that serves webhooks and works, a burst of webhooks holds the worker back.
//!
//! The worker's threads already yield the CPU to the API's (they are niced), but not the store: an
//! accept waits in the store's queue (Redis's connection, SQLite's one thread) behind the journal
//! writes of every run the worker has in hand. So during a burst (many accepts in flight at once,
//! and for a short calm after) the worker starts an advance only while it has fewer than a few
//! under way; the runs it holds wait for their turn, and it goes back to its full concurrency once
//! the burst is over. Meanwhile it claims only what it may start, so that jobs it could not start
//! stay in the queue for other worker processes. An accept answered late is a SIEM retrying or
//! giving up; a run started late is only later, and the worker never stops altogether.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Accepts in flight at or above which the API is taking a burst: a quarter of the 64 connections
/// of `bench/load`'s closed loop, and far above what a steady 2,000 alerts/s keeps in flight (one
/// or two).
pub const BURST_ACCEPTS: usize = 16;

/// Advances the worker keeps under way during a burst, so that runs still finish. With 8 the
/// store's queue stayed long (docs/server.md, fourteenth round); 1 was no better than 2.
pub const ADVANCES_IN_A_BURST: usize = 2;

/// How long after the accepts in flight last reached [`BURST_ACCEPTS`] the burst is over. A run's
/// advance, once started, goes on to its end: without the calm, every dip between two deliveries
/// would let all the runs in hand start at once.
pub const CALM: Duration = Duration::from_millis(20);

/// What the webhook handler and the worker of one process share.
#[derive(Debug)]
pub struct ApiFirst {
    accepting: AtomicUsize,
    advancing: AtomicUsize,
    burst_accepts: usize,
    advances_in_a_burst: usize,
    calm: Duration,
    /// When the accepts in flight were last at or above `burst_accepts`: microseconds after
    /// `started`, plus one (0: never).
    last_burst: AtomicU64,
    started: Instant,
    /// Woken when an advance ends.
    advance_ended: Notify,
}

impl Default for ApiFirst {
    fn default() -> Self {
        Self::new(BURST_ACCEPTS, ADVANCES_IN_A_BURST, CALM)
    }
}

impl ApiFirst {
    /// A burst is `burst_accepts` accepts in flight and lasts until `calm` after they drop below;
    /// during it the worker starts advances only while fewer than `advances_in_a_burst` are
    /// under way.
    pub fn new(burst_accepts: usize, advances_in_a_burst: usize, calm: Duration) -> Self {
        Self {
            accepting: AtomicUsize::new(0),
            advancing: AtomicUsize::new(0),
            burst_accepts: burst_accepts.max(1),
            advances_in_a_burst: advances_in_a_burst.max(1),
            calm,
            last_burst: AtomicU64::new(0),
            started: Instant::now(),
            advance_ended: Notify::new(),
        }
    }

    /// Deliveries being accepted now.
    pub fn accepts_in_flight(&self) -> usize {
        self.accepting.load(Ordering::Relaxed)
    }

    /// Counts a delivery as in flight until the guard drops.
    pub fn accepting(&self) -> Accepting<'_> {
        if self.accepting.fetch_add(1, Ordering::Relaxed) + 1 >= self.burst_accepts {
            self.saw_burst();
        }
        Accepting(self)
    }

    /// Waits until the worker may start an advance, and counts it as under way until the guard
    /// drops.
    pub async fn turn(&self) -> Advancing<'_> {
        let mut asked = None;
        loop {
            let ended = self.advance_ended.notified();
            tokio::pin!(ended);
            // Registered before looking, so an advance that ends in between still wakes this one.
            ended.as_mut().enable();
            let Some(calm_at) = self.take_turn() else {
                return Advancing {
                    api_first: self,
                    held_back: asked.map(|asked: Instant| asked.elapsed()),
                };
            };
            asked.get_or_insert_with(Instant::now);
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep_until(calm_at) => {}
            }
        }
    }

    /// How many of the `wanted` jobs a worker's shard holding `held` may claim now: all of them,
    /// except in a burst, when it only tops up to the advances a burst lets it start. The jobs it
    /// could not start stay in the queue, free for other worker processes.
    pub fn claimable(&self, held: usize, wanted: usize) -> usize {
        match self.burst_until() {
            None => wanted,
            Some(_) => wanted.min(self.advances_in_a_burst.saturating_sub(held)),
        }
    }

    /// Takes a turn, or says when to look again if none ends before.
    fn take_turn(&self) -> Option<Instant> {
        let mut advancing = self.advancing.load(Ordering::Relaxed);
        loop {
            if advancing >= self.advances_in_a_burst
                && let Some(calm_at) = self.burst_until()
            {
                return Some(calm_at);
            }
            match self.advancing.compare_exchange_weak(
                advancing,
                advancing + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return None,
                Err(now) => advancing = now,
            }
        }
    }

    /// While a burst lasts, when it will be over unless it goes on.
    fn burst_until(&self) -> Option<Instant> {
        let now = Instant::now();
        if self.accepting.load(Ordering::Relaxed) >= self.burst_accepts {
            return Some(now + self.calm);
        }
        match self.last_burst.load(Ordering::Relaxed) {
            0 => None,
            last => Some(self.started + Duration::from_micros(last - 1) + self.calm)
                .filter(|&calm_at| calm_at > now),
        }
    }

    fn saw_burst(&self) {
        let since_start = self.started.elapsed().as_micros();
        let stamp = u64::try_from(since_start).unwrap_or(u64::MAX - 1) + 1;
        self.last_burst.store(stamp, Ordering::Relaxed);
    }
}

/// A delivery in flight ([`ApiFirst::accepting`]).
pub struct Accepting<'a>(&'a ApiFirst);

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        if self.0.accepting.fetch_sub(1, Ordering::Relaxed) >= self.0.burst_accepts {
            // The burst lasted until now: its calm starts here.
            self.0.saw_burst();
        }
    }
}

/// An advance under way ([`ApiFirst::turn`]).
pub struct Advancing<'a> {
    api_first: &'a ApiFirst,
    held_back: Option<Duration>,
}

impl Advancing<'_> {
    /// How long a burst held this advance back, if it did.
    pub fn held_back(&self) -> Option<Duration> {
        self.held_back
    }
}

impl Drop for Advancing<'_> {
    fn drop(&mut self) {
        self.api_first.advancing.fetch_sub(1, Ordering::Relaxed);
        self.api_first.advance_ended.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Poll;

    use futures::FutureExt;
    use futures::poll;

    use super::*;

    const CALM: Duration = Duration::from_millis(20);

    fn burst_of_four_two_advances() -> ApiFirst {
        ApiFirst::new(4, 2, CALM)
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_burst_the_worker_takes_every_turn_it_asks_for() {
        let api_first = burst_of_four_two_advances();
        // Three in flight: one short of a burst.
        let _accepting: Vec<_> = (0..3).map(|_| api_first.accepting()).collect();
        let turns: Vec<_> = (0..10)
            .map(|_| api_first.turn().now_or_never().expect("a turn at once"))
            .collect();
        assert!(turns.iter().all(|turn| turn.held_back().is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn in_a_burst_a_turn_beyond_the_few_waits_for_one_to_end() {
        let api_first = burst_of_four_two_advances();
        let accepting: Vec<_> = (0..4).map(|_| api_first.accepting()).collect();
        assert_eq!(api_first.accepts_in_flight(), 4);
        let first = api_first.turn().now_or_never().expect("a first turn");
        let _second = api_first.turn().now_or_never().expect("a second turn");
        let mut third = pin!(api_first.turn());
        assert!(poll!(third.as_mut()).is_pending());
        // The burst goes on well past its calm: the turn still waits.
        tokio::time::advance(CALM * 5).await;
        assert!(poll!(third.as_mut()).is_pending());
        tokio::time::advance(Duration::from_millis(3)).await;
        drop(first);
        let Poll::Ready(third) = poll!(third.as_mut()) else {
            panic!("the turn an advance left was not taken");
        };
        assert_eq!(third.held_back(), Some(CALM * 5 + Duration::from_millis(3)));
        drop(accepting);
        assert_eq!(api_first.accepts_in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn in_a_burst_a_shard_claims_only_what_it_may_start() {
        let api_first = burst_of_four_two_advances();
        assert_eq!(api_first.claimable(0, 32), 32);
        let accepting: Vec<_> = (0..4).map(|_| api_first.accepting()).collect();
        assert_eq!(api_first.claimable(0, 32), 2);
        assert_eq!(api_first.claimable(1, 32), 1);
        assert_eq!(api_first.claimable(0, 1), 1);
        assert_eq!(api_first.claimable(3, 32), 0);
        drop(accepting);
        assert_eq!(api_first.claimable(3, 32), 0, "claimed within the calm");
        tokio::time::advance(CALM).await;
        assert_eq!(api_first.claimable(3, 32), 32);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_over_a_calm_after_its_accepts_drop_below_the_mark() {
        let api_first = burst_of_four_two_advances();
        let mut accepting: Vec<_> = (0..4).map(|_| api_first.accepting()).collect();
        let _held: Vec<_> = (0..2)
            .map(|_| api_first.turn().now_or_never().expect("a turn"))
            .collect();
        let mut waiting = pin!(api_first.turn());
        assert!(poll!(waiting.as_mut()).is_pending());
        // Below the mark, but within the calm: the burst is not over.
        accepting.pop();
        tokio::time::advance(CALM / 2).await;
        assert!(poll!(waiting.as_mut()).is_pending());
        assert!(api_first.turn().now_or_never().is_none());
        // The calm has passed: every turn is free again, though two advances are still under way.
        let waited = tokio::time::timeout(CALM, waiting).await.expect("the turn");
        assert_eq!(waited.held_back(), Some(CALM));
        assert!(api_first.turn().now_or_never().is_some());
    }
}
