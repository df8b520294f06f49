//! Rows <-> records, shared by every SQL backend: one column list per table, the parameters
//! written for a record in that order, and decoding a row selected in that order.

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::domain::{
    CopyProgress, Job, JobFields, JobState, JobType, ObjectId, OpType, PvcProgress, PvcState,
    SnapshotProgress, TransferStats,
};
use crate::error::{Error, Result};
use crate::store::sql::Param;

pub const JOB_COLUMNS: &str = "id, name, message, type, state, start_time, end_time, \
num_total_resources, num_backup_resources, cluster, cluster_name, backupdef, backupdef_name, \
restoredef_name, securityscan_name, activity, cp_total_pvs, cp_pending_pvs, cp_active_pvs, \
cp_completed_pvs, cp_failed_pvs, cp_estimated_size, cp_estimated_number_of_files, cp_io_size, \
cp_io_number_of_files, cp_transferred_size, cp_transferred_number_of_files, sp_total_pvs, \
sp_pending_pvs, sp_active_pvs, sp_completed_pvs, sp_failed_pvs, sp_skipped_pvs, created, updated, \
revision, etag";

pub const PVC_COLUMNS: &str = "id, job_id, namespace, name, state, start_time, end_time, message, \
op_type, snapshot_progress_percentage, estimated_size, estimated_number_of_files, io_size, \
io_number_of_files, transferred_size, transferred_number_of_files, created, updated, revision, etag";

fn int(v: Option<i64>) -> Param {
    Param::Int(v)
}

fn text(v: Option<&str>) -> Param {
    Param::Text(v.map(str::to_string))
}

fn stats_params(s: Option<&TransferStats>) -> [Param; 6] {
    let s = s.copied().unwrap_or_default();
    [
        int(s.estimated_size),
        int(s.estimated_number_of_files),
        int(s.io_size),
        int(s.io_number_of_files),
        int(s.transferred_size),
        int(s.transferred_number_of_files),
    ]
}

/// The values of [`JOB_COLUMNS`] for `job`.
pub fn job_params(job: &Job) -> Vec<Param> {
    let f = &job.fields;
    let cp = job.copy_progress.as_ref();
    let sp = job.snapshot_progress.as_ref();
    let activity = serde_json::to_string(&job.activity).unwrap_or_else(|_| "[]".into());
    let mut params = vec![
        text(Some(job.id.as_str())),
        text(f.name.as_deref()),
        text(f.message.as_deref()),
        text(f.job_type.map(JobType::as_str)),
        text(Some(job.state.as_str())),
        int(f.start_time),
        int(f.end_time),
        int(f.num_total_resources),
        int(f.num_backup_resources),
        text(f.cluster.as_deref()),
        text(f.cluster_name.as_deref()),
        text(f.backupdef.as_deref()),
        text(f.backupdef_name.as_deref()),
        text(f.restoredef_name.as_deref()),
        text(f.securityscan_name.as_deref()),
        Param::Text(Some(activity)),
        int(cp.map(|c| c.total_pvs)),
        int(cp.map(|c| c.pending_pvs)),
        int(cp.map(|c| c.active_pvs)),
        int(cp.map(|c| c.completed_pvs)),
        int(cp.map(|c| c.failed_pvs)),
    ];
    params.extend(stats_params(cp.map(|c| &c.stats)));
    params.extend([
        int(sp.map(|s| s.total_pvs)),
        int(sp.map(|s| s.pending_pvs)),
        int(sp.map(|s| s.active_pvs)),
        int(sp.map(|s| s.completed_pvs)),
        int(sp.map(|s| s.failed_pvs)),
        int(sp.map(|s| s.skipped_pvs)),
        int(Some(job.created)),
        int(Some(job.updated)),
        int(Some(job.revision as i64)),
        text(Some(&job.etag)),
    ]);
    params
}

/// The values of [`PVC_COLUMNS`] for `pvc`.
pub fn pvc_params(p: &PvcProgress) -> Vec<Param> {
    let mut params = vec![
        text(Some(p.id.as_str())),
        text(Some(p.job_id.as_str())),
        text(Some(&p.namespace)),
        text(Some(&p.name)),
        text(Some(p.state.as_str())),
        int(p.start_time),
        int(p.end_time),
        text(p.message.as_deref()),
        text(p.op_type.map(OpType::as_str)),
        int(p.snapshot_progress_percentage.map(i64::from)),
    ];
    params.extend(stats_params(p.stats.as_ref()));
    params.extend([
        int(Some(p.created)),
        int(Some(p.updated)),
        int(Some(p.revision as i64)),
        text(Some(&p.etag)),
    ]);
    params
}

/// Reads the columns of a row front to back.
struct Columns<'r, R> {
    row: &'r R,
    next: usize,
}

impl<'r, R> Columns<'r, R>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'a> i64: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
{
    fn opt_int(&mut self) -> Result<Option<i64>> {
        self.next += 1;
        Ok(self.row.try_get::<Option<i64>, _>(self.next - 1)?)
    }

    fn int(&mut self) -> Result<i64> {
        self.next += 1;
        Ok(self.row.try_get::<i64, _>(self.next - 1)?)
    }

    fn opt_text(&mut self) -> Result<Option<String>> {
        self.next += 1;
        Ok(self.row.try_get::<Option<String>, _>(self.next - 1)?)
    }

    fn text(&mut self) -> Result<String> {
        self.next += 1;
        Ok(self.row.try_get::<String, _>(self.next - 1)?)
    }

    fn stats(&mut self) -> Result<TransferStats> {
        Ok(TransferStats {
            estimated_size: self.opt_int()?,
            estimated_number_of_files: self.opt_int()?,
            io_size: self.opt_int()?,
            io_number_of_files: self.opt_int()?,
            transferred_size: self.opt_int()?,
            transferred_number_of_files: self.opt_int()?,
        })
    }
}

fn corrupt(what: &str, value: &str) -> Error {
    tracing::error!(what, value, "unreadable value in the database");
    Error::Internal(format!("unreadable {what} {value:?} in the database"))
}

fn parse_enum<T>(
    what: &str,
    value: Option<String>,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>> {
    value
        .map(|v| parse(&v).ok_or_else(|| corrupt(what, &v)))
        .transpose()
}

/// Decodes a row selected as [`JOB_COLUMNS`].
pub fn job_from_row<R>(row: &R) -> Result<Job>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'a> i64: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
{
    let mut c = Columns { row, next: 0 };
    let id = ObjectId::from_stored(c.text()?);
    let name = c.opt_text()?;
    let message = c.opt_text()?;
    let job_type = parse_enum("job type", c.opt_text()?, JobType::parse)?;
    let state_text = c.text()?;
    let state = JobState::parse(&state_text).ok_or_else(|| corrupt("job state", &state_text))?;
    let fields = JobFields {
        name,
        message,
        job_type,
        start_time: c.opt_int()?,
        end_time: c.opt_int()?,
        num_total_resources: c.opt_int()?,
        num_backup_resources: c.opt_int()?,
        cluster: c.opt_text()?,
        cluster_name: c.opt_text()?,
        backupdef: c.opt_text()?,
        backupdef_name: c.opt_text()?,
        restoredef_name: c.opt_text()?,
        securityscan_name: c.opt_text()?,
    };
    let activity_text = c.text()?;
    let activity: Vec<String> =
        serde_json::from_str(&activity_text).map_err(|_| corrupt("activity", &activity_text))?;
    let cp_total = c.opt_int()?;
    let cp = [c.opt_int()?, c.opt_int()?, c.opt_int()?, c.opt_int()?];
    let cp_stats = c.stats()?;
    let copy_progress = cp_total.map(|total_pvs| CopyProgress {
        stats: cp_stats,
        total_pvs,
        pending_pvs: cp[0].unwrap_or(0),
        active_pvs: cp[1].unwrap_or(0),
        completed_pvs: cp[2].unwrap_or(0),
        failed_pvs: cp[3].unwrap_or(0),
    });
    let sp_total = c.opt_int()?;
    let sp = [
        c.opt_int()?,
        c.opt_int()?,
        c.opt_int()?,
        c.opt_int()?,
        c.opt_int()?,
    ];
    let snapshot_progress = sp_total.map(|total_pvs| SnapshotProgress {
        total_pvs,
        pending_pvs: sp[0].unwrap_or(0),
        active_pvs: sp[1].unwrap_or(0),
        completed_pvs: sp[2].unwrap_or(0),
        failed_pvs: sp[3].unwrap_or(0),
        skipped_pvs: sp[4].unwrap_or(0),
    });
    Ok(Job {
        id,
        fields,
        state,
        activity,
        copy_progress,
        snapshot_progress,
        created: c.int()?,
        updated: c.int()?,
        revision: c.int()? as u64,
        etag: c.text()?,
    })
}

/// Decodes a row selected as [`PVC_COLUMNS`].
pub fn pvc_from_row<R>(row: &R) -> Result<PvcProgress>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'a> i64: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
{
    let mut c = Columns { row, next: 0 };
    let id = ObjectId::from_stored(c.text()?);
    let job_id = ObjectId::from_stored(c.text()?);
    let namespace = c.text()?;
    let name = c.text()?;
    let state_text = c.text()?;
    let state = PvcState::parse(&state_text).ok_or_else(|| corrupt("pvc state", &state_text))?;
    let start_time = c.opt_int()?;
    let end_time = c.opt_int()?;
    let message = c.opt_text()?;
    let op_type = parse_enum("op_type", c.opt_text()?, OpType::parse)?;
    let snapshot_progress_percentage = c.opt_int()?.map(|p| p.clamp(0, 100) as i32);
    let stats = c.stats()?;
    Ok(PvcProgress {
        id,
        job_id,
        namespace,
        name,
        state,
        start_time,
        end_time,
        message,
        op_type,
        snapshot_progress_percentage,
        stats: (stats != TransferStats::default()).then_some(stats),
        created: c.int()?,
        updated: c.int()?,
        revision: c.int()? as u64,
        etag: c.text()?,
    })
}

/// A row of `SELECT id, name, role, hash, created, revoked FROM api_keys`.
pub type KeyRow = (String, String, String, String, i64, Option<i64>);

/// Decodes an API key row (shared by both backends).
pub fn api_key((id, name, role, hash, created, revoked): KeyRow) -> Result<crate::auth::ApiKey> {
    let role = crate::auth::Role::parse(&role).ok_or_else(|| corrupt("key role", &role))?;
    Ok(crate::auth::ApiKey {
        id,
        name,
        role,
        hash,
        created,
        revoked,
    })
}

/// Jobs by state from `SELECT state, count(*) FROM jobs GROUP BY state` rows; unknown states are
/// left out.
pub fn states(rows: Vec<(String, i64)>) -> Vec<(JobState, i64)> {
    rows.into_iter()
        .filter_map(|(state, n)| JobState::parse(&state).map(|s| (s, n)))
        .collect()
}
