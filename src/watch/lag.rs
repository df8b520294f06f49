//! Which watchers are reading the change log to catch up, and where their cursors are, so that
//! `/metrics` can say how many there are and how far behind the head the furthest one is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The cursors of the watchers catching up, by watcher.
#[derive(Clone, Default)]
pub(super) struct Lagging(Arc<Mutex<HashMap<u64, u64>>>);

impl Lagging {
    /// Marks `watcher` as catching up from `cursor` until the guard is dropped.
    pub(super) fn enter(&self, watcher: u64, cursor: u64) -> CatchingUp {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(watcher, cursor);
        CatchingUp {
            lagging: self.clone(),
            watcher,
        }
    }

    /// How many watchers are catching up, and how many changes the furthest is behind `head`.
    pub(super) fn summary(&self, head: u64) -> (usize, u64) {
        let cursors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let furthest = cursors
            .values()
            .min()
            .map_or(0, |c| head.saturating_sub(*c));
        (cursors.len(), furthest)
    }
}

/// One watcher catching up.
pub(super) struct CatchingUp {
    lagging: Lagging,
    watcher: u64,
}

impl CatchingUp {
    /// The watcher's cursor has moved to `cursor`.
    pub(super) fn at(&self, cursor: u64) {
        self.lagging
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.watcher, cursor);
    }
}

impl Drop for CatchingUp {
    fn drop(&mut self) {
        self.lagging
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.watcher);
    }
}
