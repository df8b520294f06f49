//! Changes of a job decided against its current state: partial updates (AIP-134, through an
//! update mask of the job's client-written fields) and cancels. [`JobChange::apply`] is the one
//! place that accepts or refuses a change; every store calls it inside the writing transaction.

use super::fields::state_field;
use super::{Job, JobFields, JobState, JobType, stamp_times, validate, validate_activity};
use crate::domain::Upkeep;
use crate::domain::query::{Field, Origin, Resource};
use crate::error::{Error, Result};

/// A partial update of a job (AIP-134).
#[derive(Clone, Debug, Default)]
pub struct JobUpdate {
    /// The values of the fields named in `mask` (the others are not read).
    pub values: JobFields,
    /// `None`: not set in the request.
    pub state: Option<JobState>,
    /// The fields to write; a named field whose value is `None` is cleared.
    pub mask: Vec<&'static Field<Job>>,
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
    /// Applies the change to `job`, or refuses it and leaves `job` as it was. An update is a
    /// write from the job's executor (it clears a stall mark); one that names nothing is the
    /// executor's heartbeat, written only when it moves the job's `last_report` (see
    /// [`Upkeep::resolution`]).
    pub fn apply(&self, job: &mut Job, now: i64, upkeep: &Upkeep) -> Result<Applied> {
        match self {
            JobChange::Update(update) => {
                let mut next = job.clone();
                update.apply_to(&mut next, now)?;
                let heard = next.heard_from_executor(now, upkeep.resolution(&next));
                if update.is_heartbeat() && !heard {
                    return Ok(Applied::Unchanged);
                }
                next.settle();
                next.touch(now);
                *job = next;
                Ok(Applied::Changed)
            }
            JobChange::Cancel { by } => cancel(job, by, now),
        }
    }
}

impl JobUpdate {
    /// An update with an empty mask: every client-written field set in `values` (and the state,
    /// when set) is written, as AIP-134 says.
    pub fn of_fields_set(
        values: JobFields,
        state: Option<JobState>,
        append_activity: Vec<String>,
    ) -> JobUpdate {
        let source = values_as_job(&values, state);
        let mask = Job::fields()
            .iter()
            .filter(|f| f.is_written_by_clients())
            .filter(|f| match *f == state_field() {
                true => state.is_some(),
                false => !(f.get)(&source).is_null(),
            })
            .collect();
        JobUpdate {
            values,
            state,
            mask,
            append_activity,
        }
    }

    /// An update that writes nothing: the executor saying it is alive.
    pub fn is_heartbeat(&self) -> bool {
        self.mask.is_empty() && self.append_activity.is_empty()
    }

    fn names_state(&self) -> bool {
        self.mask.contains(&state_field())
    }

    fn apply_to(&self, job: &mut Job, now: i64) -> Result<()> {
        if job.state.is_terminal() {
            let attempted = match self.state {
                Some(next) if self.names_state() && next != job.state => {
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
        if self.names_state() && self.state.is_none() {
            return Err(Error::invalid(
                "update_mask names \"state\" but job.state is UNKNOWN: a job always has a state",
            ));
        }
        let current = job.state;
        let source = values_as_job(&self.values, self.state);
        for field in &self.mask {
            (field.set)(job, (field.get)(&source).to_value())?;
        }
        validate(job)?;
        validate_activity(job.activity.len(), &self.append_activity)?;
        if job.state != current {
            if !current.can_become(job.state) {
                return Err(Error::FailedPrecondition(format!(
                    "job {} cannot go from {} to {}",
                    job.id,
                    current.as_str(),
                    job.state.as_str()
                )));
            }
            stamp_times(&mut job.fields, job.state, now);
        }
        job.log(self.append_activity.iter().cloned(), now);
        Ok(())
    }
}

/// The values of an update as a job, so that the table's getters read them.
fn values_as_job(values: &JobFields, state: Option<JobState>) -> Job {
    Job {
        fields: values.clone(),
        state: state.unwrap_or(JobState::Pending),
        ..Job::blank()
    }
}

/// The fields one update-mask path names; output-only and derived fields are refused by name.
pub fn mask_path(path: &str) -> Result<Vec<&'static Field<Job>>> {
    // JSON clients (protobuf's FieldMask JSON form) send camelCase paths.
    let snake = to_snake_case(path);
    let path = snake.as_str();
    if path == "*" {
        return Ok(Job::fields()
            .iter()
            .filter(|f| f.is_written_by_clients())
            .collect());
    }
    let derived = || {
        Error::invalid(format!(
            "update_mask names {path:?}, which is derived from the job's PVC records: report PVC progress instead"
        ))
    };
    let Some(field) = Job::field(path) else {
        if path.starts_with("kube_copy_progress") || path.starts_with("kube_snapshot_progress") {
            return Err(derived());
        }
        return Err(Error::invalid(format!(
            "update_mask names {path:?}, which is not a field of Job"
        )));
    };
    match field.uses.origin {
        Origin::Client => Ok(vec![field]),
        Origin::Server | Origin::Computed => Err(Error::invalid(format!(
            "update_mask names {path:?}, which is output only"
        ))),
        Origin::Appended => Err(Error::invalid(format!(
            "update_mask names {path:?}, which is append-only: use append_activity"
        ))),
        Origin::Derived => Err(derived()),
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
    // The message says what the job is doing; a cancelled job is doing nothing any more.
    job.fields.message = Some(format!("Cancelled by {by}"));
    job.log([format!("Job cancelled by {by}")], now);
    job.settle();
    job.touch(now);
    Ok(Applied::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewJob;

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
            mask: vec![state_field()],
            ..Default::default()
        })
    }

    #[test]
    fn exactly_the_documented_transitions_are_allowed() {
        for &from in JobState::ALL {
            for &to in JobState::ALL {
                let mut j = job(from, JobType::K8sCopy);
                let before = j.clone();
                let result = set_state(to).apply(&mut j, 1_700_000_000_000_000, &Upkeep::default());
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
            .apply(&mut j, 1_700_000_000_000_000, &Upkeep::default())
            .expect("legal");
        assert_eq!(j.fields.start_time, Some(1_700_000_000));
        set_state(JobState::Completed)
            .apply(&mut j, 1_700_000_100_000_000, &Upkeep::default())
            .expect("legal");
        assert_eq!(j.fields.end_time, Some(1_700_000_100));
        assert_eq!(j.revision, 3);
    }

    #[test]
    fn mask_paths_may_be_snake_or_camel_case() {
        let names = |path| {
            mask_path(path)
                .expect(path)
                .iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("numBackupResources"), ["num_backup_resources"]);
        assert_eq!(names("num_backup_resources"), ["num_backup_resources"]);
        assert!(mask_path("kubeCopyProgress").is_err());
        for (path, says) in [
            ("id", "output only"),
            ("revision", "output only"),
            ("activity", "append-only"),
            ("kube_copy_progress.failed_pvs", "derived"),
            ("nope", "not a field"),
        ] {
            let error = mask_path(path).expect_err(path).to_string();
            assert!(error.contains(says), "{path}: {error}");
        }
        assert_eq!(mask_path("*").expect("all").len(), 17);
    }

    #[test]
    fn cancel_rules() {
        let by = JobChange::Cancel {
            by: "tester".into(),
        };
        let mut running = job(JobState::Running, JobType::K8sCopy);
        assert_eq!(
            by.apply(&mut running, 1, &Upkeep::default())
                .expect("cancel"),
            Applied::Changed
        );
        assert_eq!(running.state, JobState::Cancelled);
        assert_eq!(
            running.fields.message.as_deref(),
            Some("Cancelled by tester")
        );
        assert_eq!(
            by.apply(&mut running, 2, &Upkeep::default())
                .expect("again"),
            Applied::Unchanged
        );
        assert!(
            by.apply(
                &mut job(JobState::Pending, JobType::K8sCopy),
                1,
                &Upkeep::default()
            )
            .is_err()
        );
        assert!(
            by.apply(
                &mut job(JobState::Running, JobType::Restore),
                1,
                &Upkeep::default()
            )
            .is_err()
        );
    }
}
