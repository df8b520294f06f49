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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
const WATCHER_BUFFER: usize = 4;
/// Changes queued per watcher by the dispatcher; past that the watcher reads the log instead.
const INBOX: usize = 32;
/// The newest changes kept in memory for watchers that lagged: a short lag (a burst larger than
/// an inbox) is caught up from here, without a query.
const RECENT: usize = 8192;

/// The newest committed changes, contiguous and in order (cleared if the dispatcher itself
/// misses some).
#[derive(Default)]
struct Recent {
    changes: std::collections::VecDeque<Arc<Change>>,
}

impl Recent {
    fn push(&mut self, change: &Arc<Change>) {
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
    fn after(&self, cursor: u64, job: Option<&ObjectId>, limit: usize) -> Option<Vec<Arc<Change>>> {
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

/// A watcher's end of the dispatcher: its inbox, and the flag raised when a change was dropped.
struct Inbox {
    changes: mpsc::Receiver<Arc<Change>>,
    lagged: Arc<AtomicBool>,
    /// Unregisters the watcher when its task ends.
    _registration: Registration,
}

/// The dispatcher's end of a watcher.
struct Slot {
    id: u64,
    changes: mpsc::Sender<Arc<Change>>,
    lagged: Arc<AtomicBool>,
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
struct Registry {
    by_job: HashMap<ObjectId, Vec<Slot>>,
    all: Vec<Slot>,
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

struct Registration {
    registry: Arc<Mutex<Registry>>,
    id: u64,
    job: Option<ObjectId>,
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

/// Starts watch streams, and routes committed changes to them.
#[derive(Clone)]
pub struct JobHub {
    store: Store,
    config: WatchConfig,
    shutdown: watch::Receiver<bool>,
    registry: Arc<Mutex<Registry>>,
    recent: Arc<std::sync::RwLock<Recent>>,
    next_id: Arc<AtomicU64>,
}

/// Reads the feed of committed changes and routes each one; never waits for a watcher.
async fn dispatch(
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
                    .is_some_and(|before| filter.matches(before.as_ref()));
                let is = change.kind != ChangeKind::Deleted && filter.matches(change.job.as_ref());
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

    /// The job whose changes are wanted, if only one.
    fn job(&self) -> Option<&ObjectId> {
        match self {
            Selector::Job { id, .. } => Some(id),
            Selector::Jobs { .. } => None,
        }
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
            next_id: Arc::new(AtomicU64::new(1)),
        }
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
    pub async fn watch_job(&self, id: ObjectId, resume_token: &str) -> Result<Events> {
        let inbox = self.register(Some(&id));
        let selector = Selector::Job {
            id: id.clone(),
            finished: false,
        };
        match self.resume_point(resume_token).await? {
            Some(position) => Ok(self.spawn(selector, inbox, Start::Resume(position))),
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
                Ok(self.spawn(selector, inbox, start))
            }
        }
    }

    /// WatchJobs over the jobs matching `filter`.
    pub async fn watch_jobs(&self, filter: Filter, resume_token: &str) -> Result<Events> {
        let inbox = self.register(None);
        let start = match self.resume_point(resume_token).await? {
            Some(position) => Start::Resume(position),
            None => {
                let snapshot = self
                    .store
                    .snapshot_jobs(&filter, None, self.config.snapshot_page)
                    .await?;
                Start::JobsSnapshot {
                    position: snapshot.position,
                    jobs: snapshot.jobs,
                }
            }
        };
        Ok(self.spawn(Selector::Jobs { filter }, inbox, start))
    }

    /// The position to resume after, or `None` for a fresh snapshot (no token, a token taken
    /// inside a snapshot, or one older than the retained history: never an error loop).
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

    fn spawn(&self, selector: Selector, inbox: Inbox, start: Start) -> Events {
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let watcher = Watcher {
            store: self.store.clone(),
            recent: self.recent.clone(),
            heartbeat: self.config.heartbeat,
            snapshot_page: self.config.snapshot_page.max(1),
            pages: None,
            shutdown: self.shutdown.clone(),
            out: tx,
            selector,
            cursor: 0,
            in_snapshot: false,
            last_sent: Instant::now(),
        };
        tokio::spawn(watcher.run(inbox, start));
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
    async fn run(mut self, mut inbox: Inbox, start: Start) {
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
