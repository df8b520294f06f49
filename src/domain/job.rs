//! Jobs and their life cycle. [`JobChange::apply`] is the one place that accepts or refuses a
//! change of a job; every store calls it inside the transaction that writes the change.

use crate::domain::{
    CopyProgress, MAX_ACTIVITY_LINES, MAX_TEXT_BYTES, ObjectId, SnapshotProgress, etag,
};
use crate::error::{Error, Result};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The documented string of the value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the documented string.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown {} {s:?}", stringify!($name))))
            }
        }
    };
}
pub(crate) use string_enum;

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
}

/// One job as stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub id: ObjectId,
    pub fields: JobFields,
    pub state: JobState,
    pub activity: Vec<String>,
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
}

/// A client-writable field, as named in an update mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobField {
    Name,
    Message,
    Type,
    State,
    StartTime,
    EndTime,
    NumTotalResources,
    NumBackupResources,
    Cluster,
    ClusterName,
    Backupdef,
    BackupdefName,
    RestoredefName,
    SecurityscanName,
}

impl JobField {
    const ALL: &'static [JobField] = &[
        JobField::Name,
        JobField::Message,
        JobField::Type,
        JobField::State,
        JobField::StartTime,
        JobField::EndTime,
        JobField::NumTotalResources,
        JobField::NumBackupResources,
        JobField::Cluster,
        JobField::ClusterName,
        JobField::Backupdef,
        JobField::BackupdefName,
        JobField::RestoredefName,
        JobField::SecurityscanName,
    ];

    /// Parses one update-mask path; output-only and derived fields are refused by name.
    pub fn parse_mask_path(path: &str) -> Result<Vec<JobField>> {
        // JSON clients (protobuf's FieldMask JSON form) send camelCase paths.
        let snake = to_snake_case(path);
        let path = snake.as_str();
        let field = match path {
            "*" => return Ok(JobField::ALL.to_vec()),
            "name" => JobField::Name,
            "message" => JobField::Message,
            "type" => JobField::Type,
            "state" => JobField::State,
            "start_time" => JobField::StartTime,
            "end_time" => JobField::EndTime,
            "num_total_resources" => JobField::NumTotalResources,
            "num_backup_resources" => JobField::NumBackupResources,
            "cluster" => JobField::Cluster,
            "cluster_name" => JobField::ClusterName,
            "backupdef" => JobField::Backupdef,
            "backupdef_name" => JobField::BackupdefName,
            "restoredef_name" => JobField::RestoredefName,
            "securityscan_name" => JobField::SecurityscanName,
            "id" | "created" | "updated" | "etag" | "revision" => {
                return Err(Error::invalid(format!(
                    "update_mask names {path:?}, which is output only"
                )));
            }
            "activity" => {
                return Err(Error::invalid(
                    "update_mask names \"activity\", which is append-only: use append_activity",
                ));
            }
            p if p.starts_with("kube_copy_progress") || p.starts_with("kube_snapshot_progress") => {
                return Err(Error::invalid(format!(
                    "update_mask names {path:?}, which is derived from the job's PVC records: report PVC progress instead"
                )));
            }
            other => {
                return Err(Error::invalid(format!(
                    "update_mask names {other:?}, which is not a field of Job"
                )));
            }
        };
        Ok(vec![field])
    }
}

fn to_snake_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
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
        validate_fields(&self.fields)?;
        validate_activity(0, &self.activity)?;
        let state = self.state.unwrap_or(JobState::Pending);
        let mut fields = self.fields;
        stamp_times(&mut fields, state, now);
        let id = self.id.unwrap_or_else(ObjectId::generate);
        let revision = 1;
        Ok(Job {
            etag: etag(&id, revision, now),
            id,
            fields,
            state,
            activity: self.activity,
            copy_progress: None,
            snapshot_progress: None,
            created: now,
            updated: now,
            revision,
        })
    }
}

/// A partial update of a job (AIP-134).
#[derive(Clone, Debug, Default)]
pub struct JobUpdate {
    /// The values of the fields named in `mask`.
    pub values: JobFields,
    /// `None`: not set in the request.
    pub state: Option<JobState>,
    /// The fields to write; a named field whose value is `None` is cleared.
    pub mask: Vec<JobField>,
    pub append_activity: Vec<String>,
}

/// A change of one job, decided against its current state inside the writing transaction.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // moved once per request: a box would buy nothing
pub enum JobChange {
    Update(JobUpdate),
    /// Cancel by a user; `by` names who, for the activity line.
    Cancel {
        by: String,
    },
}

/// Whether a change wrote anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// Nothing to write (cancel of an already cancelled job).
    Unchanged,
}

impl JobChange {
    /// Applies the change to `job`, or refuses it and leaves `job` as it was.
    pub fn apply(&self, job: &mut Job, now: i64) -> Result<Applied> {
        match self {
            JobChange::Update(update) => {
                let mut next = job.clone();
                update.apply_to(&mut next, now)?;
                next.touch(now);
                *job = next;
                Ok(Applied::Changed)
            }
            JobChange::Cancel { by } => cancel(job, by, now),
        }
    }
}

impl JobUpdate {
    fn apply_to(&self, job: &mut Job, now: i64) -> Result<()> {
        if job.state.is_terminal() {
            let attempted = match self.state {
                Some(next) if self.mask.contains(&JobField::State) && next != job.state => {
                    format!("; attempted state {}", next.as_str())
                }
                _ => String::new(),
            };
            return Err(Error::FailedPrecondition(format!(
                "job {} is {}, a terminal state: it can no longer change{attempted}",
                job.id,
                job.state.as_str()
            )));
        }
        let v = &self.values;
        let f = &mut job.fields;
        let mut new_state = job.state;
        for field in &self.mask {
            match field {
                JobField::Name => f.name = v.name.clone(),
                JobField::Message => f.message = v.message.clone(),
                JobField::Type => f.job_type = v.job_type,
                JobField::State => {
                    new_state = self.state.ok_or_else(|| {
                        Error::invalid("update_mask names \"state\" but job.state is UNKNOWN: a job always has a state")
                    })?
                }
                JobField::StartTime => f.start_time = v.start_time,
                JobField::EndTime => f.end_time = v.end_time,
                JobField::NumTotalResources => f.num_total_resources = v.num_total_resources,
                JobField::NumBackupResources => f.num_backup_resources = v.num_backup_resources,
                JobField::Cluster => f.cluster = v.cluster.clone(),
                JobField::ClusterName => f.cluster_name = v.cluster_name.clone(),
                JobField::Backupdef => f.backupdef = v.backupdef.clone(),
                JobField::BackupdefName => f.backupdef_name = v.backupdef_name.clone(),
                JobField::RestoredefName => f.restoredef_name = v.restoredef_name.clone(),
                JobField::SecurityscanName => f.securityscan_name = v.securityscan_name.clone(),
            }
        }
        validate_fields(f)?;
        validate_activity(job.activity.len(), &self.append_activity)?;
        if new_state != job.state {
            if !job.state.can_become(new_state) {
                return Err(Error::FailedPrecondition(format!(
                    "job {} cannot go from {} to {}",
                    job.id,
                    job.state.as_str(),
                    new_state.as_str()
                )));
            }
            stamp_times(f, new_state, now);
            job.state = new_state;
        }
        job.activity.extend(self.append_activity.iter().cloned());
        Ok(())
    }
}

fn cancel(job: &mut Job, by: &str, now: i64) -> Result<Applied> {
    let cancellable_type = matches!(
        job.fields.job_type,
        Some(JobType::K8sSnap | JobType::K8sCopy)
    );
    if job.state == JobState::Cancelled {
        return Ok(Applied::Unchanged);
    }
    if !cancellable_type {
        let kind = job.fields.job_type.map_or("no type", JobType::as_str);
        return Err(Error::FailedPrecondition(format!(
            "job {} is of type {kind}: only K8S_SNAP and K8S_COPY jobs can be cancelled",
            job.id
        )));
    }
    if job.state != JobState::Running {
        return Err(Error::FailedPrecondition(format!(
            "job {} is {}: only a RUNNING job can be cancelled (attempted {} -> CANCELLED)",
            job.id,
            job.state.as_str(),
            job.state.as_str()
        )));
    }
    job.state = JobState::Cancelled;
    stamp_times(&mut job.fields, JobState::Cancelled, now);
    job.activity.push(format!("Job cancelled by {by}"));
    job.touch(now);
    Ok(Applied::Changed)
}

impl Job {
    /// Records that the job changed: new revision, update time and etag.
    pub fn touch(&mut self, now: i64) {
        self.revision += 1;
        // `updated` never goes backwards, even if the clock does.
        self.updated = now.max(self.updated);
        self.etag = etag(&self.id, self.revision, self.updated);
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
fn stamp_times(fields: &mut JobFields, state: JobState, now: i64) {
    let secs = now / 1_000_000;
    if state == JobState::Running && fields.start_time.is_none() {
        fields.start_time = Some(secs);
    }
    if state.is_terminal() && fields.end_time.is_none() {
        fields.end_time = Some(secs);
    }
}

pub(crate) fn validate_fields(f: &JobFields) -> Result<()> {
    for (name, value) in [
        ("start_time", f.start_time),
        ("end_time", f.end_time),
        ("num_total_resources", f.num_total_resources),
        ("num_backup_resources", f.num_backup_resources),
    ] {
        if let Some(v) = value
            && v < 0
        {
            return Err(Error::invalid(format!(
                "{name} is {v}: it cannot be negative"
            )));
        }
    }
    for (name, value) in [
        ("name", &f.name),
        ("message", &f.message),
        ("cluster_name", &f.cluster_name),
        ("backupdef_name", &f.backupdef_name),
        ("restoredef_name", &f.restoredef_name),
        ("securityscan_name", &f.securityscan_name),
    ] {
        check_text(name, value.as_deref())?;
    }
    for (name, value) in [("cluster", &f.cluster), ("backupdef", &f.backupdef)] {
        if let Some(v) = value {
            ObjectId::parse(name, v)?;
        }
    }
    Ok(())
}

pub(crate) fn check_text(name: &str, value: Option<&str>) -> Result<()> {
    match value {
        Some(v) if v.len() > MAX_TEXT_BYTES => Err(Error::invalid(format!(
            "{name} is {} bytes long; the limit is {MAX_TEXT_BYTES}",
            v.len()
        ))),
        // Postgres cannot store it, and no job name or message needs it.
        Some(v) if v.contains('\0') => Err(Error::invalid(format!(
            "{name} contains a NUL character (\\u0000), which is not allowed in text"
        ))),
        _ => Ok(()),
    }
}

fn validate_activity(existing: usize, lines: &[String]) -> Result<()> {
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
mod tests {
    use super::*;

    fn job(state: JobState, job_type: JobType) -> Job {
        NewJob {
            state: Some(state),
            fields: JobFields {
                job_type: Some(job_type),
                ..Default::default()
            },
            ..Default::default()
        }
        .into_job(1_600_000_000_000_000)
        .expect("valid job")
    }

    fn set_state(state: JobState) -> JobChange {
        JobChange::Update(JobUpdate {
            state: Some(state),
            mask: vec![JobField::State],
            ..Default::default()
        })
    }

    #[test]
    fn exactly_the_documented_transitions_are_allowed() {
        for &from in JobState::ALL {
            for &to in JobState::ALL {
                let mut j = job(from, JobType::K8sCopy);
                let before = j.clone();
                let result = set_state(to).apply(&mut j, 1_700_000_000_000_000);
                let legal = from == to && !from.is_terminal() || from.can_become(to);
                assert_eq!(result.is_ok(), legal, "{from:?} -> {to:?}");
                if !legal {
                    assert_eq!(j, before, "a refused change leaves the job as it was");
                }
            }
        }
    }

    #[test]
    fn running_stamps_start_time_and_terminal_stamps_end_time() {
        let mut j = job(JobState::Pending, JobType::K8sSnap);
        assert_eq!(j.fields.start_time, None);
        set_state(JobState::Running)
            .apply(&mut j, 1_700_000_000_000_000)
            .expect("legal");
        assert_eq!(j.fields.start_time, Some(1_700_000_000));
        set_state(JobState::Completed)
            .apply(&mut j, 1_700_000_100_000_000)
            .expect("legal");
        assert_eq!(j.fields.end_time, Some(1_700_000_100));
        assert_eq!(j.revision, 3);
    }

    #[test]
    fn mask_paths_may_be_snake_or_camel_case() {
        assert_eq!(
            JobField::parse_mask_path("numBackupResources").expect("camel"),
            vec![JobField::NumBackupResources]
        );
        assert_eq!(
            JobField::parse_mask_path("num_backup_resources").expect("snake"),
            vec![JobField::NumBackupResources]
        );
        assert!(JobField::parse_mask_path("kubeCopyProgress").is_err());
    }

    #[test]
    fn cancel_rules() {
        let by = JobChange::Cancel {
            by: "tester".into(),
        };
        let mut running = job(JobState::Running, JobType::K8sCopy);
        assert_eq!(by.apply(&mut running, 1).expect("cancel"), Applied::Changed);
        assert_eq!(running.state, JobState::Cancelled);
        assert_eq!(
            by.apply(&mut running, 2).expect("again"),
            Applied::Unchanged
        );
        assert!(
            by.apply(&mut job(JobState::Pending, JobType::K8sCopy), 1)
                .is_err()
        );
        assert!(
            by.apply(&mut job(JobState::Running, JobType::Restore), 1)
                .is_err()
        );
    }
}
