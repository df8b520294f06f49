//! Watching: the live-update contract of spec section 6.
//!
//! A watcher is one task. It subscribes to the store's live feed *before* it reads anything, so no
//! change can fall between its snapshot (or its resume point) and the live stream. It then keeps a
//! cursor — the position of the last change it has considered — and moves it forward one change at
//! a time: from the live feed when it keeps up, from the change log when it does not (it lagged
//! behind the feed's buffer, or it is resuming). Positions have no gaps, so a change the feed did
//! not bring is always fetched from the log: nothing is skipped and nothing arrives twice.
//!
//! A writer never waits for a watcher: publishing is a non-blocking broadcast. A watcher whose
//! client does not read simply stops moving; it holds its small channel and its cursor, and catches
//! up from the log, at its own pace, when the client reads again.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::domain::query::Filter;
use crate::domain::{Change, ChangeKind, Job, ObjectId, PvcProgress};
use crate::error::{Error, Result};
use crate::store::Store;

/// Changes read from the log per query while catching up.
const CATCH_UP_PAGE: u32 = 500;
/// Events buffered per watcher between its task and the client's stream.
const WATCHER_BUFFER: usize = 16;

/// What a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    pub pvc: Option<PvcProgress>,
    /// Resume here to receive every change after this event.
    pub resume_token: String,
}

/// Watch settings.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// A stream that has sent nothing for this long gets a HEARTBEAT.
    pub heartbeat: Duration,
}

/// Where a resume token points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumePoint {
    /// After the change at this position: resume with the changes after it.
    After(u64),
    /// Inside a snapshot taken at this position: the client may not have the whole snapshot,
    /// so resuming sends a fresh one (nothing is lost, nothing needs re-listing).
    InSnapshot(u64),
}

/// Resume tokens: an opaque encoding of a [`ResumePoint`].
pub fn encode_token(point: ResumePoint) -> String {
    let (tag, position) = match point {
        ResumePoint::After(p) => (b"w1", p),
        ResumePoint::InSnapshot(p) => (b"s1", p),
    };
    let mut bytes = Vec::with_capacity(10);
    bytes.extend_from_slice(tag);
    bytes.extend_from_slice(&position.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_token(token: &str) -> Result<ResumePoint> {
    let malformed =
        || Error::invalid("resume_token is malformed: pass a resume_token from an event as it was");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let (tag, rest) = bytes.split_first_chunk::<2>().ok_or_else(malformed)?;
    let position: [u8; 8] = rest.try_into().map_err(|_| malformed())?;
    let position = u64::from_be_bytes(position);
    match tag {
        b"w1" => Ok(ResumePoint::After(position)),
        b"s1" => Ok(ResumePoint::InSnapshot(position)),
        _ => Err(malformed()),
    }
}

/// Starts watch streams.
#[derive(Clone)]
pub struct JobHub {
    store: Store,
    config: WatchConfig,
    shutdown: watch::Receiver<bool>,
}

/// Which changes a stream reports, and when it is finished.
enum Selector {
    /// One job; finished after its terminal or DELETED event.
    Job { id: ObjectId, finished: bool },
    /// Every job matching a filter.
    Jobs { filter: Filter },
}

impl Selector {
    /// The event kind to report for `change`, if any.
    fn select(&mut self, change: &Change) -> Option<EventKind> {
        let reported = match change.kind {
            ChangeKind::Created => EventKind::Created,
            ChangeKind::Updated => EventKind::Updated,
            ChangeKind::PvcUpdated => EventKind::PvcUpdated,
            ChangeKind::Deleted => EventKind::Deleted,
        };
        match self {
            Selector::Job { id, finished } => {
                if change.job.id != *id {
                    return None;
                }
                *finished = change.kind == ChangeKind::Deleted || change.job.state.is_terminal();
                Some(reported)
            }
            Selector::Jobs { filter } => {
                let was = change
                    .before
                    .as_ref()
                    .is_some_and(|before| filter.matches(before));
                let is = change.kind != ChangeKind::Deleted && filter.matches(&change.job);
                match (was, is) {
                    (_, true) if change.kind == ChangeKind::Created => Some(EventKind::Created),
                    (false, true) => Some(EventKind::Updated),
                    (true, true) => Some(reported),
                    // It leaves the filter: once more, showing the state that no longer matches.
                    (true, false) if change.kind == ChangeKind::Deleted => Some(EventKind::Deleted),
                    (true, false) => Some(EventKind::Updated),
                    (false, false) => None,
                }
            }
        }
    }

    fn finished(&self) -> bool {
        matches!(self, Selector::Job { finished: true, .. })
    }
}

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

type Events = mpsc::Receiver<Result<WatchEvent>>;

impl JobHub {
    pub fn new(store: Store, config: WatchConfig, shutdown: watch::Receiver<bool>) -> Self {
        JobHub {
            store,
            config,
            shutdown,
        }
    }

    /// WatchJob: NOT_FOUND (before any event) for a job that does not exist, unless resuming.
    pub async fn watch_job(&self, id: ObjectId, resume_token: &str) -> Result<Events> {
        let feed = self.store.subscribe();
        let selector = Selector::Job {
            id: id.clone(),
            finished: false,
        };
        match self.resume_point(resume_token).await? {
            Some(position) => Ok(self.spawn(selector, feed, Start::Resume(position))),
            None => {
                let snapshot = self.store.snapshot_job(&id).await?;
                let job = snapshot
                    .job
                    .ok_or_else(|| Error::NotFound(format!("job {id} not found")))?;
                let start = Start::JobSnapshot {
                    position: snapshot.position,
                    job,
                    pvcs: snapshot.pvcs,
                };
                Ok(self.spawn(selector, feed, start))
            }
        }
    }

    /// WatchJobs over the jobs matching `filter`.
    pub async fn watch_jobs(&self, filter: Filter, resume_token: &str) -> Result<Events> {
        let feed = self.store.subscribe();
        let start = match self.resume_point(resume_token).await? {
            Some(position) => Start::Resume(position),
            None => {
                let snapshot = self.store.snapshot_jobs(&filter).await?;
                Start::JobsSnapshot {
                    position: snapshot.position,
                    jobs: snapshot.jobs,
                }
            }
        };
        Ok(self.spawn(Selector::Jobs { filter }, feed, start))
    }

    /// The position to resume after, or `None` for a fresh snapshot (no token, or a token older
    /// than the retained history: never an error loop).
    async fn resume_point(&self, token: &str) -> Result<Option<u64>> {
        if token.is_empty() {
            return Ok(None);
        }
        let (position, in_snapshot) = match decode_token(token)? {
            ResumePoint::After(p) => (p, false),
            ResumePoint::InSnapshot(p) => (p, true),
        };
        let history = self.store.history().await?;
        if position > history.head.max(self.store.head()) {
            return Err(Error::invalid(
                "resume_token is ahead of this server's history: it belongs to another database",
            ));
        }
        if in_snapshot {
            return Ok(None);
        }
        if position < history.floor {
            tracing::info!(
                position,
                floor = history.floor,
                "resume token older than the retained history: sending a snapshot"
            );
            return Ok(None);
        }
        Ok(Some(position))
    }

    fn spawn(
        &self,
        selector: Selector,
        feed: broadcast::Receiver<Arc<Change>>,
        start: Start,
    ) -> Events {
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let watcher = Watcher {
            store: self.store.clone(),
            heartbeat: self.config.heartbeat,
            shutdown: self.shutdown.clone(),
            out: tx,
            selector,
            cursor: 0,
            in_snapshot: false,
            last_sent: Instant::now(),
        };
        tokio::spawn(watcher.run(feed, start));
        rx
    }
}

/// How a stream begins.
#[allow(clippy::large_enum_variant)] // made once per stream
enum Start {
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

struct Watcher {
    store: Store,
    heartbeat: Duration,
    shutdown: watch::Receiver<bool>,
    out: mpsc::Sender<Result<WatchEvent>>,
    selector: Selector,
    /// Position of the last change considered.
    cursor: u64,
    /// Whether the events being sent belong to the initial snapshot.
    in_snapshot: bool,
    last_sent: Instant,
}

impl Watcher {
    async fn run(mut self, mut feed: broadcast::Receiver<Arc<Change>>, start: Start) {
        let outcome = async {
            self.begin(start).await?;
            self.follow(&mut feed).await
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
        pvc: Option<PvcProgress>,
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
                self.catch_up(None).await?;
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
                    self.send(EventKind::PvcUpdated, Some(job.clone()), Some(pvc))
                        .await?;
                }
            }
            Start::JobsSnapshot { position, jobs } => {
                self.cursor = position;
                self.in_snapshot = true;
                for job in jobs {
                    self.send(EventKind::Snapshot, Some(Arc::new(job)), None)
                        .await?;
                }
            }
        }
        self.in_snapshot = false;
        self.send(EventKind::Synced, None, None).await?;
        if self.selector.finished() {
            return Err(Stop::Done);
        }
        Ok(())
    }

    /// Reports `change` if the selector wants it; the cursor moves past it either way.
    async fn consider(&mut self, change: &Change) -> Result<(), Stop> {
        if change.seq <= self.cursor {
            return Ok(());
        }
        self.cursor = change.seq;
        if let Some(kind) = self.selector.select(change) {
            let job = Some(Arc::new(change.job.clone()));
            self.send(kind, job, change.pvc.clone()).await?;
            if self.selector.finished() {
                return Err(Stop::Done);
            }
        }
        Ok(())
    }

    /// Reads the log after the cursor, up to `until` (inclusive) or to its end.
    async fn catch_up(&mut self, until: Option<u64>) -> Result<(), Stop> {
        loop {
            let page = self.store.changes_after(self.cursor, CATCH_UP_PAGE).await?;
            let full = page.len() == CATCH_UP_PAGE as usize;
            for change in &page {
                if until.is_some_and(|u| change.seq > u) {
                    return Ok(());
                }
                if change.seq != self.cursor + 1 {
                    // The log lost entries after the cursor (pruned while we read).
                    return Err(Stop::Fail(Error::Unavailable(
                        "the watch fell behind the retained history; resume with the last token to get a fresh snapshot".into(),
                    )));
                }
                self.consider(change).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Live changes, heartbeats, shutdown.
    async fn follow(&mut self, feed: &mut broadcast::Receiver<Arc<Change>>) -> Result<(), Stop> {
        loop {
            let shutdown = self.shutdown.clone();
            let idle_until = self.last_sent + self.heartbeat;
            tokio::select! {
                received = feed.recv() => match received {
                    Ok(change) => {
                        if change.seq > self.cursor + 1 {
                            // Changes between the cursor and this one are in the log.
                            self.catch_up(Some(change.seq - 1)).await?;
                        }
                        self.consider(&change).await?;
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, cursor = self.cursor, "watcher lagged; catching up from the log");
                        self.catch_up(None).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(shutting_down()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        for position in [0, 1, 42, u64::MAX] {
            for point in [
                ResumePoint::After(position),
                ResumePoint::InSnapshot(position),
            ] {
                assert_eq!(decode_token(&encode_token(point)).expect("valid"), point);
            }
        }
        for bad in [
            "",
            "x",
            "AAAA",
            "d3gAAAAAAAAAAAA",
            &URL_SAFE_NO_PAD.encode(b"w2\0\0\0\0\0\0\0\x01"),
        ] {
            assert!(decode_token(bad).is_err(), "{bad:?}");
        }
    }
}
