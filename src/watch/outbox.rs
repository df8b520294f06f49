//! The events a watcher has made and its stream has not yet taken. The watcher runs inside its
//! stream ([`super::EventRx`]), so both ends live in one task: a short queue with no wake-ups.
//! A watcher that finds the queue full waits without registering anything: the stream polls it
//! again as soon as it has taken an event and the queue is empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use super::WatchEvent;
use crate::error::Result;

/// Events buffered between a watcher and its stream.
const CAPACITY: usize = 4;

#[derive(Clone, Default)]
pub(super) struct Outbox {
    queue: Arc<Mutex<VecDeque<Result<WatchEvent>>>>,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Result<WatchEvent>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `event`, or hands it back if the queue is full.
    pub(super) fn try_push(&self, event: Result<WatchEvent>) -> Option<Result<WatchEvent>> {
        let mut queue = self.lock();
        if queue.len() >= CAPACITY {
            return Some(event);
        }
        queue.push_back(event);
        None
    }

    /// Queues `event` once there is room.
    pub(super) async fn push(&self, event: Result<WatchEvent>) {
        let mut event = Some(event);
        std::future::poll_fn(
            |_| match self.try_push(event.take().expect("pushed once")) {
                None => Poll::Ready(()),
                Some(back) => {
                    event = Some(back);
                    // No waker: the stream polls this watcher again after taking an event.
                    Poll::Pending
                }
            },
        )
        .await
    }

    /// The oldest event, if any.
    pub(super) fn pop(&self) -> Option<Result<WatchEvent>> {
        self.lock().pop_front()
    }
}
