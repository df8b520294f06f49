//! The fields of a job, declared once. Everything that lists a job's fields derives from this
//! table: the `where`/`sort` language, the store's columns, parameters and row decoding, the
//! REST JSON and its projections, the update mask and the validation of written values. A new
//! field is a member of [`Job`] (or [`JobFields`](super::JobFields)) and a line here; tests then
//! name what else it needs (a column in a migration, a field in the proto and its conversion,
//! a property in `openapi.json`).

use crate::domain::pvc::estimate::Rate;
use crate::domain::pvc::{CopyProgress, SnapshotProgress};
use crate::domain::query::field::computed;
use crate::domain::query::value::required;
use crate::domain::query::{Datum, EnumKind, Field, Kind, Origin, Resource, Rest, Uses};
use crate::domain::{Job, JobFields, JobState, JobType, ObjectId};

/// A client-written nullable field of [`JobFields`]: text, an id or an integer.
macro_rules! written {
    ($name:literal, Text, $member:ident) => {
        written!(@ $name, Kind::Text, $member, |j| Datum::text(j.fields.$member.as_deref()), into_text)
    };
    ($name:literal, Id, $member:ident) => {
        written!(@ $name, Kind::Id, $member, |j| Datum::text(j.fields.$member.as_deref()), into_text)
    };
    ($name:literal, Int, $member:ident) => {
        written!(@ $name, Kind::Int, $member, |j| Datum::int(j.fields.$member), into_int)
    };
    // A jobtrack extension: REST shows it only when a projection names it.
    ($name:literal, ExtensionInt, $member:ident) => {
        written!(@ $name, Kind::Int, $member, |j| Datum::int(j.fields.$member), into_int,
            Uses::CLIENT_EXTENSION)
    };
    (@ $name:literal, $kind:expr, $member:ident, $get:expr, $into:ident) => {
        written!(@ $name, $kind, $member, $get, $into, Uses::CLIENT)
    };
    (@ $name:literal, $kind:expr, $member:ident, $get:expr, $into:ident, $uses:expr) => {
        Field {
            name: $name,
            kind: $kind,
            nullable: true,
            uses: $uses,
            get: $get,
            set: |j, v| {
                j.fields.$member = v.$into()?;
                Ok(())
            },
        }
    };
}

/// A counter of the job's copy (`cp`) or snapshot (`sp`) aggregate, or a transfer statistic
/// of the copy aggregate (`cp_stats`): derived from the job's PVC records.
macro_rules! aggregate {
    ($name:literal, cp, $member:ident) => {
        aggregate!(@ $name,
            |j| Datum::int(j.copy_progress.as_ref().map(|c| c.$member)),
            |j, n| j.copy_progress.get_or_insert_with(CopyProgress::default).$member = n)
    };
    ($name:literal, cp_stats, $member:ident) => {
        aggregate!(@ $name,
            |j| Datum::int(j.copy_progress.as_ref().and_then(|c| c.stats.$member)),
            |j, n| j.copy_progress.get_or_insert_with(CopyProgress::default).stats.$member = Some(n))
    };
    ($name:literal, sp, $member:ident) => {
        aggregate!(@ $name,
            |j| Datum::int(j.snapshot_progress.as_ref().map(|s| s.$member)),
            |j, n| j.snapshot_progress.get_or_insert_with(SnapshotProgress::default).$member = n)
    };
    (@ $name:literal, $get:expr, $put:expr) => {
        Field {
            name: $name,
            kind: Kind::Int,
            nullable: true,
            uses: Uses::DERIVED,
            get: $get,
            set: |j, v| {
                let put: fn(&mut Job, i64) = $put;
                // A job without the aggregate has none of its counters; a blank job starts
                // without aggregates, so only a set counter makes one.
                if let Some(n) = v.into_int()? {
                    put(j, n);
                }
                Ok(())
            },
        }
    };
}

static FIELDS: [Field<Job>; 52] = [
    Field {
        name: "_id",
        kind: Kind::Id,
        nullable: false,
        uses: Uses::SERVER,
        get: |j| Datum::Text(j.id.as_str()),
        set: |j, v| {
            j.id = ObjectId::parse("_id", &required(v.into_text()?)?)?;
            Ok(())
        },
    },
    written!("name", Text, name),
    written!("message", Text, message),
    Field {
        name: "type",
        kind: Kind::Enum(EnumKind::JobType),
        nullable: true,
        uses: Uses::CLIENT,
        get: |j| Datum::text(j.fields.job_type.map(JobType::as_str)),
        set: |j, v| {
            j.fields.job_type = v.into_enum(JobType::parse)?;
            Ok(())
        },
    },
    Field {
        name: "state",
        kind: Kind::Enum(EnumKind::JobState),
        nullable: false,
        uses: Uses::CLIENT,
        get: |j| Datum::Text(j.state.as_str()),
        set: |j, v| {
            j.state = required(v.into_enum(JobState::parse)?)?;
            Ok(())
        },
    },
    written!("start_time", Int, start_time),
    written!("end_time", Int, end_time),
    written!("num_total_resources", Int, num_total_resources),
    written!("num_backup_resources", Int, num_backup_resources),
    written!("cluster", Id, cluster),
    written!("cluster_name", Text, cluster_name),
    written!("backupdef", Id, backupdef),
    written!("backupdef_name", Text, backupdef_name),
    written!("restoredef_name", Text, restoredef_name),
    written!("securityscan_name", Text, securityscan_name),
    written!(
        "ttl_seconds_after_finished",
        ExtensionInt,
        ttl_seconds_after_finished
    ),
    written!("stall_after_seconds", ExtensionInt, stall_after_seconds),
    written!("abandon_after_seconds", ExtensionInt, abandon_after_seconds),
    Field {
        name: "activity",
        kind: Kind::Lines,
        nullable: false,
        uses: Uses {
            query: false,
            rest: Rest::Shown,
            origin: Origin::Appended,
        },
        get: |j| Datum::Lines(&j.activity),
        set: |j, v| {
            j.activity = v.into_lines()?;
            Ok(())
        },
    },
    Field {
        name: "activity_times",
        kind: Kind::Times,
        nullable: false,
        uses: Uses {
            query: false,
            rest: Rest::OnRequest,
            origin: Origin::Server,
        },
        get: |j| Datum::Times(&j.activity_times),
        set: |j, v| {
            j.activity_times = v.into_times()?;
            Ok(())
        },
    },
    aggregate!("kube_copy_progress.total_pvs", cp, total_pvs),
    aggregate!("kube_copy_progress.pending_pvs", cp, pending_pvs),
    aggregate!("kube_copy_progress.active_pvs", cp, active_pvs),
    aggregate!("kube_copy_progress.completed_pvs", cp, completed_pvs),
    aggregate!("kube_copy_progress.failed_pvs", cp, failed_pvs),
    aggregate!(
        "kube_copy_progress.stats.estimated_size",
        cp_stats,
        estimated_size
    ),
    aggregate!(
        "kube_copy_progress.stats.estimated_number_of_files",
        cp_stats,
        estimated_number_of_files
    ),
    aggregate!("kube_copy_progress.stats.io_size", cp_stats, io_size),
    aggregate!(
        "kube_copy_progress.stats.io_number_of_files",
        cp_stats,
        io_number_of_files
    ),
    aggregate!(
        "kube_copy_progress.stats.transferred_size",
        cp_stats,
        transferred_size
    ),
    aggregate!(
        "kube_copy_progress.stats.transferred_number_of_files",
        cp_stats,
        transferred_number_of_files
    ),
    aggregate!("kube_snapshot_progress.total_pvs", sp, total_pvs),
    aggregate!("kube_snapshot_progress.pending_pvs", sp, pending_pvs),
    aggregate!("kube_snapshot_progress.active_pvs", sp, active_pvs),
    aggregate!("kube_snapshot_progress.completed_pvs", sp, completed_pvs),
    aggregate!("kube_snapshot_progress.failed_pvs", sp, failed_pvs),
    aggregate!("kube_snapshot_progress.skipped_pvs", sp, skipped_pvs),
    Field {
        name: "_created",
        kind: Kind::Time,
        nullable: false,
        uses: Uses::SERVER,
        get: |j| Datum::Int(j.created),
        set: |j, v| {
            j.created = required(v.into_int()?)?;
            Ok(())
        },
    },
    Field {
        name: "_updated",
        kind: Kind::Time,
        nullable: false,
        uses: Uses::SERVER,
        get: |j| Datum::Int(j.updated),
        set: |j, v| {
            j.updated = required(v.into_int()?)?;
            Ok(())
        },
    },
    Field {
        name: "_etag",
        kind: Kind::Text,
        nullable: false,
        uses: Uses::SERVER,
        get: |j| Datum::Text(&j.etag),
        set: |j, v| {
            j.etag = required(v.into_text()?)?;
            Ok(())
        },
    },
    Field {
        name: "last_report_time",
        kind: Kind::Time,
        nullable: false,
        uses: Uses::SERVER_EXTENSION,
        get: |j| Datum::Int(j.last_report),
        set: |j, v| {
            j.last_report = required(v.into_int()?)?;
            Ok(())
        },
    },
    Field {
        name: "stalled_since",
        kind: Kind::Time,
        nullable: true,
        uses: Uses::SERVER_EXTENSION,
        get: |j| Datum::int(j.stalled_since),
        set: |j, v| {
            j.stalled_since = v.into_int()?;
            Ok(())
        },
    },
    Field {
        name: "abandon_time",
        kind: Kind::Time,
        nullable: true,
        uses: Uses::SERVER_EXTENSION,
        get: |j| Datum::int(j.abandon_at),
        set: |j, v| {
            j.abandon_at = v.into_int()?;
            Ok(())
        },
    },
    computed!(
        "rate_bytes_milli",
        rate_bytes_milli,
        Kind::Int,
        Uses::INTERNAL
    ),
    computed!(
        "rate_files_milli",
        rate_files_milli,
        Kind::Int,
        Uses::INTERNAL
    ),
    Field {
        name: "bytes_per_second",
        kind: Kind::Int,
        nullable: true,
        uses: Uses::COMPUTED_EXTENSION,
        get: |j| Datum::int(j.rate().map(Rate::bytes_per_second)),
        set: |_, _| Ok(()),
    },
    Field {
        name: "files_per_second",
        kind: Kind::Int,
        nullable: true,
        uses: Uses::COMPUTED_EXTENSION,
        get: |j| Datum::int(j.rate().map(Rate::files_per_second)),
        set: |_, _| Ok(()),
    },
    Field {
        name: "eta",
        kind: Kind::Time,
        nullable: true,
        uses: Uses::COMPUTED_EXTENSION,
        get: |j| Datum::int(j.eta()),
        set: |_, _| Ok(()),
    },
    computed!(
        "duration_seconds",
        duration_seconds,
        Kind::Int,
        Uses::SERVER_EXTENSION
    ),
    computed!(
        "average_bytes_per_second",
        average_bytes_per_second,
        Kind::Int,
        Uses::SERVER_EXTENSION
    ),
    // Internal: what the store indexes for a finished job's own TTL.
    computed!("ttl_expiry", ttl_expiry, Kind::Int, Uses::INTERNAL),
    // Not a REST field, but the revision is useful to gRPC clients (changes since N).
    Field {
        name: "revision",
        kind: Kind::Int,
        nullable: false,
        uses: Uses {
            query: true,
            rest: Rest::Hidden,
            origin: Origin::Server,
        },
        get: |j| Datum::Int(j.revision as i64),
        set: |j, v| {
            j.revision = required(v.into_int()?)?.max(0) as u64;
            Ok(())
        },
    },
];

impl Resource for Job {
    const NAME: &'static str = "jobs";

    fn fields() -> &'static [Field<Self>] {
        &FIELDS
    }

    fn blank() -> Self {
        Job {
            id: ObjectId::from_stored(String::new()),
            fields: JobFields::default(),
            state: JobState::Pending,
            activity: Vec::new(),
            activity_times: Vec::new(),
            copy_progress: None,
            snapshot_progress: None,
            created: 0,
            updated: 0,
            revision: 0,
            etag: String::new(),
            last_report: 0,
            stalled_since: None,
            abandon_at: None,
            ttl_expiry: None,
            rate_bytes_milli: None,
            rate_files_milli: None,
            duration_seconds: None,
            average_bytes_per_second: None,
        }
    }
}

/// The field holding the job's state (the one field whose change is a transition).
pub(crate) fn state_field() -> &'static Field<Job> {
    &FIELDS[4]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_what_it_set() {
        let job = crate::domain::job::tests::a_job_with_everything_set();
        let mut copy = Job::blank();
        for field in Job::fields() {
            (field.set)(&mut copy, (field.get)(&job).to_value()).expect(field.name);
        }
        assert_eq!(copy, job);
        assert_eq!(state_field().name, "state");
    }
}
