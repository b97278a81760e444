//! The two queues in front of the SQLite connection, and the threads that serve them.
//!
//! A thread woken for every operation preempts whatever runs on its core, and commits what it
//! finds, often that one operation. For a webhook waiting on its accept that is right. For a
//! worker beside the API it was the dearest part of a run: its threads, niced below the API's,
//! were preempted for each of their own journal writes, and each write was committed alone
//! (docs/server.md, issue 19, eleventh round). So operations queue in one of two lanes, chosen by
//! the thread that queues them ([`queue_this_thread`]), each served by a thread of its own; the
//! background lane's thread runs when a core is free, and finds the worker's writes gathered.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::Operation;

/// Which of the connection's threads takes an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Woken at once (the API's operations, and every process that only serves or only works).
    Prompt,
    /// Run when a core is free: a worker's operations beside the API.
    Background,
}

impl Lane {
    pub(super) fn thread_name(self) -> &'static str {
        match self {
            Lane::Prompt => "riposte-sqlite",
            Lane::Background => "riposte-sql-bg",
        }
    }

    /// Gives the calling thread its lane's scheduling: the background lane's thread becomes
    /// `SCHED_BATCH`, which Linux never lets preempt a running thread on waking up (its turn comes
    /// when a core is free or the running thread's slice ends), at its usual share of the CPU.
    /// Elsewhere, or refused, it stays a normal thread and its operations are only later.
    pub(super) fn schedule_this_thread(self) {
        #[cfg(target_os = "linux")]
        if self == Lane::Background {
            let parameters = libc::sched_param { sched_priority: 0 };
            // SAFETY: `sched_setscheduler` reads `parameters`, which outlives the call; pid 0 is
            // the calling thread. Any thread may move itself to SCHED_BATCH without privileges.
            #[allow(unsafe_code)]
            let refused = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &parameters) };
            if refused != 0 {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    "The SQLite store's background thread runs as a normal thread."
                );
            }
        }
    }
}

thread_local! {
    static QUEUES_IN: Cell<Lane> = const { Cell::new(Lane::Prompt) };
}

/// Operations the calling thread queues from now on go to `lane`.
pub(super) fn queue_this_thread(lane: Lane) {
    QUEUES_IN.with(|queued| queued.set(lane));
}

/// The operations waiting for the connection, by lane.
#[derive(Default)]
pub(super) struct Lanes {
    waiting: Mutex<Waiting>,
    prompt_ready: Condvar,
    background_ready: Condvar,
    /// Operations queued in the prompt lane so far: the checkpointer tells a burst of accepts from
    /// a calm by whether it grew.
    prompt_arrivals: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    prompt: Vec<Operation>,
    background: Vec<Operation>,
    /// The store's last handle is gone (the threads end once their lane is empty), or a thread
    /// panicked (nothing more is taken).
    closed: bool,
}

impl Waiting {
    fn lane(&mut self, lane: Lane) -> &mut Vec<Operation> {
        match lane {
            Lane::Prompt => &mut self.prompt,
            Lane::Background => &mut self.background,
        }
    }
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // An operation's panic is caught where it runs; none happens under this lock.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ready(&self, lane: Lane) -> &Condvar {
        match lane {
            Lane::Prompt => &self.prompt_ready,
            Lane::Background => &self.background_ready,
        }
    }

    /// Queues `operation` in the calling thread's lane, waking that lane's thread if it was idle.
    /// Once the threads have stopped, the operation is dropped, which answers it with an error.
    pub(super) fn push(&self, operation: Operation) {
        let lane = QUEUES_IN.with(Cell::get);
        if lane == Lane::Prompt {
            self.prompt_arrivals.fetch_add(1, Ordering::Relaxed);
        }
        let mut waiting = self.lock();
        if waiting.closed {
            return;
        }
        let queue = waiting.lane(lane);
        let was_idle = queue.is_empty();
        queue.push(operation);
        drop(waiting);
        // A lane that already held operations has had its thread woken; it takes them all.
        if was_idle {
            self.ready(lane).notify_one();
        }
    }

    /// How many operations have been queued in the prompt lane.
    pub(super) fn prompt_arrivals(&self) -> u64 {
        self.prompt_arrivals.load(Ordering::Relaxed)
    }

    /// Waits until `lane` holds an operation: `false` once the store is closed and it is empty.
    fn wait_for(&self, lane: Lane) -> bool {
        let mut waiting = self.lock();
        loop {
            if !waiting.lane(lane).is_empty() {
                return true;
            }
            if waiting.closed {
                return false;
            }
            waiting = self
                .ready(lane)
                .wait(waiting)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Takes up to `max` operations, the prompt lane's first, from both lanes: whichever thread
    /// holds the connection commits what waits for it.
    pub(super) fn take(&self, max: usize) -> Vec<Operation> {
        let mut waiting = self.lock();
        let prompt = waiting.prompt.len().min(max);
        let mut group: Vec<Operation> = waiting.prompt.drain(..prompt).collect();
        let background = waiting.background.len().min(max - group.len());
        group.extend(waiting.background.drain(..background));
        group
    }

    /// No operation will come any more: the threads finish what waits and end.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.prompt_ready.notify_all();
        self.background_ready.notify_all();
    }

    /// Serves `lane` on the calling thread with `run`, which takes the connection and runs what
    /// waits, until the store is closed and the lane is empty.
    pub(super) fn serve(&self, lane: Lane, mut run: impl FnMut()) {
        let _abandoned_on_panic = Serving(self);
        while self.wait_for(lane) {
            run();
        }
    }
}

/// Should a lane's thread panic, nothing would answer what waits in its lane: the store stops
/// instead, as it did with one thread, and every operation waiting or yet to come is dropped,
/// which answers it with an error.
struct Serving<'a>(&'a Lanes);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let abandoned = {
                let mut waiting = self.0.lock();
                waiting.closed = true;
                let mut abandoned = std::mem::take(&mut waiting.prompt);
                abandoned.append(&mut waiting.background);
                abandoned
            };
            drop(abandoned);
            self.0.prompt_ready.notify_all();
            self.0.background_ready.notify_all();
        }
    }
}
