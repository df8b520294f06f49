//! The one reader of the live feed for all of a replica's workers: each change is matched once
//! against every subscription, and only the workers that want it are woken. A worker that is
//! caught up then costs nothing for the changes it does not want; the fan's `head` tells it how
//! far every change has been looked at, so its cursor still moves. A change wanted by several
//! subscriptions is rendered once for all of them ([`Wanted::body`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use tokio::sync::{broadcast, mpsc};

use crate::domain::query::Filter;
use crate::domain::subscription::{Events, wants};
use crate::domain::{Change, Job};
use crate::store::Store;

/// Wanted changes one caught-up worker may have waiting before it is told it lagged.
const INBOX: usize = 1024;

/// A change some subscriptions want, and its webhook body once one of them has rendered it:
/// the body is the same for every subscription (only the headers differ).
pub(super) struct Wanted {
    pub change: Arc<Change>,
    body: OnceLock<Bytes>,
}

impl Wanted {
    pub(super) fn new(change: Arc<Change>) -> Wanted {
        Wanted {
            change,
            body: OnceLock::new(),
        }
    }

    /// The body, rendered by `render` the first time it is asked for.
    pub(super) fn body(&self, render: impl FnOnce(&Change) -> Bytes) -> Bytes {
        self.body.get_or_init(|| render(&self.change)).clone()
    }
}

struct Entry {
    key: u64,
    events: Events,
    filter: Filter<Job>,
    tx: mpsc::Sender<Arc<Wanted>>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Shared {
    entries: Mutex<(u64, Vec<Entry>)>,
    /// Every change up to here has been matched and, if wanted, handed to its inboxes.
    head: AtomicU64,
}

pub(super) struct Fan {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fan {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One worker's wanted changes from the fan.
pub(super) struct Inbox {
    rx: mpsc::Receiver<Arc<Wanted>>,
    /// Set when a change it wants could not be handed over (a full inbox, the fan lagging the
    /// feed): the worker reads the log again.
    lagged: Arc<AtomicBool>,
    shared: Arc<Shared>,
    key: u64,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut entries = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.1.retain(|e| e.key != self.key);
    }
}

impl Inbox {
    pub(super) async fn recv(&mut self) -> Option<Arc<Wanted>> {
        self.rx.recv().await
    }

    /// Whether a wanted change was missed since [`Inbox::resync`].
    pub(super) fn lagged(&self) -> bool {
        self.lagged.load(Ordering::SeqCst)
    }

    /// Called before reading the log: what is missed from now on is flagged again.
    pub(super) fn resync(&self) {
        self.lagged.store(false, Ordering::SeqCst);
    }

    /// The position every change up to which this worker has been given if it wanted it, when
    /// nothing is waiting and nothing was missed; `None` otherwise.
    pub(super) fn passed(&self) -> Option<u64> {
        let head = self.shared.head.load(Ordering::SeqCst);
        (self.rx.is_empty() && !self.lagged()).then_some(head)
    }
}

impl Fan {
    pub(super) fn start(store: &Store) -> Fan {
        let shared = Arc::<Shared>::default();
        let feed = store.subscribe();
        let task = tokio::spawn(run(feed, shared.clone()));
        Fan { shared, task }
    }

    /// An inbox for the changes `events` of the jobs matching `filter`.
    pub(super) fn register(&self, events: Events, filter: Filter<Job>) -> Inbox {
        let (tx, rx) = mpsc::channel(INBOX);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut entries = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.0 += 1;
        let key = entries.0;
        entries.1.push(Entry {
            key,
            events,
            filter,
            tx,
            lagged: lagged.clone(),
        });
        Inbox {
            rx,
            lagged,
            shared: self.shared.clone(),
            key,
        }
    }
}

async fn run(mut feed: broadcast::Receiver<Arc<Change>>, shared: Arc<Shared>) {
    loop {
        match feed.recv().await {
            Ok(change) => {
                {
                    let entries = shared
                        .entries
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    let mut wanted: Option<Arc<Wanted>> = None;
                    for entry in &entries.1 {
                        if !wants(entry.events, &entry.filter, &change) {
                            continue;
                        }
                        let one =
                            wanted.get_or_insert_with(|| Arc::new(Wanted::new(change.clone())));
                        if entry.tx.try_send(one.clone()).is_err() {
                            entry.lagged.store(true, Ordering::SeqCst);
                        }
                    }
                }
                shared.head.fetch_max(change.seq, Ordering::SeqCst);
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let entries = shared
                    .entries
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for entry in &entries.1 {
                    entry.lagged.store(true, Ordering::SeqCst);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
