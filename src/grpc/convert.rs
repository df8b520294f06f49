//! Proto <-> domain. Enum values map through their names (`JOB_TYPE_K8S_SNAP` <-> `K8S_SNAP`), so
//! the proto and the domain cannot drift apart silently: a test round-trips every value.

use prost_types::Timestamp;

use crate::domain::job::JobField;
use crate::domain::{
    CopyProgress, Job, JobFields, JobState, JobType, JobUpdate, NewJob, ObjectId, OpType,
    PvcProgress, PvcReport, PvcState, SnapshotProgress, TransferStats,
};
use crate::error::{Error, Result};
use crate::pb;

fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

pub fn job_type_to_pb(t: Option<JobType>) -> i32 {
    t.and_then(|t| pb::JobType::from_str_name(&format!("JOB_TYPE_{}", t.as_str())))
        .map_or(0, |t| t as i32)
}

pub fn job_state_to_pb(s: JobState) -> i32 {
    pb::JobState::from_str_name(&format!("JOB_STATE_{}", s.as_str())).map_or(0, |s| s as i32)
}

fn pvc_state_to_pb(s: PvcState) -> i32 {
    pb::PvcState::from_str_name(&format!("PVC_STATE_{}", s.as_str().replace('-', "_")))
        .map_or(0, |s| s as i32)
}

fn op_type_to_pb(t: Option<OpType>) -> i32 {
    t.and_then(|t| pb::OpType::from_str_name(&format!("OP_TYPE_{}", t.as_str())))
        .map_or(0, |t| t as i32)
}

/// `None` for the zero value; INVALID_ARGUMENT for a number the proto does not define.
fn job_type_from_pb(v: i32) -> Result<Option<JobType>> {
    let t = pb::JobType::try_from(v)
        .map_err(|_| Error::invalid(format!("job.type {v} is not a JobType")))?;
    Ok(t.as_str_name()
        .strip_prefix("JOB_TYPE_")
        .and_then(JobType::parse))
}

fn job_state_from_pb(v: i32) -> Result<Option<JobState>> {
    let s = pb::JobState::try_from(v)
        .map_err(|_| Error::invalid(format!("job.state {v} is not a JobState")))?;
    Ok(s.as_str_name()
        .strip_prefix("JOB_STATE_")
        .and_then(JobState::parse))
}

fn pvc_state_from_pb(v: i32) -> Result<Option<PvcState>> {
    let s = pb::PvcState::try_from(v)
        .map_err(|_| Error::invalid(format!("pvc.state {v} is not a PvcState")))?;
    Ok(s.as_str_name()
        .strip_prefix("PVC_STATE_")
        .and_then(|n| PvcState::parse(&n.replace('_', "-"))))
}

fn op_type_from_pb(v: i32) -> Result<Option<OpType>> {
    let t = pb::OpType::try_from(v)
        .map_err(|_| Error::invalid(format!("pvc.op_type {v} is not an OpType")))?;
    Ok(t.as_str_name()
        .strip_prefix("OP_TYPE_")
        .and_then(OpType::parse))
}

fn stats_to_pb(s: &TransferStats) -> pb::TransferStats {
    pb::TransferStats {
        estimated_size: s.estimated_size,
        estimated_number_of_files: s.estimated_number_of_files,
        io_size: s.io_size,
        io_number_of_files: s.io_number_of_files,
        transferred_size: s.transferred_size,
        transferred_number_of_files: s.transferred_number_of_files,
    }
}

fn stats_from_pb(s: &pb::TransferStats) -> TransferStats {
    TransferStats {
        estimated_size: s.estimated_size,
        estimated_number_of_files: s.estimated_number_of_files,
        io_size: s.io_size,
        io_number_of_files: s.io_number_of_files,
        transferred_size: s.transferred_size,
        transferred_number_of_files: s.transferred_number_of_files,
    }
}

fn copy_to_pb(c: &CopyProgress) -> pb::KubeCopyProgress {
    pb::KubeCopyProgress {
        stats: Some(stats_to_pb(&c.stats)),
        total_pvs: c.total_pvs,
        pending_pvs: c.pending_pvs,
        active_pvs: c.active_pvs,
        completed_pvs: c.completed_pvs,
        failed_pvs: c.failed_pvs,
    }
}

fn snapshot_to_pb(s: &SnapshotProgress) -> pb::KubeSnapshotProgress {
    pb::KubeSnapshotProgress {
        total_pvs: s.total_pvs,
        pending_pvs: s.pending_pvs,
        active_pvs: s.active_pvs,
        completed_pvs: s.completed_pvs,
        failed_pvs: s.failed_pvs,
        skipped_pvs: s.skipped_pvs,
    }
}

pub fn job_to_pb(job: &Job) -> pb::Job {
    let f = &job.fields;
    pb::Job {
        id: job.id.to_string(),
        name: f.name.clone(),
        message: f.message.clone(),
        r#type: job_type_to_pb(f.job_type),
        state: job_state_to_pb(job.state),
        start_time: f.start_time,
        end_time: f.end_time,
        num_total_resources: f.num_total_resources,
        num_backup_resources: f.num_backup_resources,
        cluster: f.cluster.clone(),
        cluster_name: f.cluster_name.clone(),
        backupdef: f.backupdef.clone(),
        backupdef_name: f.backupdef_name.clone(),
        restoredef_name: f.restoredef_name.clone(),
        securityscan_name: f.securityscan_name.clone(),
        activity: job.activity.clone(),
        kube_copy_progress: job.copy_progress.as_ref().map(copy_to_pb),
        kube_snapshot_progress: job.snapshot_progress.as_ref().map(snapshot_to_pb),
        created: Some(timestamp(job.created)),
        updated: Some(timestamp(job.updated)),
        etag: job.etag.clone(),
        revision: job.revision,
    }
}

pub fn pvc_to_pb(p: &PvcProgress) -> pb::PvcProgress {
    pb::PvcProgress {
        id: p.id.to_string(),
        job_id: p.job_id.to_string(),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        state: pvc_state_to_pb(p.state),
        start_time: p.start_time,
        end_time: p.end_time,
        message: p.message.clone(),
        op_type: op_type_to_pb(p.op_type),
        snapshot_progress_percentage: p.snapshot_progress_percentage,
        stats: p.stats.as_ref().map(stats_to_pb),
        created: Some(timestamp(p.created)),
        updated: Some(timestamp(p.updated)),
        etag: p.etag.clone(),
    }
}

fn fields_from_pb(job: &pb::Job) -> Result<JobFields> {
    Ok(JobFields {
        name: job.name.clone(),
        message: job.message.clone(),
        job_type: job_type_from_pb(job.r#type)?,
        start_time: job.start_time,
        end_time: job.end_time,
        num_total_resources: job.num_total_resources,
        num_backup_resources: job.num_backup_resources,
        cluster: job.cluster.clone(),
        cluster_name: job.cluster_name.clone(),
        backupdef: job.backupdef.clone(),
        backupdef_name: job.backupdef_name.clone(),
        restoredef_name: job.restoredef_name.clone(),
        securityscan_name: job.securityscan_name.clone(),
    })
}

fn refuse_derived(job: &pb::Job) -> Result<()> {
    for (name, set) in [
        ("kube_copy_progress", job.kube_copy_progress.is_some()),
        (
            "kube_snapshot_progress",
            job.kube_snapshot_progress.is_some(),
        ),
    ] {
        if set {
            return Err(Error::invalid(format!(
                "job.{name} is derived from the job's PVC records and cannot be written: report PVC progress instead"
            )));
        }
    }
    Ok(())
}

/// A CreateJob request. Output-only fields (created, updated, etag, revision) are ignored.
pub fn new_job_from_pb(job: Option<pb::Job>) -> Result<NewJob> {
    let job = job.ok_or_else(|| Error::invalid("job is required"))?;
    refuse_derived(&job)?;
    let id = if job.id.is_empty() {
        None
    } else {
        Some(ObjectId::parse("job.id", &job.id)?)
    };
    Ok(NewJob {
        id,
        fields: fields_from_pb(&job)?,
        state: job_state_from_pb(job.state)?,
        activity: job.activity,
    })
}

/// An UpdateJob request: the job id and the update (AIP-134; an empty mask means every field set
/// in `job`).
pub fn update_from_pb(
    job: Option<pb::Job>,
    mask: Option<prost_types::FieldMask>,
    append_activity: Vec<String>,
) -> Result<(String, JobUpdate)> {
    let job =
        job.ok_or_else(|| Error::invalid("job is required (job.id names the job to update)"))?;
    let values = fields_from_pb(&job)?;
    let state = job_state_from_pb(job.state)?;
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    let mask = if paths.is_empty() {
        if !job.activity.is_empty() {
            return Err(Error::invalid(
                "job.activity is append-only: send new lines in append_activity",
            ));
        }
        refuse_derived(&job)?;
        let v = &values;
        let set = [
            (JobField::Name, v.name.is_some()),
            (JobField::Message, v.message.is_some()),
            (JobField::Type, v.job_type.is_some()),
            (JobField::State, state.is_some()),
            (JobField::StartTime, v.start_time.is_some()),
            (JobField::EndTime, v.end_time.is_some()),
            (JobField::NumTotalResources, v.num_total_resources.is_some()),
            (
                JobField::NumBackupResources,
                v.num_backup_resources.is_some(),
            ),
            (JobField::Cluster, v.cluster.is_some()),
            (JobField::ClusterName, v.cluster_name.is_some()),
            (JobField::Backupdef, v.backupdef.is_some()),
            (JobField::BackupdefName, v.backupdef_name.is_some()),
            (JobField::RestoredefName, v.restoredef_name.is_some()),
            (JobField::SecurityscanName, v.securityscan_name.is_some()),
        ];
        set.into_iter()
            .filter(|(_, is_set)| *is_set)
            .map(|(field, _)| field)
            .collect()
    } else {
        let mut fields = Vec::new();
        for path in &paths {
            for field in JobField::parse_mask_path(path)? {
                if !fields.contains(&field) {
                    fields.push(field);
                }
            }
        }
        fields
    };
    Ok((
        job.id,
        JobUpdate {
            values,
            state,
            mask,
            append_activity,
        },
    ))
}

/// A ReportPvcProgress request.
pub fn report_from_pb(pvc: Option<pb::PvcProgress>) -> Result<PvcReport> {
    let pvc = pvc.ok_or_else(|| Error::invalid("pvc is required"))?;
    Ok(PvcReport {
        job_id: ObjectId::parse("pvc.job_id", &pvc.job_id)?,
        id: if pvc.id.is_empty() {
            None
        } else {
            Some(ObjectId::parse("pvc.id", &pvc.id)?)
        },
        namespace: pvc.namespace,
        name: pvc.name,
        state: pvc_state_from_pb(pvc.state)?,
        start_time: pvc.start_time,
        end_time: pvc.end_time,
        message: pvc.message,
        op_type: op_type_from_pb(pvc.op_type)?,
        snapshot_progress_percentage: pvc.snapshot_progress_percentage,
        stats: pvc.stats.as_ref().map(stats_from_pb),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_value_round_trips_between_proto_and_domain() {
        for &t in JobType::ALL {
            assert_eq!(
                job_type_from_pb(job_type_to_pb(Some(t))).expect("known"),
                Some(t)
            );
        }
        for &s in JobState::ALL {
            assert_eq!(
                job_state_from_pb(job_state_to_pb(s)).expect("known"),
                Some(s)
            );
        }
        for &s in PvcState::ALL {
            assert_eq!(
                pvc_state_from_pb(pvc_state_to_pb(s)).expect("known"),
                Some(s)
            );
        }
        for &t in OpType::ALL {
            assert_eq!(
                op_type_from_pb(op_type_to_pb(Some(t))).expect("known"),
                Some(t)
            );
        }
        assert!(job_state_from_pb(99).is_err());
    }
}
