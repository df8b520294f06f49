//! Changes: what the change log records and watchers receive. Each committed change of a job
//! or of one of its PVC records has a position (`seq`) that strictly increases in commit order
//! and leaves no gaps, so a watcher that has seen position N needs exactly the changes after N.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::domain::{Job, PvcProgress};

/// What happened to the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Created,
    Updated,
    /// A PVC record of the job changed (and with it the job's aggregates).
    PvcUpdated,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "CREATED",
            ChangeKind::Updated => "UPDATED",
            ChangeKind::PvcUpdated => "PVC_UPDATED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Position in the change log.
    pub seq: u64,
    pub kind: ChangeKind,
    /// The job after the change (for `Deleted`: as it was last).
    pub job: Arc<Job>,
    /// The job before the change, so that a filtered watcher can tell a job that stops matching
    /// from one that never matched. Its activity is not kept (no filter reads it). `None` for
    /// `Created`.
    pub before: Option<Arc<Job>>,
    /// The changed record, for `PvcUpdated`.
    pub pvc: Option<Arc<PvcProgress>>,
    /// Commit time, microseconds since the epoch (for retention).
    pub at: i64,
}

/// A change as stored: `before` only as the fields that differ from `job` (a `null` marks a
/// field the job has and `before` had not), which keeps log entries about half as large.
#[derive(Serialize, Deserialize)]
struct Stored {
    seq: u64,
    kind: ChangeKind,
    job: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pvc: Option<Arc<PvcProgress>>,
    at: i64,
}

/// The members of `old` that differ from `new`; `null` for members only `new` has.
fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in old {
        match (value, new.get(key)) {
            (Value::Object(o), Some(Value::Object(n))) => {
                let inner = diff(o, n);
                if !inner.is_empty() {
                    out.insert(key.clone(), Value::Object(inner));
                }
            }
            (v, Some(n)) if v == n => {}
            (v, _) => {
                out.insert(key.clone(), v.clone());
            }
        }
    }
    for key in new.keys() {
        if !old.contains_key(key) {
            out.insert(key.clone(), Value::Null);
        }
    }
    out
}

/// `base` with `patch` applied (the inverse of [`diff`]).
fn patch(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match (base.get_mut(key), value) {
            (_, Value::Null) => {
                base.remove(key);
            }
            (Some(Value::Object(b)), Value::Object(p)) => self::patch(b, p),
            (_, v) => {
                base.insert(key.clone(), v.clone());
            }
        }
    }
}

impl Serialize for Change {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let job = serde_json::to_value(&*self.job).map_err(S::Error::custom)?;
        let before = match &self.before {
            None => None,
            Some(before) => {
                let old = serde_json::to_value(&**before).map_err(S::Error::custom)?;
                let (Value::Object(mut old), Value::Object(new)) = (old, &job) else {
                    return Err(S::Error::custom("a job serialises as an object"));
                };
                old.remove("activity");
                old.remove("activity_times");
                let mut new = new.clone();
                new.remove("activity");
                new.remove("activity_times");
                Some(Value::Object(diff(&old, &new)))
            }
        };
        Stored {
            seq: self.seq,
            kind: self.kind,
            job,
            before,
            pvc: self.pvc.clone(),
            at: self.at,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let stored = Stored::deserialize(deserializer)?;
        let before = match &stored.before {
            None => None,
            Some(Value::Object(changes)) => {
                let Value::Object(mut base) = stored.job.clone() else {
                    return Err(D::Error::custom("a stored job is an object"));
                };
                base.remove("activity");
                base.remove("activity_times");
                patch(&mut base, changes);
                base.insert("activity".into(), Value::Array(Vec::new()));
                Some(Arc::new(
                    serde_json::from_value::<Job>(Value::Object(base)).map_err(D::Error::custom)?,
                ))
            }
            Some(_) => return Err(D::Error::custom("a stored `before` is an object")),
        };
        let job = serde_json::from_value::<Job>(stored.job).map_err(D::Error::custom)?;
        Ok(Change {
            seq: stored.seq,
            kind: stored.kind,
            job: Arc::new(job),
            before,
            pvc: stored.pvc,
            at: stored.at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobChange, JobFields, JobState, JobType, JobUpdate, NewJob};

    #[test]
    fn a_change_survives_the_log_with_its_before_state() {
        let mut job = NewJob {
            fields: JobFields {
                name: Some("n".into()),
                job_type: Some(JobType::K8sCopy),
                ..Default::default()
            },
            activity: vec!["one".into()],
            ..Default::default()
        }
        .into_job(1_000_000)
        .expect("valid");
        let before = Job {
            activity: Vec::new(),
            activity_times: Vec::new(),
            ..job.clone()
        };
        let update = JobUpdate {
            values: JobFields {
                message: Some("m".into()),
                ..Default::default()
            },
            state: Some(JobState::Running),
            mask: crate::domain::job::update::mask_path("message")
                .and_then(|mut m| {
                    m.extend(crate::domain::job::update::mask_path("state")?);
                    Ok(m)
                })
                .expect("paths"),
            append_activity: vec!["two".into()],
        };
        JobChange::Update(update)
            .apply(&mut job, 2_000_000, &crate::domain::Upkeep::default())
            .expect("legal");
        let change = Change {
            seq: 7,
            kind: ChangeKind::Updated,
            job: Arc::new(job),
            before: Some(Arc::new(before)),
            pvc: None,
            at: 2_000_000,
        };
        let text = serde_json::to_string(&change).expect("encodes");
        let back: Change = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, change);
        // Each line keeps the time it came.
        assert_eq!(back.job.activity, ["one", "two"]);
        assert_eq!(back.job.activity_times, [1_000_000, 2_000_000]);
    }
}
