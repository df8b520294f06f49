//! One watch stream's task: it sends the snapshot (or replays the history after a resume point),
//! SYNCED, then every change its selector wants, in order, each once. Its cursor is the position
//! of the last change it has considered: when the dispatcher marks it lagged, it reads the log
//! after the cursor at its own pace and carries on from its inbox, skipping what it has seen.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::domain::{Change, Job, ObjectId, PvcProgress};
use crate::error::{Error, Result};
use crate::store::Store;

use super::dispatch::{Inbox, Recent};
use super::lag::Lagging;
use super::selector::Selector;
use super::token::{ResumePoint, encode_token};
use super::{EventKind, JobHub, WatchEvent};

/// Changes read from the log per query while catching up.
const CATCH_UP_PAGE: u32 = 500;

/// Why a watcher stopped early.
enum Stop {
    /// The client went away, or the stream is complete.
    Done,
    /// End the stream with this error.
    Fail(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fail(e)
    }
}

/// How a stream begins.
#[allow(clippy::large_enum_variant)] // made once per stream
pub(super) enum Start {
    Resume(u64),
    JobSnapshot {
        position: u64,
        job: Job,
        pvcs: Vec<PvcProgress>,
    },
    JobsSnapshot {
        position: u64,
        jobs: Vec<Job>,
    },
}

pub(super) struct Watcher {
    /// Unique among the hub's watchers.
    id: u64,
    store: Store,
    lagging: Lagging,
    recent: Arc<std::sync::RwLock<Recent>>,
    heartbeat: Duration,
    shutdown: watch::Receiver<bool>,
    out: mpsc::Sender<Result<WatchEvent>>,
    selector: Selector,
    /// Position of the last change considered.
    cursor: u64,
    /// Whether the events being sent belong to the initial snapshot.
    in_snapshot: bool,
    snapshot_page: usize,
    /// While a snapshot read in several pages is being completed: the position of each page.
    pages: Option<SnapshotPages>,
    last_sent: Instant,
}

/// A WatchJobs snapshot read in keyset pages by id, each at its own position. A change of a job
/// is already in the snapshot if its page was read at or after it.
struct SnapshotPages {
    /// (last id, position) of each full page, in id order.
    full: Vec<(ObjectId, u64)>,
    /// The position of the last page, which covers every id after the full pages.
    rest: u64,
}

impl SnapshotPages {
    fn position_of(&self, id: &ObjectId) -> u64 {
        self.full
            .iter()
            .find(|(last, _)| id.as_str() <= last.as_str())
            .map_or(self.rest, |(_, position)| *position)
    }
}

impl Watcher {
    pub(super) fn new(
        hub: &JobHub,
        id: u64,
        out: mpsc::Sender<Result<WatchEvent>>,
        selector: Selector,
    ) -> Watcher {
        Watcher {
            id,
            store: hub.store.clone(),
            lagging: hub.lagging.clone(),
            recent: hub.recent.clone(),
            heartbeat: hub.config.heartbeat,
            snapshot_page: hub.config.snapshot_page.max(1),
            pages: None,
            shutdown: hub.shutdown.clone(),
            out,
            selector,
            cursor: 0,
            in_snapshot: false,
            last_sent: Instant::now(),
        }
    }

    pub(super) async fn run(mut self, mut inbox: Inbox, start: Start) {
        let outcome = async {
            self.begin(start).await?;
            self.follow(&mut inbox).await
        }
        .await;
        if let Err(Stop::Fail(error)) = outcome {
            let _ = self.out.send(Err(error)).await;
        }
    }

    async fn send(
        &mut self,
        kind: EventKind,
        job: Option<Arc<Job>>,
        pvc: Option<Arc<PvcProgress>>,
    ) -> Result<(), Stop> {
        let point = if self.in_snapshot {
            ResumePoint::InSnapshot(self.cursor)
        } else {
            ResumePoint::After(self.cursor)
        };
        let event = WatchEvent {
            kind,
            job,
            pvc,
            resume_token: encode_token(point),
        };
        let shutdown = self.shutdown.clone();
        tokio::select! {
            sent = self.out.send(Ok(event)) => sent.map_err(|_| Stop::Done)?,
            () = stopped(shutdown) => return Err(shutting_down()),
        }
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The snapshot (or the history since the resume point), then SYNCED.
    async fn begin(&mut self, start: Start) -> Result<(), Stop> {
        match start {
            Start::Resume(position) => {
                self.cursor = position;
                self.catch_up().await?;
            }
            Start::JobSnapshot {
                position,
                job,
                pvcs,
            } => {
                self.cursor = position;
                self.in_snapshot = true;
                let job = Arc::new(job);
                if let Selector::Job { finished, .. } = &mut self.selector {
                    *finished = job.state.is_terminal();
                }
                self.send(EventKind::Snapshot, Some(job.clone()), None)
                    .await?;
                for pvc in pvcs {
                    self.send(
                        EventKind::PvcUpdated,
                        Some(job.clone()),
                        Some(Arc::new(pvc)),
                    )
                    .await?;
                }
            }
            Start::JobsSnapshot { position, jobs } => {
                self.cursor = position;
                self.in_snapshot = true;
                self.jobs_snapshot(position, jobs).await?;
            }
        }
        self.in_snapshot = false;
        self.send(EventKind::Synced, None, None).await?;
        if self.selector.finished() {
            return Err(Stop::Done);
        }
        Ok(())
    }

    /// Sends a WatchJobs snapshot page by page, so a watcher holds one page, not every matching
    /// job. Pages read later are at later positions: the changes after the first page's
    /// position are then replayed, each unless its job's page already shows it, still with
    /// in-snapshot tokens (resuming from one starts a fresh snapshot), at least up to the last
    /// page's position — from the log where the live feed has not got that far yet.
    async fn jobs_snapshot(&mut self, first_position: u64, first: Vec<Job>) -> Result<(), Stop> {
        let mut full = Vec::new();
        let (mut position, mut jobs) = (first_position, first);
        loop {
            let last = (jobs.len() >= self.snapshot_page)
                .then(|| jobs.last().map(|j| j.id.clone()))
                .flatten();
            for job in jobs {
                self.send(EventKind::Snapshot, Some(Arc::new(job)), None)
                    .await?;
            }
            let Some(last) = last else {
                break;
            };
            let Selector::Jobs { filter } = &self.selector else {
                break;
            };
            let next = self
                .store
                .snapshot_jobs(filter, Some(&last), self.snapshot_page)
                .await?;
            full.push((last, position));
            (position, jobs) = (next.position, next.jobs);
        }
        if !full.is_empty() {
            self.pages = Some(SnapshotPages {
                full,
                rest: position,
            });
            self.catch_up().await?;
            // The live feed may not have reached the last page's position yet; the log has.
            while self.cursor < position {
                let changes = self
                    .store
                    .changes_after(self.cursor, None, CATCH_UP_PAGE)
                    .await?;
                if changes.is_empty() {
                    break;
                }
                for change in changes {
                    self.consider(&change).await?;
                }
            }
            self.pages = None;
        }
        Ok(())
    }

    /// Reports `change` if the selector wants it; the cursor moves past it either way.
    async fn consider(&mut self, change: &Change) -> Result<(), Stop> {
        if change.seq <= self.cursor {
            return Ok(());
        }
        self.cursor = change.seq;
        if let Some(pages) = &self.pages
            && change.seq <= pages.position_of(&change.job.id)
        {
            // Its page was read after this change: the snapshot already shows it.
            return Ok(());
        }
        if let Some(kind) = self.selector.select(change) {
            self.send(kind, Some(change.job.clone()), change.pvc.clone())
                .await?;
            if self.selector.finished() {
                return Err(Stop::Done);
            }
        }
        Ok(())
    }

    /// Reads the log after the cursor to its end (only this job's changes, for WatchJob).
    async fn catch_up(&mut self) -> Result<(), Stop> {
        let mut floor_checked = false;
        let catching_up = self.lagging.enter(self.id, self.cursor);
        loop {
            let job = self.selector.job().cloned();
            let in_memory = self.recent.read().unwrap_or_else(|p| p.into_inner()).after(
                self.cursor,
                job.as_ref(),
                CATCH_UP_PAGE as usize,
            );
            let page: Vec<Arc<Change>> = match in_memory {
                Some(page) => page,
                None if !floor_checked => {
                    // Reading the log: first make sure it still holds what comes next.
                    floor_checked = true;
                    let floor = self.store.history().await?.floor;
                    if self.cursor < floor {
                        return Err(Stop::Fail(Error::Unavailable(
                            "the watch fell behind the retained history; resume with the last token to get a fresh snapshot".into(),
                        )));
                    }
                    continue;
                }
                None => self
                    .store
                    .changes_after(self.cursor, job.as_ref(), CATCH_UP_PAGE)
                    .await?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            };
            for change in &page {
                self.consider(change).await?;
            }
            catching_up.at(self.cursor);
            if page.len() < CATCH_UP_PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Live changes, heartbeats, shutdown.
    async fn follow(&mut self, inbox: &mut Inbox) -> Result<(), Stop> {
        loop {
            if inbox.lagged.swap(false, Ordering::AcqRel) {
                tracing::debug!(
                    cursor = self.cursor,
                    "watcher lagged; catching up from the log"
                );
                self.catch_up().await?;
            }
            let shutdown = self.shutdown.clone();
            let idle_until = self.last_sent + self.heartbeat;
            tokio::select! {
                received = inbox.changes.recv() => match received {
                    Some(change) => self.consider(&change).await?,
                    None => return Err(shutting_down()),
                },
                () = tokio::time::sleep_until(idle_until) => {
                    self.send(EventKind::Heartbeat, None, None).await?;
                }
                () = stopped(shutdown) => return Err(shutting_down()),
                () = self.out.closed() => return Err(Stop::Done),
            }
        }
    }
}

/// Resolves once the server starts shutting down.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    loop {
        let stop = *shutdown.borrow_and_update();
        if stop {
            return;
        }
        if shutdown.changed().await.is_err() {
            // The sender is gone without a shutdown: nothing will ever stop this stream early.
            std::future::pending::<()>().await;
        }
    }
}

fn shutting_down() -> Stop {
    Stop::Fail(Error::Unavailable(
        "the server is shutting down; resume with the last resume_token elsewhere".into(),
    ))
}
