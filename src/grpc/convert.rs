//! Proto <-> domain, written by hand (the proto is the contract): enums by exhaustive matches,
//! messages field by field. Tests hold the conversion to the job's table of fields: every field
//! must reach the gRPC message, and every client-written one must come back from it.

use prost_types::Timestamp;

use crate::domain::job::update::mask_path;
use crate::domain::pvc::estimate::Rate;
use crate::domain::{
    CopyProgress, Job, JobFields, JobState, JobType, JobUpdate, NewJob, ObjectId, OpType,
    PvcProgress, PvcReport, PvcState, SnapshotProgress, TransferStats,
};
use crate::error::{Error, Result};
use crate::pb;

pub(crate) fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Conversions both ways between a domain enum and its proto twin, whose variants have the same
/// names; the proto's zero value is "unset". Both matches are exhaustive, so a value added on
/// one side only is a compile error.
macro_rules! enum_conversions {
    ($to:ident, $from:ident: $domain:ident <-> pb::$proto:ident, unset $zero:ident, [$($v:ident),+ $(,)?]) => {
        pub fn $to(value: $domain) -> pb::$proto {
            match value {
                $($domain::$v => pb::$proto::$v,)+
            }
        }

        fn $from(value: pb::$proto) -> Option<$domain> {
            match value {
                pb::$proto::$zero => None,
                $(pb::$proto::$v => Some($domain::$v),)+
            }
        }
    };
}

enum_conversions!(job_type_to_pb, job_type_from_pb: JobType <-> pb::JobType, unset Unspecified, [
    K8sSnap, Restore, K8sCopy, DeleteBackup, AwsInventory, AwsrdsBackup, AwsrdsRestore,
    AwsrdsBackupDelete, AwsrdsCopy, AwseksRestore, SecurityScan,
]);
enum_conversions!(job_state_to_pb, job_state_from_pb: JobState <-> pb::JobState, unset Unknown, [
    Pending, Running, Completed, Failed, Skipped, Partial, Cancelled,
]);
enum_conversions!(pvc_state_to_pb, pvc_state_from_pb: PvcState <-> pb::PvcState, unset Unspecified, [
    Pending, Active, Completed, Failed, SkippedMissingVolumeFromInventory, SkippedMissingAccount,
    SkippedAccountInactive, SkippedVolumeFromOtherRegion,
]);
enum_conversions!(op_type_to_pb, op_type_from_pb: OpType <-> pb::OpType, unset Unspecified, [
    K8sCopy, K8sSnap,
]);

/// An enum field's number as sent: the proto's value, or INVALID_ARGUMENT naming the field.
fn known<E: TryFrom<i32>>(field: &str, enum_name: &str, value: i32) -> Result<E> {
    E::try_from(value).map_err(|_| Error::invalid(format!("{field} {value} is not a {enum_name}")))
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
        r#type: f.job_type.map_or(0, |t| job_type_to_pb(t) as i32),
        state: job_state_to_pb(job.state) as i32,
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
        ttl_seconds_after_finished: f.ttl_seconds_after_finished,
        stall_after_seconds: f.stall_after_seconds,
        abandon_after_seconds: f.abandon_after_seconds,
        last_report_time: Some(timestamp(job.last_report)),
        stalled_since: job.stalled_since.map(timestamp),
        abandon_time: job.abandon_at.map(timestamp),
        bytes_per_second: job.rate().map(Rate::bytes_per_second),
        files_per_second: job.rate().map(Rate::files_per_second),
        eta: job.eta().map(timestamp),
        duration_seconds: job.duration_seconds,
        average_bytes_per_second: job.average_bytes_per_second,
        activity_times: job.activity_times.iter().copied().map(timestamp).collect(),
    }
}

pub fn pvc_to_pb(p: &PvcProgress) -> pb::PvcProgress {
    pb::PvcProgress {
        id: p.id.to_string(),
        job_id: p.job_id.to_string(),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        state: pvc_state_to_pb(p.state) as i32,
        start_time: p.start_time,
        end_time: p.end_time,
        message: p.message.clone(),
        op_type: p.op_type.map_or(0, |t| op_type_to_pb(t) as i32),
        snapshot_progress_percentage: p.snapshot_progress_percentage,
        stats: p.stats.as_ref().map(stats_to_pb),
        created: Some(timestamp(p.created)),
        updated: Some(timestamp(p.updated)),
        etag: p.etag.clone(),
        bytes_per_second: p.rate().map(Rate::bytes_per_second),
        files_per_second: p.rate().map(Rate::files_per_second),
        eta: p.eta().map(timestamp),
        active_time: p.active_time.map(timestamp),
        finish_time: p.finish_time.map(timestamp),
    }
}

fn fields_from_pb(job: &pb::Job) -> Result<JobFields> {
    Ok(JobFields {
        name: job.name.clone(),
        message: job.message.clone(),
        job_type: job_type_from_pb(known("job.type", "JobType", job.r#type)?),
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
        ttl_seconds_after_finished: job.ttl_seconds_after_finished,
        stall_after_seconds: job.stall_after_seconds,
        abandon_after_seconds: job.abandon_after_seconds,
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
        state: job_state_from_pb(known("job.state", "JobState", job.state)?),
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
    let state = job_state_from_pb(known("job.state", "JobState", job.state)?);
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        if !job.activity.is_empty() {
            return Err(Error::invalid(
                "job.activity is append-only: send new lines in append_activity",
            ));
        }
        refuse_derived(&job)?;
        return Ok((
            job.id,
            JobUpdate::of_fields_set(values, state, append_activity),
        ));
    }
    let mut fields = Vec::new();
    for path in &paths {
        for field in mask_path(path)? {
            if !fields.contains(&field) {
                fields.push(field);
            }
        }
    }
    Ok((
        job.id,
        JobUpdate {
            values,
            state,
            mask: fields,
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
        state: pvc_state_from_pb(known("pvc.state", "PvcState", pvc.state)?),
        start_time: pvc.start_time,
        end_time: pvc.end_time,
        message: pvc.message,
        op_type: op_type_from_pb(known("pvc.op_type", "OpType", pvc.op_type)?),
        snapshot_progress_percentage: pvc.snapshot_progress_percentage,
        stats: pvc.stats.as_ref().map(stats_from_pb),
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::JobChange;
    use crate::domain::query::{Datum, EnumKind, Field, Kind, Resource, Value};

    #[test]
    fn every_enum_value_round_trips_between_proto_and_domain() {
        for &t in JobType::ALL {
            assert_eq!(job_type_from_pb(job_type_to_pb(t)), Some(t));
        }
        for &s in JobState::ALL {
            assert_eq!(job_state_from_pb(job_state_to_pb(s)), Some(s));
        }
        for &s in PvcState::ALL {
            assert_eq!(pvc_state_from_pb(pvc_state_to_pb(s)), Some(s));
        }
        for &t in OpType::ALL {
            assert_eq!(op_type_from_pb(op_type_to_pb(t)), Some(t));
        }
        assert!(
            new_job_from_pb(Some(pb::Job {
                state: 99,
                ..Default::default()
            }))
            .is_err()
        );
    }

    /// Two different values a field of this kind can hold.
    fn two_values(kind: Kind) -> [Value; 2] {
        let text = |s: &str| Value::Text(s.to_string());
        match kind {
            Kind::Int => [Value::Int(7), Value::Int(8)],
            // Times are microseconds: whole seconds apart, so that they differ on the wire.
            Kind::Time => [Value::Int(7_000_000), Value::Int(8_000_000)],
            Kind::Text => [text("x"), text("y")],
            Kind::Id => [
                text("5f431ef6a7690b60975f6664"),
                text("5f431ef6a7690b60975f6665"),
            ],
            Kind::Enum(kind) => {
                let values = EnumKind::values(kind);
                [
                    text(values[values.len() - 2]),
                    text(values[values.len() - 1]),
                ]
            }
            Kind::Lines => [
                Value::Lines(vec!["x".into()]),
                Value::Lines(vec!["y".into()]),
            ],
            Kind::Times => [Value::Times(vec![7_000_000]), Value::Times(vec![8_000_000])],
        }
    }

    /// `record` with `field` set to `value`.
    fn with<T: Resource>(record: &T, field: &Field<T>, value: Value) -> T {
        let mut record = record.clone();
        (field.set)(&mut record, value).expect(field.name);
        record
    }

    #[test]
    fn every_field_of_a_job_reaches_the_grpc_message() {
        let job = crate::domain::job::tests::a_job_with_everything_set();
        for field in Job::fields() {
            let internal = field.uses.rest == crate::domain::query::Rest::Hidden;
            if internal && field.name != "revision" || !field.is_stored() {
                continue; // internal, or computed from the others (tests/api/estimates.rs)
            }
            let [a, b] = two_values(field.kind);
            let (a, b) = (with(&job, field, a), with(&job, field, b));
            assert_ne!(
                job_to_pb(&a).encode_to_vec(),
                job_to_pb(&b).encode_to_vec(),
                "the job field {} does not reach the gRPC Job: map it in grpc/convert.rs (and the proto)",
                field.name
            );
        }
    }

    #[test]
    fn every_client_written_field_of_a_job_comes_back_from_the_grpc_message() {
        let job = crate::domain::job::tests::a_job_with_everything_set();
        for field in Job::fields().iter().filter(|f| f.is_written_by_clients()) {
            let [value, _] = two_values(field.kind);
            let sent = with(&job, field, value);
            let mask = prost_types::FieldMask {
                paths: vec![field.name.to_string()],
            };
            let (_, update) =
                update_from_pb(Some(job_to_pb(&sent)), Some(mask), Vec::new()).expect(field.name);
            let mut received = job.clone();
            JobChange::Update(update)
                .apply(
                    &mut received,
                    1_600_000_000_000_000,
                    &crate::domain::Upkeep::default(),
                )
                .expect(field.name);
            assert_eq!(
                (field.get)(&received),
                (field.get)(&sent),
                "the job field {} is not read from the gRPC Job: map it in grpc/convert.rs",
                field.name
            );
        }
    }

    #[test]
    fn every_field_of_a_pvc_record_reaches_the_grpc_message() {
        let pvc = PvcProgress {
            stats: Some(TransferStats::default()),
            ..PvcProgress::blank()
        };
        for field in PvcProgress::fields() {
            if field.uses.rest == crate::domain::query::Rest::Hidden || !field.is_stored() {
                continue; // internal (the revision only moves the etag), or computed
            }
            let [a, b] = two_values(field.kind);
            let (a, b) = (with(&pvc, field, a), with(&pvc, field, b));
            let datum = |p: &PvcProgress| (field.get)(p) != Datum::Null;
            assert!(datum(&a) && datum(&b), "{}", field.name);
            assert_ne!(
                pvc_to_pb(&a).encode_to_vec(),
                pvc_to_pb(&b).encode_to_vec(),
                "the PVC field {} does not reach the gRPC PvcProgress",
                field.name
            );
        }
    }
}
