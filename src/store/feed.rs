//! The live feed of committed changes, in position order, and the head position: what watchers
//! and the count cache follow. Each backend publishes to it once a change is committed (SQLite's
//! writer, Postgres's follower); a receiver that falls more than [`CAPACITY`] behind is told it
//! lagged and reads the rest from the change log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::domain::Change;

/// Changes kept in memory for live receivers.
const CAPACITY: usize = 4096;

pub(crate) struct Feed {
    sender: broadcast::Sender<Arc<Change>>,
    /// Position of the newest change published.
    head: AtomicU64,
}

impl Feed {
    /// A feed whose changes follow position `head`.
    pub fn new(head: u64) -> Feed {
        Feed {
            sender: broadcast::channel(CAPACITY).0,
            head: AtomicU64::new(head),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }

    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Moves the head to `position` without publishing (SQLite's writer moves it before it
    /// answers its callers, and publishes after).
    pub fn advance(&self, position: u64) {
        self.head.fetch_max(position, Ordering::AcqRel);
    }

    /// Publishes a committed change (nobody listening is fine) and moves the head to it.
    pub fn publish(&self, change: Arc<Change>) {
        self.advance(change.seq);
        let _ = self.sender.send(change);
    }
}
