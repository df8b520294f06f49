//! The dispatcher: routes each committed change, without ever waiting, to the watchers that
//! want it — those of that one job (found by id) and every WatchJobs watcher — through small
//! per-watcher inboxes; a full inbox drops the change for that watcher only and marks it lagged.
//! The newest changes stay in memory ([`Recent`]) so that a short lag is caught up without a
//! query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use crate::domain::{Change, ObjectId};

/// Changes queued per watcher by the dispatcher; past that the watcher reads the log instead.
pub(super) const INBOX: usize = 32;
/// The newest changes kept in memory for watchers that lagged: a short lag (a burst larger than
/// an inbox) is caught up from here, without a query.
const RECENT: usize = 8192;

/// The newest committed changes, contiguous and in order (cleared if the dispatcher itself
/// misses some).
#[derive(Default)]
pub(super) struct Recent {
    changes: std::collections::VecDeque<Arc<Change>>,
}

impl Recent {
    pub(super) fn push(&mut self, change: &Arc<Change>) {
        if self
            .changes
            .back()
            .is_some_and(|last| last.seq + 1 != change.seq)
        {
            self.changes.clear();
        }
        if self.changes.len() == RECENT {
            self.changes.pop_front();
        }
        self.changes.push_back(change.clone());
    }

    /// Up to `limit` changes after `cursor` (of one job, if given), if memory still holds
    /// every change after `cursor`; `None` when the log must be read.
    pub(super) fn after(
        &self,
        cursor: u64,
        job: Option<&ObjectId>,
        limit: usize,
    ) -> Option<Vec<Arc<Change>>> {
        let first = self.changes.front()?.seq;
        if first > cursor + 1 {
            return None;
        }
        let start = (cursor + 1 - first) as usize;
        Some(
            self.changes
                .iter()
                .skip(start)
                .filter(|c| job.is_none_or(|id| c.job.id == *id))
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

/// A watcher's end of the dispatcher: its inbox, and the flag raised when a change was dropped.
pub(super) struct Inbox {
    pub(super) changes: mpsc::Receiver<Arc<Change>>,
    pub(super) lagged: Arc<AtomicBool>,
    /// Unregisters the watcher when its task ends.
    pub(super) _registration: Registration,
}

/// The dispatcher's end of a watcher.
pub(super) struct Slot {
    pub(super) id: u64,
    pub(super) changes: mpsc::Sender<Arc<Change>>,
    pub(super) lagged: Arc<AtomicBool>,
}

impl Slot {
    /// Queues a change without waiting; a full inbox marks the watcher as lagged instead.
    fn offer(&self, change: &Arc<Change>) {
        if self.changes.try_send(change.clone()).is_err() {
            self.lagged.store(true, Ordering::Release);
        }
    }
}

/// Who wants which changes.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) by_job: HashMap<ObjectId, Vec<Slot>>,
    pub(super) all: Vec<Slot>,
}

impl Registry {
    fn route(&mut self, change: &Arc<Change>) {
        if let Some(slots) = self.by_job.get(&change.job.id) {
            for slot in slots {
                slot.offer(change);
            }
        }
        for slot in &self.all {
            slot.offer(change);
        }
    }

    fn mark_all_lagged(&self) {
        for slot in self.by_job.values().flatten().chain(&self.all) {
            slot.lagged.store(true, Ordering::Release);
        }
    }
}

pub(super) struct Registration {
    pub(super) registry: Arc<Mutex<Registry>>,
    pub(super) id: u64,
    pub(super) job: Option<ObjectId>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        match &self.job {
            Some(job) => {
                if let Some(slots) = registry.by_job.get_mut(job) {
                    slots.retain(|s| s.id != self.id);
                    if slots.is_empty() {
                        registry.by_job.remove(job);
                    }
                }
            }
            None => registry.all.retain(|s| s.id != self.id),
        }
    }
}

/// Reads the feed of committed changes and routes each one; never waits for a watcher.
pub(super) async fn dispatch(
    mut feed: broadcast::Receiver<Arc<Change>>,
    registry: Arc<Mutex<Registry>>,
    recent: Arc<std::sync::RwLock<Recent>>,
) {
    loop {
        match feed.recv().await {
            Ok(change) => {
                // Kept before it is routed: a watcher that finds itself lagged finds it here.
                recent
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(&change);
                registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .route(&change)
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // The dispatcher itself fell behind the feed: every watcher reads the log.
                tracing::warn!(
                    missed,
                    "watch dispatcher lagged; watchers catch up from the log"
                );
                registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .mark_all_lagged();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
