//! Which changes a stream reports: one job's (WatchJob), or those of every job matching a filter
//! (WatchJobs), where a job entering or leaving the filter is reported as the contract says.

use crate::domain::query::Filter;
use crate::domain::{Change, ChangeKind, Job, ObjectId};

use super::EventKind;

/// Which changes a stream reports, and when it is finished.
pub(super) enum Selector {
    /// One job; finished after its terminal or DELETED event.
    Job { id: ObjectId, finished: bool },
    /// Every job matching a filter.
    Jobs { filter: Filter<Job> },
}

impl Selector {
    /// The event kind to report for `change`, if any.
    pub(super) fn select(&mut self, change: &Change) -> Option<EventKind> {
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

    /// The key of the record `change` is about, in the order a snapshot sends records: for
    /// WatchJob the job itself (`""`), then its PVC records by id; for WatchJobs the job's id.
    pub(super) fn key_of<'c>(&self, change: &'c Change) -> &'c str {
        match self {
            Selector::Job { .. } => change.pvc.as_ref().map_or("", |pvc| pvc.id.as_str()),
            Selector::Jobs { .. } => change.job.id.as_str(),
        }
    }

    pub(super) fn finished(&self) -> bool {
        matches!(self, Selector::Job { finished: true, .. })
    }

    /// The job whose changes are wanted, if only one.
    pub(super) fn job(&self) -> Option<&ObjectId> {
        match self {
            Selector::Job { id, .. } => Some(id),
            Selector::Jobs { .. } => None,
        }
    }
}
