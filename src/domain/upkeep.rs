//! Jobs that look after themselves: when a finished job is due for deletion (retention), when a
//! job whose executor went silent is marked stalled, and when a stalled job is given up on
//! (FAILED). Everything is decided from the job's stored times and the server's [`Upkeep`]
//! policy, so that any replica, before or after a restart, decides the same; the sweeper only
//! finds candidates, and the decision is taken again inside the writing transaction.

use std::time::Duration;

use crate::domain::job::Applied;
use crate::domain::{Job, JobState};

/// The server's defaults; a job's own `ttl_seconds_after_finished`, `stall_after_seconds` and
/// `abandon_after_seconds` override them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upkeep {
    /// How long a finished job is kept after its `end_time`; `None`: for ever.
    pub retain_finished: Option<Duration>,
    /// Silence after which a PENDING or RUNNING job is marked stalled; `None`: never.
    pub stall_after: Option<Duration>,
    /// Silence after which a stalled job is FAILED; `None`: never.
    pub abandon_after: Option<Duration>,
}

impl Default for Upkeep {
    /// Finished jobs kept 30 days, stalled after 10 minutes, FAILED after an hour.
    fn default() -> Self {
        Upkeep {
            retain_finished: Some(Duration::from_secs(30 * 24 * 3600)),
            stall_after: Some(Duration::from_secs(600)),
            abandon_after: Some(Duration::from_secs(3600)),
        }
    }
}

/// What the sweeper does to a job that is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sweep {
    /// Delete a finished job past its retention (as DeleteJob does).
    Expire,
    /// Mark a silent job stalled.
    Stall,
    /// Fail a stalled job whose executor stayed silent.
    Abandon,
}

impl Sweep {
    pub fn as_str(self) -> &'static str {
        match self {
            Sweep::Expire => "expire",
            Sweep::Stall => "stall",
            Sweep::Abandon => "abandon",
        }
    }
}

/// The message of a job FAILED because its executor stopped reporting.
pub const ABANDONED_MESSAGE: &str = "executor stopped reporting";

/// How much later than its stall-after a job may be marked: `last_report` moves only when it
/// is this fraction of the stall-after old, so the mark waits as long again (never early).
const RESOLUTION_DIVISOR: i64 = 20;

/// µs of silence per second of a job's own `stall_after_seconds` before it is marked: the
/// stall-after and its resolution (the store's index of such jobs is on this product).
pub const STALL_MICROS_PER_SECOND: i64 = 1_000_000 + 1_000_000 / RESOLUTION_DIVISOR;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A per-job override in seconds: 0 is "never" (`None`).
fn override_micros(seconds: i64) -> Option<i64> {
    (seconds > 0).then(|| seconds.saturating_mul(1_000_000))
}

impl Upkeep {
    /// The job's stall-after in µs; `None`: never stalled.
    pub fn stall_after(&self, job: &Job) -> Option<i64> {
        match job.fields.stall_after_seconds {
            Some(seconds) => override_micros(seconds),
            None => self.stall_after.map(micros).filter(|&m| m > 0),
        }
    }

    /// The job's abandon-after in µs, at least its stall-after; `None`: never abandoned (also
    /// when it is never stalled: a job is abandoned only once stalled).
    pub fn abandon_after(&self, job: &Job) -> Option<i64> {
        let stall = self.stall_after(job)?;
        let abandon = match job.fields.abandon_after_seconds {
            Some(seconds) => override_micros(seconds),
            None => self.abandon_after.map(micros).filter(|&m| m > 0),
        }?;
        Some(abandon.max(stall))
    }

    /// How old `last_report` may get before a write from the executor moves it (µs).
    pub fn resolution(&self, job: &Job) -> i64 {
        match self.stall_after(job) {
            Some(stall) => stall / RESOLUTION_DIVISOR,
            // Never stalled: the time only informs; once a minute is plenty.
            None => 60_000_000,
        }
    }

    /// The job's retention after `end_time` in µs; `None`: kept for ever.
    pub fn retention(&self, job: &Job) -> Option<i64> {
        match job.fields.ttl_seconds_after_finished {
            Some(seconds) => Some(seconds.max(0).saturating_mul(1_000_000)),
            None => self.retain_finished.map(micros).filter(|&m| m > 0),
        }
    }

    /// When the job is marked stalled if its executor stays silent: its stall-after and the
    /// resolution after `last_report`.
    pub fn stall_at(&self, job: &Job) -> Option<i64> {
        let stall = self.stall_after(job)?;
        Some(
            job.last_report
                .saturating_add(stall)
                .saturating_add(stall / RESOLUTION_DIVISOR),
        )
    }

    /// When a stalled job is FAILED if its executor stays silent.
    pub fn abandon_at(&self, job: &Job) -> Option<i64> {
        let abandon = self.abandon_after(job)?;
        Some(
            job.last_report
                .saturating_add(abandon)
                .saturating_add(self.resolution(job)),
        )
    }

    /// A job under the server's stall-after is due at `now` when its `last_report` is at most
    /// this; `None`: such jobs never stall.
    pub fn stall_cutoff(&self, now: i64) -> Option<i64> {
        let stall = self.stall_after.map(micros).filter(|&m| m > 0)?;
        Some(
            now.saturating_sub(stall)
                .saturating_sub(stall / RESOLUTION_DIVISOR),
        )
    }

    /// A finished job under the server's retention is due at `now` when its `end_time`
    /// (unix seconds) is at most this; `None`: such jobs are kept.
    pub fn retention_cutoff(&self, now: i64) -> Option<i64> {
        let retention = self.retain_finished.map(micros).filter(|&m| m > 0)?;
        Some(now.saturating_sub(retention).div_euclid(1_000_000))
    }

    /// What is due for `job` at `now`, if anything.
    pub fn due(&self, job: &Job, now: i64) -> Option<Sweep> {
        if job.state.is_terminal() {
            let end = job.fields.end_time?.saturating_mul(1_000_000);
            let retention = self.retention(job)?;
            return (end.saturating_add(retention) <= now).then_some(Sweep::Expire);
        }
        match job.stalled_since {
            None => (self.stall_at(job)? <= now).then_some(Sweep::Stall),
            Some(_) => (self.abandon_at(job)? <= now).then_some(Sweep::Abandon),
        }
    }

    /// Marks the job stalled if that is due; UPDATED when it was.
    pub fn stall(&self, job: &mut Job, now: i64) -> Applied {
        if self.due(job, now) != Some(Sweep::Stall) {
            return Applied::Unchanged;
        }
        job.stalled_since = Some(now);
        job.abandon_at = self.abandon_at(job);
        job.touch(now);
        Applied::Changed
    }

    /// FAILs a stalled job whose abandon-after has passed. A stalled job not yet due under the
    /// current policy (it changed since the job was marked) has its `abandon_at` set again.
    pub fn abandon(&self, job: &mut Job, now: i64) -> Applied {
        match self.due(job, now) {
            Some(Sweep::Abandon) => {}
            _ if job.stalled_since.is_some() && job.abandon_at != self.abandon_at(job) => {
                job.abandon_at = self.abandon_at(job);
                job.touch(now);
                return Applied::Changed;
            }
            _ => return Applied::Unchanged,
        }
        let since = crate::domain::http_date(job.last_report);
        job.state = JobState::Failed;
        job.fields.message = Some(ABANDONED_MESSAGE.to_string());
        super::job::stamp_times(&mut job.fields, JobState::Failed, now);
        job.log(
            [format!(
                "Job failed: the executor stopped reporting (no report since {since})"
            )],
            now,
        );
        job.settle();
        job.touch(now);
        Applied::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobFields, NewJob};

    const T0: i64 = 1_700_000_000_000_000;
    const SEC: i64 = 1_000_000;

    fn upkeep() -> Upkeep {
        Upkeep {
            retain_finished: Some(Duration::from_secs(100)),
            stall_after: Some(Duration::from_secs(20)),
            abandon_after: Some(Duration::from_secs(60)),
        }
    }

    fn job(state: JobState, fields: JobFields) -> Job {
        NewJob {
            state: Some(state),
            fields,
            ..Default::default()
        }
        .into_job(T0)
        .expect("valid")
    }

    #[test]
    fn a_silent_job_is_stalled_then_abandoned_never_early() {
        let u = upkeep();
        let mut j = job(JobState::Running, JobFields::default());
        // Stall-after 20 s, resolution 1 s: due at 21 s.
        assert_eq!(u.due(&j, T0 + 21 * SEC - 1), None);
        assert_eq!(u.due(&j, T0 + 21 * SEC), Some(Sweep::Stall));
        assert_eq!(u.stall(&mut j, T0 + 21 * SEC), Applied::Changed);
        assert_eq!(j.stalled_since, Some(T0 + 21 * SEC));
        assert_eq!(j.abandon_at, Some(T0 + 61 * SEC));
        assert_eq!(u.stall(&mut j, T0 + 22 * SEC), Applied::Unchanged);
        assert_eq!(u.abandon(&mut j, T0 + 61 * SEC - 1), Applied::Unchanged);
        assert_eq!(u.abandon(&mut j, T0 + 61 * SEC), Applied::Changed);
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.fields.message.as_deref(), Some(ABANDONED_MESSAGE));
        assert_eq!(j.stalled_since, None);
        assert!(
            j.activity
                .last()
                .expect("a line")
                .contains("no report since")
        );
    }

    #[test]
    fn a_write_within_the_resolution_keeps_last_report_and_the_mark_stays_late() {
        let u = upkeep();
        let mut j = job(JobState::Running, JobFields::default());
        let resolution = u.resolution(&j);
        assert!(!j.heard_from_executor(T0 + resolution - 1, resolution));
        assert_eq!(j.last_report, T0);
        // Silent since T0 + resolution - 1: the mark at T0 + 21 s comes after 20 s of silence.
        assert!(T0 + 21 * SEC - (T0 + resolution - 1) > 20 * SEC);
        assert!(j.heard_from_executor(T0 + resolution, resolution));
        assert_eq!(j.last_report, T0 + resolution);
    }

    #[test]
    fn the_next_write_clears_a_stall() {
        let u = upkeep();
        let mut j = job(JobState::Running, JobFields::default());
        u.stall(&mut j, T0 + 30 * SEC);
        assert!(j.heard_from_executor(T0 + 31 * SEC, u.resolution(&j)));
        assert_eq!((j.stalled_since, j.abandon_at), (None, None));
        assert_eq!(j.last_report, T0 + 31 * SEC);
    }

    #[test]
    fn per_job_overrides_and_zero_means_never() {
        let u = upkeep();
        let own = JobFields {
            stall_after_seconds: Some(5),
            abandon_after_seconds: Some(0),
            ..Default::default()
        };
        let mut j = job(JobState::Pending, own);
        assert_eq!(u.due(&j, T0 + 5 * SEC + SEC / 4), Some(Sweep::Stall));
        u.stall(&mut j, T0 + 6 * SEC);
        assert_eq!(j.abandon_at, None, "abandon_after_seconds 0: never");
        assert_eq!(u.due(&j, T0 + 1_000_000 * SEC), None);
        let never = job(
            JobState::Running,
            JobFields {
                stall_after_seconds: Some(0),
                ..Default::default()
            },
        );
        assert_eq!(u.due(&never, i64::MAX), None);
        // An abandon-after shorter than the stall-after waits for the stall.
        let short = job(
            JobState::Running,
            JobFields {
                abandon_after_seconds: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(u.abandon_after(&short), Some(20 * SEC));
    }

    #[test]
    fn finished_jobs_expire_after_their_retention_or_ttl() {
        let u = upkeep();
        let done = job(JobState::Completed, JobFields::default());
        let end = done.fields.end_time.expect("stamped") * SEC;
        assert_eq!(u.due(&done, end + 100 * SEC - 1), None);
        assert_eq!(u.due(&done, end + 100 * SEC), Some(Sweep::Expire));
        let ttl0 = job(
            JobState::Failed,
            JobFields {
                ttl_seconds_after_finished: Some(0),
                ..Default::default()
            },
        );
        assert_eq!(u.due(&ttl0, end), Some(Sweep::Expire));
        let keep = Upkeep {
            retain_finished: None,
            ..u
        };
        assert_eq!(keep.due(&done, i64::MAX), None);
        let running = job(JobState::Running, JobFields::default());
        assert_ne!(u.due(&running, i64::MAX), Some(Sweep::Expire));
    }

    #[test]
    fn a_changed_policy_moves_the_abandon_time_of_a_stalled_job() {
        let mut j = job(JobState::Running, JobFields::default());
        upkeep().stall(&mut j, T0 + 30 * SEC);
        let longer = Upkeep {
            abandon_after: Some(Duration::from_secs(600)),
            ..upkeep()
        };
        assert_eq!(longer.abandon(&mut j, T0 + 61 * SEC), Applied::Changed);
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.abandon_at, Some(T0 + 601 * SEC));
        assert_eq!(longer.abandon(&mut j, T0 + 62 * SEC), Applied::Unchanged);
    }
}
