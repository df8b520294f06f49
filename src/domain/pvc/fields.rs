//! The fields of a PVC progress record, declared once: the `where`/`sort` language, the store's
//! columns, parameters and row decoding and the REST JSON all derive from this table.

use super::estimate::Rate;
use super::{OpType, PvcProgress, PvcState, TransferStats};
use crate::domain::ObjectId;
use crate::domain::query::field::computed;
use crate::domain::query::value::required;
use crate::domain::query::{
    CmpOp, Datum, EnumKind, Field, Filter, Kind, Origin, Resource, Rest, Uses, Value,
};

/// A transfer statistic of the record (`stats.*`), as its executor reports it.
macro_rules! stat {
    ($name:literal, $member:ident) => {
        Field {
            name: $name,
            kind: Kind::Int,
            nullable: true,
            uses: Uses::CLIENT,
            get: |p| Datum::int(p.stats.as_ref().and_then(|s| s.$member)),
            set: |p, v| {
                if let Some(n) = v.into_int()? {
                    p.stats.get_or_insert_with(TransferStats::default).$member = Some(n);
                }
                Ok(())
            },
        }
    };
}

/// A text field every record has.
macro_rules! text {
    ($name:literal, $member:ident) => {
        Field {
            name: $name,
            kind: Kind::Text,
            nullable: false,
            uses: Uses::CLIENT,
            get: |p| Datum::Text(&p.$member),
            set: |p, v| {
                p.$member = required(v.into_text()?)?;
                Ok(())
            },
        }
    };
}

/// A nullable integer field, written as reported.
macro_rules! int {
    ($name:literal, $member:ident) => {
        Field {
            name: $name,
            kind: Kind::Int,
            nullable: true,
            uses: Uses::CLIENT,
            get: |p| Datum::int(p.$member),
            set: |p, v| {
                p.$member = v.into_int()?;
                Ok(())
            },
        }
    };
}

static FIELDS: [Field<PvcProgress>; 27] = [
    Field {
        name: "_id",
        kind: Kind::Id,
        nullable: false,
        uses: Uses::SERVER,
        get: |p| Datum::Text(p.id.as_str()),
        set: |p, v| {
            p.id = ObjectId::parse("_id", &required(v.into_text()?)?)?;
            Ok(())
        },
    },
    Field {
        name: "job_id",
        kind: Kind::Id,
        nullable: false,
        uses: Uses::CLIENT,
        get: |p| Datum::Text(p.job_id.as_str()),
        set: |p, v| {
            p.job_id = ObjectId::parse("job_id", &required(v.into_text()?)?)?;
            Ok(())
        },
    },
    text!("namespace", namespace),
    text!("name", name),
    Field {
        name: "state",
        kind: Kind::Enum(EnumKind::PvcState),
        nullable: false,
        uses: Uses::CLIENT,
        get: |p| Datum::Text(p.state.as_str()),
        set: |p, v| {
            p.state = required(v.into_enum(PvcState::parse)?)?;
            Ok(())
        },
    },
    int!("start_time", start_time),
    int!("end_time", end_time),
    Field {
        name: "message",
        kind: Kind::Text,
        nullable: true,
        uses: Uses::CLIENT,
        get: |p| Datum::text(p.message.as_deref()),
        set: |p, v| {
            p.message = v.into_text()?;
            Ok(())
        },
    },
    Field {
        name: "op_type",
        kind: Kind::Enum(EnumKind::OpType),
        nullable: true,
        uses: Uses::CLIENT,
        get: |p| Datum::text(p.op_type.map(OpType::as_str)),
        set: |p, v| {
            p.op_type = v.into_enum(OpType::parse)?;
            Ok(())
        },
    },
    Field {
        name: "snapshot_progress_percentage",
        kind: Kind::Int,
        nullable: true,
        uses: Uses::CLIENT,
        get: |p| Datum::int(p.snapshot_progress_percentage.map(i64::from)),
        set: |p, v| {
            p.snapshot_progress_percentage = v.into_int()?.map(|n| n.clamp(0, 100) as i32);
            Ok(())
        },
    },
    stat!("stats.estimated_size", estimated_size),
    stat!("stats.estimated_number_of_files", estimated_number_of_files),
    stat!("stats.io_size", io_size),
    stat!("stats.io_number_of_files", io_number_of_files),
    stat!("stats.transferred_size", transferred_size),
    stat!(
        "stats.transferred_number_of_files",
        transferred_number_of_files
    ),
    computed!(
        "active_time",
        active_time,
        Kind::Time,
        Uses::SERVER_EXTENSION
    ),
    computed!(
        "finish_time",
        finish_time,
        Kind::Time,
        Uses::SERVER_EXTENSION
    ),
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
        get: |p| Datum::int(p.rate().map(Rate::bytes_per_second)),
        set: |_, _| Ok(()),
    },
    Field {
        name: "files_per_second",
        kind: Kind::Int,
        nullable: true,
        uses: Uses::COMPUTED_EXTENSION,
        get: |p| Datum::int(p.rate().map(Rate::files_per_second)),
        set: |_, _| Ok(()),
    },
    Field {
        name: "eta",
        kind: Kind::Time,
        nullable: true,
        uses: Uses::COMPUTED_EXTENSION,
        get: |p| Datum::int(p.eta()),
        set: |_, _| Ok(()),
    },
    Field {
        name: "_created",
        kind: Kind::Time,
        nullable: false,
        uses: Uses::SERVER,
        get: |p| Datum::Int(p.created),
        set: |p, v| {
            p.created = required(v.into_int()?)?;
            Ok(())
        },
    },
    Field {
        name: "_updated",
        kind: Kind::Time,
        nullable: false,
        uses: Uses::SERVER,
        get: |p| Datum::Int(p.updated),
        set: |p, v| {
            p.updated = required(v.into_int()?)?;
            Ok(())
        },
    },
    // Internal: bumps on every change, so that the etag changes.
    Field {
        name: "revision",
        kind: Kind::Int,
        nullable: false,
        uses: Uses {
            query: false,
            rest: Rest::Hidden,
            origin: Origin::Server,
        },
        get: |p| Datum::Int(p.revision as i64),
        set: |p, v| {
            p.revision = required(v.into_int()?)?.max(0) as u64;
            Ok(())
        },
    },
    Field {
        name: "_etag",
        kind: Kind::Text,
        nullable: false,
        uses: Uses::SERVER,
        get: |p| Datum::Text(&p.etag),
        set: |p, v| {
            p.etag = required(v.into_text()?)?;
            Ok(())
        },
    },
];

impl Resource for PvcProgress {
    const NAME: &'static str = "kubepvcprogress";

    fn fields() -> &'static [Field<Self>] {
        &FIELDS
    }

    fn blank() -> Self {
        PvcProgress {
            id: ObjectId::from_stored(String::new()),
            job_id: ObjectId::from_stored(String::new()),
            namespace: String::new(),
            name: String::new(),
            state: PvcState::Pending,
            start_time: None,
            end_time: None,
            message: None,
            op_type: None,
            snapshot_progress_percentage: None,
            stats: None,
            created: 0,
            updated: 0,
            revision: 0,
            etag: String::new(),
            rate_bytes_milli: None,
            rate_files_milli: None,
            active_time: None,
            finish_time: None,
        }
    }
}

/// The PVC records of one job.
pub fn of_job(job_id: &ObjectId) -> Filter<PvcProgress> {
    Filter::Compare {
        field: &FIELDS[1],
        op: CmpOp::Eq,
        value: Value::Text(job_id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PvcReport;

    #[test]
    fn every_field_reads_back_what_it_set() {
        let report = PvcReport {
            job_id: ObjectId::generate(),
            namespace: "ns".into(),
            name: "data".into(),
            id: None,
            state: Some(PvcState::Active),
            start_time: Some(1),
            end_time: Some(2),
            message: Some("m".into()),
            op_type: Some(OpType::K8sCopy),
            snapshot_progress_percentage: Some(40),
            stats: Some(TransferStats {
                estimated_size: Some(1),
                estimated_number_of_files: Some(2),
                io_size: Some(3),
                io_number_of_files: Some(4),
                transferred_size: Some(5),
                transferred_number_of_files: Some(6),
            }),
        };
        let pvc = report.apply(None, 1_000_000).expect("valid");
        let mut copy = PvcProgress::blank();
        for field in PvcProgress::fields() {
            (field.set)(&mut copy, (field.get)(&pvc).to_value()).expect(field.name);
        }
        assert_eq!(copy, pvc);
        assert_eq!(of_job(&pvc.job_id), of_job(&pvc.job_id));
        assert!(of_job(&pvc.job_id).matches(&pvc));
    }
}
