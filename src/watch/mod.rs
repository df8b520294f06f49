//! Watching: the live-update contract of spec section 6.
//!
//! One dispatcher task reads the store's feed of committed changes and routes each change to the
//! watchers that want it: the watchers of that one job (found by id, so thousands of watchers of
//! other jobs cost nothing), and every WatchJobs watcher. Routing never waits: each watcher has a
//! small inbox, and when it is full the change is dropped *for that watcher* and the watcher is
//! marked as lagged. A writer therefore never waits for a watcher, and one slow client holds up
//! no one else.
//!
//! Each watcher is a task with a cursor: the log position of the last change it has considered.
//! It registers with the dispatcher *before* it reads its snapshot (or resume point), so no change
//! can fall in between. When it finds itself marked as lagged it reads the changes after its cursor
//! from the change log, at its own pace, then carries on from its inbox, skipping what it has
//! already considered. Nothing is skipped and nothing arrives twice.

mod dispatch;
mod frames;
mod lag;
mod outbox;
mod selector;
mod token;
mod watcher;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::domain::query::Filter;
use crate::domain::{Job, ObjectId, PvcProgress};
use crate::error::{Error, Result};
use crate::store::Store;
use dispatch::{INBOX, Inbox, Recent, Registration, Registry, Slot, dispatch};
use lag::Lagging;
use outbox::Outbox;
use selector::Selector;
use watcher::{Start, Watcher};

use token::{ResumePoint, decode_token, selection_of};

pub use frames::Frames;

/// Where a stream starts, from its resume token.
enum StartAt {
    /// After the change at `position`; the store's head was `present` when the stream began.
    Change { position: u64, present: u64 },
    /// Inside a snapshot of this stream's selection: the client has, as of `position`, the
    /// records up to `sent`.
    Snapshot { position: u64, sent: Option<String> },
    /// A fresh snapshot.
    Nothing,
}

/// What a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Snapshot,
    Synced,
    Created,
    Updated,
    PvcUpdated,
    Deleted,
    Heartbeat,
}

/// One event of a watch stream.
#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub job: Option<Arc<Job>>,
    pub pvc: Option<Arc<PvcProgress>>,
    /// Resume here to receive every change after this event.
    pub resume_token: String,
}

/// Watch settings.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// A stream that has sent nothing for this long gets a HEARTBEAT.
    pub heartbeat: Duration,
    /// Jobs read per page of a WatchJobs snapshot.
    pub snapshot_page: usize,
}

/// Starts watch streams, and routes committed changes to them.
#[derive(Clone)]
pub struct JobHub {
    store: Store,
    config: WatchConfig,
    shutdown: watch::Receiver<bool>,
    registry: Arc<Mutex<Registry>>,
    recent: Arc<std::sync::RwLock<Recent>>,
    /// The watchers catching up from the log, for `/metrics`.
    lagging: Lagging,
    next_id: Arc<AtomicU64>,
}

/// A watch stream's events. The watcher runs inside it: polling the stream runs the watcher
/// until it has an event or must wait, so a delivery wakes the one task that sends the stream
/// (no task of its own, no hand-off between tasks).
pub struct EventRx {
    source: Source,
}

enum Source {
    /// A watcher, run here, and what it has made and not yet been taken.
    Watcher {
        made: Outbox,
        watcher: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    },
    /// Events another task relays.
    Relay(mpsc::Receiver<Result<WatchEvent>>),
}

impl EventRx {
    /// Events that another task produces (a relay).
    pub fn relayed(events: mpsc::Receiver<Result<WatchEvent>>) -> EventRx {
        EventRx {
            source: Source::Relay(events),
        }
    }

    /// The next event; `None` once the stream is complete.
    pub async fn recv(&mut self) -> Option<Result<WatchEvent>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WatchEvent>>> {
        let (made, watcher) = match &mut self.source {
            Source::Relay(events) => return events.poll_recv(cx),
            Source::Watcher { made, watcher } => (made, watcher),
        };
        if let Some(event) = made.pop() {
            return Poll::Ready(Some(event));
        }
        let Some(running) = watcher.as_mut() else {
            // The watcher is done and everything it made has been taken.
            return Poll::Ready(None);
        };
        // Runs the watcher until it waits (for a change, the heartbeat, the shutdown, or room
        // in its queue — the last with no waker, as this poll comes back after taking one).
        if running.as_mut().poll(cx).is_ready() {
            *watcher = None;
        }
        match made.pop() {
            Some(event) => Poll::Ready(Some(event)),
            None if watcher.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl JobHub {
    /// Starts the dispatcher; it runs as long as the store's feed.
    pub fn new(store: Store, config: WatchConfig, shutdown: watch::Receiver<bool>) -> Self {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let recent = Arc::default();
        tokio::spawn(dispatch(
            store.subscribe(),
            registry.clone(),
            Arc::clone(&recent),
        ));
        JobHub {
            store,
            config,
            shutdown,
            registry,
            recent,
            lagging: Lagging::default(),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// How many watchers are catching up from the log, and how many changes behind this
    /// replica's head the furthest one is.
    pub fn lagging(&self) -> (usize, u64) {
        self.lagging.summary(self.store.head())
    }

    fn register(&self, job: Option<&ObjectId>) -> Inbox {
        let (tx, rx) = mpsc::channel(INBOX);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            changes: tx,
            lagged: lagged.clone(),
        };
        {
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            match job {
                Some(job) => registry.by_job.entry(job.clone()).or_default().push(slot),
                None => registry.all.push(slot),
            }
        }
        let registration = Registration {
            registry: self.registry.clone(),
            id,
            job: job.cloned(),
        };
        Inbox {
            changes: rx,
            lagged,
            _registration: registration,
        }
    }

    /// WatchJob: NOT_FOUND (before any event) for a job that does not exist, unless resuming.
    pub async fn watch_job(&self, id: ObjectId, resume_token: &str) -> Result<EventRx> {
        let inbox = self.register(Some(&id));
        let selection = selection_of("job", id.as_str());
        let selector = Selector::Job {
            id: id.clone(),
            finished: false,
        };
        let start = match self.resume_point(resume_token, selection).await? {
            StartAt::Change { position, present } => {
                let now = self.store.snapshot_job(&id).await?;
                let ended = now.job.is_none_or(|job| job.state.is_terminal());
                Start::Resume {
                    position,
                    present,
                    ended,
                }
            }
            StartAt::Snapshot { position, sent } => Start::Job {
                from: position,
                sent,
                read: self.store.snapshot_job(&id).await?,
            },
            StartAt::Nothing => {
                let read = self.store.snapshot_job(&id).await?;
                if read.job.is_none() {
                    return Err(Error::NotFound(format!("job {id} not found")));
                }
                Start::Job {
                    from: read.position,
                    sent: None,
                    read,
                }
            }
        };
        Ok(self.spawn((selector, selection), inbox, start))
    }

    /// WatchJobs over the jobs matching `filter`, the parsed `where_`.
    pub async fn watch_jobs(
        &self,
        filter: Filter<Job>,
        where_: &str,
        resume_token: &str,
    ) -> Result<EventRx> {
        let inbox = self.register(None);
        let selection = selection_of("where", where_);
        let page = self.config.snapshot_page;
        let start = match self.resume_point(resume_token, selection).await? {
            StartAt::Change { position, present } => Start::Resume {
                position,
                present,
                ended: false,
            },
            StartAt::Snapshot { position, sent } => {
                let after = match &sent {
                    Some(key) => Some(ObjectId::parse("resume_token", key).map_err(|_| {
                        Error::invalid(
                            "resume_token is malformed: pass a resume_token from an event as it was",
                        )
                    })?),
                    None => None,
                };
                Start::Jobs {
                    from: position,
                    sent,
                    page: self
                        .store
                        .snapshot_jobs(&filter, after.as_ref(), page)
                        .await?,
                }
            }
            StartAt::Nothing => {
                let first = self.store.snapshot_jobs(&filter, None, page).await?;
                Start::Jobs {
                    from: first.position,
                    sent: None,
                    page: first,
                }
            }
        };
        Ok(self.spawn((Selector::Jobs { filter }, selection), inbox, start))
    }

    /// Where a stream with `token` starts: after a change, inside a snapshot of `selection`, or
    /// from nothing (no token, a token of an earlier version's snapshot, or one older than the
    /// retained history: a fresh snapshot, never an error loop).
    async fn resume_point(&self, token: &str, selection: u32) -> Result<StartAt> {
        if token.is_empty() {
            return Ok(StartAt::Nothing);
        }
        let point = decode_token(token)?;
        let position = match &point {
            ResumePoint::After(p) | ResumePoint::InSnapshot { position: p, .. } => *p,
            ResumePoint::OldSnapshot => return Ok(StartAt::Nothing),
        };
        let history = self.store.history().await?;
        if position > history.head.max(self.store.head()) {
            return Err(Error::invalid(
                "resume_token is ahead of this server's history: it belongs to another database",
            ));
        }
        if let ResumePoint::InSnapshot { selection: of, .. } = &point
            && *of != selection
        {
            return Err(Error::invalid(
                "resume_token belongs to the snapshot of another watch: resume with the same job id or where as the stream it came from",
            ));
        }
        if position < history.floor {
            tracing::info!(
                position,
                floor = history.floor,
                "resume token older than the retained history: sending a snapshot"
            );
            return Ok(StartAt::Nothing);
        }
        Ok(match point {
            ResumePoint::InSnapshot { position, sent, .. } => StartAt::Snapshot { position, sent },
            _ => StartAt::Change {
                position,
                present: history.head,
            },
        })
    }

    fn spawn(&self, selector: (Selector, u32), inbox: Inbox, start: Start) -> EventRx {
        let made = Outbox::default();
        let watcher = Watcher::new(self, inbox._registration.id, made.clone(), selector);
        EventRx {
            source: Source::Watcher {
                made,
                watcher: Some(Box::pin(watcher.run(inbox, Box::new(start)))),
            },
        }
    }
}
