//! A queue to a task of this process that sends what queued up while its last call was out in
//! one call to Redis: group commit ([`super::chains`]).

use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::error::Error;

/// The sending end; the task is started on first use, and again should its runtime have stopped
/// (a process that serves the API and works runs two).
pub(super) struct Queue<T> {
    sender: Mutex<Option<mpsc::UnboundedSender<T>>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            sender: Mutex::new(None),
        }
    }
}

impl<T> Queue<T> {
    /// Queues `item`, first calling `start` with a new queue's receiving end if no task takes it.
    pub(super) fn send(
        &self,
        item: T,
        start: impl FnOnce(mpsc::UnboundedReceiver<T>),
    ) -> Result<(), Error> {
        let mut sender = self
            .sender
            .lock()
            .map_err(|_| Error::Config("a Redis writer's queue lock is poisoned".into()))?;
        let item = match sender.as_ref() {
            Some(running) => match running.send(item) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(item)) => item,
            },
            None => item,
        };
        let (new, receiver) = mpsc::unbounded_channel();
        start(receiver);
        // Just made, its receiver alive: the send cannot fail.
        let _ = new.send(item);
        *sender = Some(new);
        Ok(())
    }
}

/// Adds to `batch` what is queued, up to `max` in all; waits for one first if `batch` is empty.
/// `false` once the queue is closed and `batch` empty: the task's work is done.
pub(super) async fn gather<T>(
    queue: &mut mpsc::UnboundedReceiver<T>,
    batch: &mut Vec<T>,
    max: usize,
) -> bool {
    if batch.is_empty() {
        match queue.recv().await {
            Some(item) => batch.push(item),
            None => return false,
        }
    }
    while batch.len() < max {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    true
}
