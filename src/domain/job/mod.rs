//! Jobs: what a job is ([`Job`], the fields clients write in [`JobFields`]), its type and its life
//! cycle ([`JobState::can_become`]), and how a new job is made and checked. Its changes are in
//! [`update`]; its table of fields, from which everything that lists them derives, in [`fields`].

pub mod fields;
pub mod update;

use crate::domain::query::{Datum, Kind, Resource};
use crate::domain::string_enum::string_enum;
use crate::domain::{
    CopyProgress, MAX_ACTIVITY_LINES, ObjectId, SnapshotProgress, check_text, etag,
};
use crate::error::{Error, Result};

pub use update::{Applied, JobChange, JobUpdate};

string_enum! {
    /// The kind of work a job does.
    JobType {
        K8sSnap = "K8S_SNAP",
        Restore = "RESTORE",
        K8sCopy = "K8S_COPY",
        DeleteBackup = "DELETE_BACKUP",
        AwsInventory = "AWS_INVENTORY",
        AwsrdsBackup = "AWSRDS_BACKUP",
        AwsrdsRestore = "AWSRDS_RESTORE",
        AwsrdsBackupDelete = "AWSRDS_BACKUP_DELETE",
        AwsrdsCopy = "AWSRDS_COPY",
        AwseksRestore = "AWSEKS_RESTORE",
        SecurityScan = "SECURITY_SCAN",
    }
}

string_enum! {
    /// Where a job is in its life cycle. UNKNOWN, the proto's zero value, is never stored.
    JobState {
        Pending = "PENDING",
        Running = "RUNNING",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Skipped = "SKIPPED",
        Partial = "PARTIAL",
        Cancelled = "CANCELLED",
    }
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    /// The transitions of spec section 3. Staying in the same state is not a transition.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Pending, Running | Skipped | Failed | Cancelled)
                | (Running, Completed | Failed | Partial | Cancelled)
        )
    }
}

/// The fields of a job that clients write. `None` is "never set": absent from REST JSON.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<JobType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_total_resources: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_backup_resources: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backupdef: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backupdef_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restoredef_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub securityscan_name: Option<String>,
    /// Seconds after `end_time` at which a finished job is deleted, as on a Kubernetes Job (0:
    /// as soon as it finishes); unset: the server's `--retain-finished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Seconds without a write from the executor after which the job is marked stalled (0:
    /// never); unset: the server's `--stall-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_after_seconds: Option<i64>,
    /// Seconds without a write from the executor after which the job is FAILED (0: never);
    /// unset: the server's `--abandon-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandon_after_seconds: Option<i64>,
}

/// One job as stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub id: ObjectId,
    pub fields: JobFields,
    pub state: JobState,
    pub activity: Vec<String>,
    /// When each activity line was appended (µs), aligned with the end of `activity`: a job
    /// from before these times were kept has fewer of them than lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity_times: Vec<i64>,
    /// Derived from the job's COPY PVC records; `None` while it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_progress: Option<CopyProgress>,
    /// Derived from the job's K8S_SNAP PVC records; `None` while it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_progress: Option<SnapshotProgress>,
    /// Microseconds since the epoch.
    pub created: i64,
    pub updated: i64,
    pub revision: u64,
    pub etag: String,
    /// When the executor last wrote (CreateJob, UpdateJob, ReportPvcProgress), µs: moved only
    /// when it is older than the job's stall resolution ([`Upkeep::resolution`]), so that
    /// frequent reports do not rewrite its index entry every time.
    ///
    /// [`Upkeep::resolution`]: crate::domain::Upkeep::resolution
    #[serde(default)]
    pub last_report: i64,
    /// Since when the executor has been silent for longer than the job's stall-after (µs); only
    /// on PENDING and RUNNING jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_since: Option<i64>,
    /// When a stalled job is FAILED if its executor stays silent (µs); set with `stalled_since`
    /// unless the job is never abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandon_at: Option<i64>,
    /// A finished job with its own TTL: `end_time` + `ttl_seconds_after_finished` (unix
    /// seconds), so that the store can index when it expires. Internal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_expiry: Option<i64>,
    /// The sum of its COPY records' rates, in thousandths per second (internal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bytes_milli: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_files_milli: Option<i64>,
    /// Once terminal: `end_time` − `start_time` (s), and the bytes done over it per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_bytes_per_second: Option<i64>,
}

/// A job to create, as a client described it.
#[derive(Clone, Debug, Default)]
pub struct NewJob {
    pub id: Option<ObjectId>,
    pub fields: JobFields,
    /// `None`: PENDING.
    pub state: Option<JobState>,
    pub activity: Vec<String>,
}

impl NewJob {
    /// Checks the input and makes the job as it will be stored.
    pub fn into_job(self, now: i64) -> Result<Job> {
        let state = self.state.unwrap_or(JobState::Pending);
        let mut fields = self.fields;
        stamp_times(&mut fields, state, now);
        let id = self.id.unwrap_or_else(ObjectId::generate);
        let revision = 1;
        let mut job = Job {
            etag: etag(&id, revision, now),
            id,
            fields,
            state,
            activity_times: vec![now; self.activity.len()],
            activity: self.activity,
            created: now,
            updated: now,
            revision,
            last_report: now,
            // No aggregates, marks or estimates yet.
            ..Job::blank()
        };
        job.settle();
        validate(&job)?;
        validate_activity(0, &job.activity)?;
        Ok(job)
    }
}

impl Job {
    /// Appends activity lines that came at `now` (µs).
    pub fn log(&mut self, lines: impl IntoIterator<Item = String>, now: i64) {
        for line in lines {
            self.activity.push(line);
            self.activity_times.push(now);
        }
    }

    /// Records that the job changed: new revision, update time and etag.
    pub fn touch(&mut self, now: i64) {
        self.revision += 1;
        // `updated` never goes backwards, even if the clock does.
        self.updated = now.max(self.updated);
        self.etag = etag(&self.id, self.revision, self.updated);
    }

    /// A job that has ended is no longer stalled (its stall marks go) and has no rate (it keeps
    /// its duration and average rate instead), and expires at its own TTL if it has one.
    pub(crate) fn settle(&mut self) {
        if self.state.is_terminal() {
            self.stalled_since = None;
            self.abandon_at = None;
            self.finish_estimates();
        }
        self.ttl_expiry = match (self.state.is_terminal(), self.fields.end_time) {
            (true, Some(end)) => self
                .fields
                .ttl_seconds_after_finished
                .and_then(|ttl| end.checked_add(ttl.max(0))),
            _ => None,
        };
    }

    /// Records a write from the job's executor at `now`: clears a stall mark, and moves
    /// `last_report` when it is at least `resolution` old. Whether anything changed.
    pub(crate) fn heard_from_executor(&mut self, now: i64, resolution: i64) -> bool {
        let stalled = self.stalled_since.take().is_some();
        self.abandon_at = None;
        if stalled || now - self.last_report >= resolution {
            self.last_report = now.max(self.last_report);
            return true;
        }
        false
    }

    /// Refuses PVC reports on a terminal job.
    pub fn ensure_accepts_progress(&self) -> Result<()> {
        if self.state.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "job {} is {}, a terminal state: it accepts no more PVC progress",
                self.id,
                self.state.as_str()
            )));
        }
        Ok(())
    }
}

/// Entering RUNNING sets start_time, entering a terminal state sets end_time (each if unset).
pub(super) fn stamp_times(fields: &mut JobFields, state: JobState, now: i64) {
    let secs = now / 1_000_000;
    if state == JobState::Running && fields.start_time.is_none() {
        fields.start_time = Some(secs);
    }
    if state.is_terminal() && fields.end_time.is_none() {
        fields.end_time = Some(secs);
    }
}

/// Checks the client-written fields of `job`: integers are not negative, text is within the
/// limits, ids are ids.
pub(crate) fn validate(job: &Job) -> Result<()> {
    for field in Job::fields().iter().filter(|f| f.is_written_by_clients()) {
        match ((field.get)(job), field.kind) {
            (Datum::Int(v), Kind::Int) if v < 0 => {
                return Err(Error::invalid(format!(
                    "{} is {v}: it cannot be negative",
                    field.name
                )));
            }
            (Datum::Text(v), Kind::Text) => check_text(field.name, Some(v))?,
            (Datum::Text(v), Kind::Id) => {
                ObjectId::parse(field.name, v)?;
            }
            _ => {}
        }
    }
    let f = &job.fields;
    for (name, seconds) in [
        ("ttl_seconds_after_finished", f.ttl_seconds_after_finished),
        ("stall_after_seconds", f.stall_after_seconds),
        ("abandon_after_seconds", f.abandon_after_seconds),
    ] {
        if seconds.is_some_and(|s| s > MAX_OVERRIDE_SECONDS) {
            return Err(Error::invalid(format!(
                "{name} is {}: at most {MAX_OVERRIDE_SECONDS} (a hundred years)",
                seconds.unwrap_or_default()
            )));
        }
    }
    if let (Some(end), Some(ttl)) = (f.end_time, f.ttl_seconds_after_finished)
        && end.checked_add(ttl).is_none()
    {
        return Err(Error::invalid(format!(
            "end_time {end} + ttl_seconds_after_finished {ttl} is beyond any time"
        )));
    }
    Ok(())
}

/// The longest per-job retention, stall-after or abandon-after: a hundred years, which keeps
/// every sum of times in range.
const MAX_OVERRIDE_SECONDS: i64 = 3_155_760_000;

pub(super) fn validate_activity(existing: usize, lines: &[String]) -> Result<()> {
    for line in lines {
        check_text("an activity line", Some(line))?;
    }
    if existing + lines.len() > MAX_ACTIVITY_LINES {
        return Err(Error::invalid(format!(
            "a job holds at most {MAX_ACTIVITY_LINES} activity lines; it has {existing} and {} more were sent",
            lines.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::MAX_TEXT_BYTES;

    /// A job with every field set, aggregates included.
    pub(crate) fn a_job_with_everything_set() -> Job {
        let mut job = NewJob {
            id: Some(ObjectId::generate()),
            fields: JobFields {
                name: Some("n".into()),
                message: Some("m".into()),
                job_type: Some(JobType::K8sCopy),
                start_time: Some(1),
                end_time: None,
                num_total_resources: Some(3),
                num_backup_resources: Some(4),
                cluster: Some("5f77218d44b03575ec17a5ae".into()),
                cluster_name: Some("c".into()),
                backupdef: Some("5f7721cb44b03575ec17a5af".into()),
                backupdef_name: Some("b".into()),
                restoredef_name: Some("r".into()),
                securityscan_name: Some("s".into()),
                ttl_seconds_after_finished: Some(7),
                stall_after_seconds: Some(8),
                abandon_after_seconds: Some(9),
            },
            state: Some(JobState::Running),
            activity: vec!["one".into(), "two".into()],
        }
        .into_job(1_600_000_000_000_000)
        .expect("valid");
        job.fields.end_time = Some(2);
        job.stalled_since = Some(1_600_000_001_000_000);
        job.abandon_at = Some(1_600_000_002_000_000);
        job.copy_progress = Some(CopyProgress {
            stats: crate::domain::TransferStats {
                estimated_size: Some(10),
                estimated_number_of_files: Some(11),
                io_size: Some(12),
                io_number_of_files: Some(13),
                transferred_size: Some(14),
                transferred_number_of_files: Some(15),
            },
            total_pvs: 5,
            pending_pvs: 1,
            active_pvs: 1,
            completed_pvs: 2,
            failed_pvs: 1,
        });
        job.snapshot_progress = Some(SnapshotProgress {
            total_pvs: 6,
            pending_pvs: 1,
            active_pvs: 1,
            completed_pvs: 2,
            failed_pvs: 1,
            skipped_pvs: 1,
        });
        job
    }

    #[test]
    fn written_fields_are_checked_by_their_kind() {
        let mut job = a_job_with_everything_set();
        validate(&job).expect("valid");
        job.fields.num_backup_resources = Some(-1);
        let error = validate(&job).expect_err("negative").to_string();
        assert_eq!(error, "num_backup_resources is -1: it cannot be negative");
        job.fields.num_backup_resources = None;
        job.fields.cluster = Some("nope".into());
        let error = validate(&job).expect_err("not an id").to_string();
        assert!(
            error.starts_with("cluster \"nope\" is not an id"),
            "{error}"
        );
        job.fields.cluster = None;
        job.fields.name = Some("x".repeat(MAX_TEXT_BYTES + 1));
        assert!(
            validate(&job)
                .expect_err("too long")
                .to_string()
                .starts_with("name is")
        );
    }
}
