//! One watch stream's task: it sends the snapshot (or replays the history after a resume point),
//! SYNCED, then every change its selector wants, in order, each once. Its cursor is the position
//! of the last change it has considered: when the dispatcher marks it lagged, it reads the log
//! after the cursor at its own pace and carries on from its inbox, skipping what it has seen.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::domain::{Change, Job, ObjectId, PvcProgress};
use crate::error::{Error, Result};
use crate::store::{JobSnapshot, JobsSnapshot, Store};

use super::dispatch::{Inbox, Recent};
use super::lag::Lagging;
use super::outbox::Outbox;
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
    /// After the change at `position`: the changes after it, at least up to `present` (the
    /// store's head when the stream began: every write acknowledged before it, even one this
    /// replica's feed has not published yet). `ended`: the job of a WatchJob is already
    /// terminal or gone, so the stream ends after SYNCED.
    Resume {
        position: u64,
        present: u64,
        ended: bool,
    },
    /// WatchJob's snapshot, read at `read.position`, of a client that has, as of `from`, the
    /// records up to `sent` (fresh: `from` is the read's position and `sent` is `None`).
    Job {
        from: u64,
        sent: Option<String>,
        read: JobSnapshot,
    },
    /// WatchJobs' snapshot, page by page from `page` (read after `sent`), likewise.
    Jobs {
        from: u64,
        sent: Option<String>,
        page: JobsSnapshot,
    },
}

/// Whether the stream is still sending its snapshot.
#[derive(Clone, PartialEq)]
enum Phase {
    /// The client has, as of the cursor, every record of the selection up to the key `sent`
    /// and none after it; changes of records after it are left to the snapshot.
    Snapshot { sent: Option<String> },
    /// After SYNCED (or when resuming after a change): every change the selector wants.
    Live,
}

pub(super) struct Watcher {
    /// Unique among the hub's watchers.
    id: u64,
    store: Store,
    lagging: Lagging,
    recent: Arc<std::sync::RwLock<Recent>>,
    heartbeat: Duration,
    shutdown: watch::Receiver<bool>,
    out: Outbox,
    selector: Selector,
    /// Which selection a snapshot token belongs to.
    selection: u32,
    /// Position of the last change considered.
    cursor: u64,
    phase: Phase,
    snapshot_page: usize,
    last_sent: Instant,
}

impl Watcher {
    pub(super) fn new(
        hub: &JobHub,
        id: u64,
        out: Outbox,
        (selector, selection): (Selector, u32),
    ) -> Watcher {
        Watcher {
            id,
            store: hub.store.clone(),
            lagging: hub.lagging.clone(),
            recent: hub.recent.clone(),
            heartbeat: hub.config.heartbeat,
            snapshot_page: hub.config.snapshot_page.max(1),
            shutdown: hub.shutdown.clone(),
            out,
            selector,
            selection,
            cursor: 0,
            phase: Phase::Live,
            last_sent: Instant::now(),
        }
    }

    /// `start` comes boxed: a snapshot's first page is large, and the future holds its
    /// arguments for as long as the stream lives.
    pub(super) async fn run(mut self, mut inbox: Inbox, start: Box<Start>) {
        // The snapshot and the catching up read the store: their futures are large and live
        // only for a while, so they are boxed, and what stays resident for the stream's life
        // is the small future of `follow` (thousands of watchers each hold one).
        let outcome = async {
            Box::pin(self.begin(*start)).await?;
            self.follow(&mut inbox).await
        }
        .await;
        if let Err(Stop::Fail(error)) = outcome {
            self.out.push(Err(error)).await;
        }
    }

    /// Sends one event, with the token of where the stream stands after it.
    async fn send(
        &mut self,
        kind: EventKind,
        job: Option<Arc<Job>>,
        pvc: Option<Arc<PvcProgress>>,
    ) -> Result<(), Stop> {
        let point = match &self.phase {
            Phase::Snapshot { sent } => ResumePoint::InSnapshot {
                position: self.cursor,
                selection: self.selection,
                sent: sent.clone(),
            },
            Phase::Live => ResumePoint::After(self.cursor),
        };
        let event = WatchEvent {
            kind,
            job,
            pvc,
            resume_token: encode_token(&point),
        };
        // The common case, room in the stream's buffer, registers no waiter anywhere: at
        // thousands of watchers per change, waiting on the shutdown signal for every send was a
        // lock and a list insertion per delivery.
        if let Some(event) = self.out.try_push(Ok(event)) {
            // A full buffer: wait for the stream to take an event (boxed, being the rare case),
            // or for the shutdown.
            let shutdown = self.shutdown.clone();
            let out = &self.out;
            Box::pin(async move {
                tokio::select! {
                    () = out.push(event) => Ok(()),
                    () = stopped(shutdown) => Err(shutting_down()),
                }
            })
            .await?;
        }
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Sends the snapshot, or its rest, or the history since the resume point; then SYNCED.
    async fn begin(&mut self, start: Start) -> Result<(), Stop> {
        match start {
            Start::Resume {
                position,
                present,
                ended,
            } => {
                self.cursor = position;
                self.catch_up().await?;
                // The feed may not have published every acknowledged write yet (on Postgres it
                // follows the log): SYNCED means caught up with the present, so read the rest
                // from the log. The inbox's copies of them are skipped as already considered.
                self.replay_until(present).await?;
                if ended && let Selector::Job { finished, .. } = &mut self.selector {
                    *finished = true;
                }
            }
            Start::Job { from, sent, read } => {
                self.cursor = from;
                self.phase = Phase::Snapshot { sent };
                self.job_snapshot(read).await?;
            }
            Start::Jobs { from, sent, page } => {
                self.cursor = from;
                self.phase = Phase::Snapshot { sent };
                self.jobs_snapshot(page).await?;
            }
        }
        self.phase = Phase::Live;
        self.send(EventKind::Synced, None, None).await?;
        if self.selector.finished() {
            return Err(Stop::Done);
        }
        Ok(())
    }

    /// Marks the record `key` as sent: the stream's tokens now continue after it.
    fn sent(&mut self, key: &str) {
        self.phase = Phase::Snapshot {
            sent: Some(key.to_string()),
        };
    }

    /// Whether the client has the record `key` (so its changes are to be sent as they come).
    fn known(&self, key: &str) -> bool {
        match &self.phase {
            Phase::Snapshot { sent } => sent.as_deref().is_some_and(|sent| key <= sent),
            Phase::Live => true,
        }
    }

    /// WatchJob's snapshot: the job, then one PVC_UPDATED per PVC record in id order, each
    /// unless the client has it already; first the changes since `from` of what it has.
    async fn job_snapshot(&mut self, read: JobSnapshot) -> Result<(), Stop> {
        self.replay_until(read.position).await?;
        let Some(job) = read.job else {
            // Deleted since the client's token: the replay has told it.
            return Ok(());
        };
        let job = Arc::new(job);
        if let Selector::Job { finished, .. } = &mut self.selector {
            *finished = *finished || job.state.is_terminal();
        }
        if !self.known("") {
            self.sent("");
            self.send(EventKind::Snapshot, Some(job.clone()), None)
                .await?;
        }
        let mut pvcs = read.pvcs;
        pvcs.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        for pvc in pvcs {
            if self.known(pvc.id.as_str()) {
                continue;
            }
            self.sent(pvc.id.as_str());
            self.send(
                EventKind::PvcUpdated,
                Some(job.clone()),
                Some(Arc::new(pvc)),
            )
            .await?;
        }
        Ok(())
    }

    /// WatchJobs' snapshot, page by page in id order, so a watcher holds one page, not every
    /// matching job. Before each page (read at a later position than the last), the changes
    /// since of the jobs already sent; changes of the jobs not yet sent are left to their page.
    async fn jobs_snapshot(&mut self, mut page: JobsSnapshot) -> Result<(), Stop> {
        loop {
            self.replay_until(page.position).await?;
            let more = page.jobs.len() >= self.snapshot_page;
            for job in page.jobs {
                self.sent(job.id.as_str());
                self.send(EventKind::Snapshot, Some(Arc::new(job)), None)
                    .await?;
            }
            let (Selector::Jobs { filter }, Phase::Snapshot { sent: Some(last) }) =
                (&self.selector, &self.phase)
            else {
                return Ok(());
            };
            if !more {
                return Ok(());
            }
            let last = ObjectId::parse("a snapshot key", last)?;
            page = self
                .store
                .snapshot_jobs(filter, Some(&last), self.snapshot_page)
                .await?;
        }
    }

    /// Considers every change after the cursor up to `bound` (a snapshot read's position),
    /// from the log, where they all are; the cursor is then at `bound`.
    async fn replay_until(&mut self, bound: u64) -> Result<(), Stop> {
        while self.cursor < bound {
            let job = self.selector.job().cloned();
            let page = self
                .store
                .changes_after(self.cursor, job.as_ref(), CATCH_UP_PAGE)
                .await?;
            let full = page.len() >= CATCH_UP_PAGE as usize;
            for change in page.iter().filter(|c| c.seq <= bound) {
                self.consider(change).await?;
            }
            if !full || page.last().is_some_and(|c| c.seq >= bound) {
                break;
            }
        }
        self.cursor = self.cursor.max(bound);
        Ok(())
    }

    /// Reports `change` if the selector wants it (and, inside a snapshot, the client has its
    /// record); the cursor moves past it either way.
    async fn consider(&mut self, change: &Change) -> Result<(), Stop> {
        if change.seq <= self.cursor {
            return Ok(());
        }
        self.cursor = change.seq;
        if !self.known(self.selector.key_of(change)) {
            return Ok(());
        }
        if let Some(kind) = self.selector.select(change) {
            self.send(kind, Some(change.job.clone()), change.pvc.clone())
                .await?;
            if self.selector.finished() && self.phase == Phase::Live {
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

    /// Live changes, heartbeats, shutdown. The waits on shutdown and on the heartbeat are made
    /// once for the stream, not once per change: the heartbeat timer is moved only when it
    /// fires early (something was sent since it was set). A client that goes away drops the
    /// stream, and this watcher with it.
    async fn follow(&mut self, inbox: &mut Inbox) -> Result<(), Stop> {
        let stop = stopped(self.shutdown.clone());
        let idle = tokio::time::sleep_until(self.last_sent + self.heartbeat);
        tokio::pin!(stop, idle);
        loop {
            if inbox.lagged.swap(false, Ordering::AcqRel) {
                tracing::debug!(
                    cursor = self.cursor,
                    "watcher lagged; catching up from the log"
                );
                Box::pin(self.catch_up()).await?;
            }
            tokio::select! {
                received = inbox.changes.recv() => match received {
                    Some(change) => self.consider(&change).await?,
                    None => return Err(shutting_down()),
                },
                () = &mut idle => {
                    let due = self.last_sent + self.heartbeat;
                    if due <= Instant::now() {
                        self.send(EventKind::Heartbeat, None, None).await?;
                    }
                    idle.as_mut().reset(self.last_sent + self.heartbeat);
                }
                () = &mut stop => return Err(shutting_down()),
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
