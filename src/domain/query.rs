//! The query language shared by gRPC and REST: a Mongo-style JSON `where`, a `sort` in either
//! documented form, and opaque keyset page tokens. Text is parsed once into a typed [`Filter`] and
//! [`SortKey`]s over an allow-list of fields; the store turns them into parameterised SQL.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::domain::id::truncate;
use crate::domain::{Job, JobState, JobType, OpType, PvcProgress, PvcState};
use crate::error::{Error, Result};

/// Longest `where` accepted, in bytes.
pub const MAX_WHERE_BYTES: usize = 64 * 1024;
/// Deepest nesting of a `where` accepted.
pub const MAX_WHERE_DEPTH: usize = 32;
/// Page size when the client asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 25;

/// A scalar as compared and sorted in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Value::Null, |s| Value::Text(s.to_string()))
    }
}

/// How a field's values are written in a query and stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    /// Stored as microseconds; queried with RFC 1123 dates at second resolution.
    Time,
    /// An enum stored as its documented string.
    Enum(EnumKind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnumKind {
    JobState,
    JobType,
    PvcState,
    OpType,
}

impl EnumKind {
    /// The documented spelling of `s`, which may carry the proto prefix (`JOB_STATE_RUNNING`) or,
    /// for PVC states, underscores. Unknown strings come back as they are: they match nothing.
    fn canonical(self, s: &str) -> String {
        let prefix = match self {
            EnumKind::JobState => "JOB_STATE_",
            EnumKind::JobType => "JOB_TYPE_",
            EnumKind::PvcState => "PVC_STATE_",
            EnumKind::OpType => "OP_TYPE_",
        };
        let bare = s.strip_prefix(prefix).unwrap_or(s);
        let found = match self {
            EnumKind::JobState => JobState::parse(bare).map(JobState::as_str),
            EnumKind::JobType => JobType::parse(bare).map(JobType::as_str),
            EnumKind::PvcState => PvcState::parse(&bare.replace('_', "-")).map(PvcState::as_str),
            EnumKind::OpType => OpType::parse(bare).map(OpType::as_str),
        };
        found.map_or_else(|| s.to_string(), str::to_string)
    }
}

/// One queryable field of a resource.
pub struct Field<T> {
    /// The documented name, as in REST JSON (`_id`, `kube_copy_progress.failed_pvs`).
    pub name: &'static str,
    pub column: &'static str,
    pub kind: Kind,
    pub nullable: bool,
    /// The field's value in a record, for page tokens.
    pub get: fn(&T) -> Value,
}

impl<T> fmt::Debug for Field<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A resource that can be listed and watched with the query language.
pub trait Resource: Sized + 'static {
    const NAME: &'static str;
    fn fields() -> &'static [Field<Self>];

    /// Finds a field by its documented name or its proto alias (`id`, `created`, ...).
    fn field(name: &str) -> Option<&'static Field<Self>> {
        let name = match name {
            "id" => "_id",
            "created" => "_created",
            "updated" => "_updated",
            "etag" => "_etag",
            other => other,
        };
        Self::fields().iter().find(|f| f.name == name)
    }

    fn id_field() -> &'static Field<Self> {
        &Self::fields()[0]
    }
}

macro_rules! field {
    ($name:literal, $column:literal, $kind:expr, $nullable:literal, $get:expr) => {
        Field {
            name: $name,
            column: $column,
            kind: $kind,
            nullable: $nullable,
            get: $get,
        }
    };
}

fn text(v: &Option<String>) -> Value {
    Value::from(v.as_deref())
}

fn copy(j: &Job, f: fn(&crate::domain::CopyProgress) -> i64) -> Value {
    Value::from(j.copy_progress.as_ref().map(f))
}

fn copy_stat(j: &Job, f: fn(&crate::domain::TransferStats) -> Option<i64>) -> Value {
    Value::from(j.copy_progress.as_ref().and_then(|c| f(&c.stats)))
}

fn snap(j: &Job, f: fn(&crate::domain::SnapshotProgress) -> i64) -> Value {
    Value::from(j.snapshot_progress.as_ref().map(f))
}

fn pvc_stat(p: &PvcProgress, f: fn(&crate::domain::TransferStats) -> Option<i64>) -> Value {
    Value::from(p.stats.as_ref().and_then(f))
}

static JOB_FIELDS: [Field<Job>; 36] = [
    field!("_id", "id", Kind::Text, false, |j| Value::Text(
        j.id.to_string()
    )),
    field!("name", "name", Kind::Text, true, |j| text(&j.fields.name)),
    field!("message", "message", Kind::Text, true, |j| text(
        &j.fields.message
    )),
    field!("type", "type", Kind::Enum(EnumKind::JobType), true, |j| {
        Value::from(j.fields.job_type.map(JobType::as_str))
    }),
    field!(
        "state",
        "state",
        Kind::Enum(EnumKind::JobState),
        false,
        |j| { Value::Text(j.state.as_str().to_string()) }
    ),
    field!(
        "start_time",
        "start_time",
        Kind::Int,
        true,
        |j| Value::from(j.fields.start_time)
    ),
    field!("end_time", "end_time", Kind::Int, true, |j| Value::from(
        j.fields.end_time
    )),
    field!(
        "num_total_resources",
        "num_total_resources",
        Kind::Int,
        true,
        |j| { Value::from(j.fields.num_total_resources) }
    ),
    field!(
        "num_backup_resources",
        "num_backup_resources",
        Kind::Int,
        true,
        |j| { Value::from(j.fields.num_backup_resources) }
    ),
    field!("cluster", "cluster", Kind::Text, true, |j| text(
        &j.fields.cluster
    )),
    field!("cluster_name", "cluster_name", Kind::Text, true, |j| text(
        &j.fields.cluster_name
    )),
    field!("backupdef", "backupdef", Kind::Text, true, |j| text(
        &j.fields.backupdef
    )),
    field!("backupdef_name", "backupdef_name", Kind::Text, true, |j| {
        text(&j.fields.backupdef_name)
    }),
    field!(
        "restoredef_name",
        "restoredef_name",
        Kind::Text,
        true,
        |j| { text(&j.fields.restoredef_name) }
    ),
    field!(
        "securityscan_name",
        "securityscan_name",
        Kind::Text,
        true,
        |j| { text(&j.fields.securityscan_name) }
    ),
    field!("_created", "created", Kind::Time, false, |j| Value::Int(
        j.created
    )),
    field!("_updated", "updated", Kind::Time, false, |j| Value::Int(
        j.updated
    )),
    field!("_etag", "etag", Kind::Text, false, |j| Value::Text(
        j.etag.clone()
    )),
    field!(
        "kube_copy_progress.total_pvs",
        "cp_total_pvs",
        Kind::Int,
        true,
        |j| copy(j, |c| c.total_pvs)
    ),
    field!(
        "kube_copy_progress.pending_pvs",
        "cp_pending_pvs",
        Kind::Int,
        true,
        |j| copy(j, |c| c.pending_pvs)
    ),
    field!(
        "kube_copy_progress.active_pvs",
        "cp_active_pvs",
        Kind::Int,
        true,
        |j| copy(j, |c| c.active_pvs)
    ),
    field!(
        "kube_copy_progress.completed_pvs",
        "cp_completed_pvs",
        Kind::Int,
        true,
        |j| { copy(j, |c| c.completed_pvs) }
    ),
    field!(
        "kube_copy_progress.failed_pvs",
        "cp_failed_pvs",
        Kind::Int,
        true,
        |j| copy(j, |c| c.failed_pvs)
    ),
    field!(
        "kube_copy_progress.stats.estimated_size",
        "cp_estimated_size",
        Kind::Int,
        true,
        |j| { copy_stat(j, |s| s.estimated_size) }
    ),
    field!(
        "kube_copy_progress.stats.estimated_number_of_files",
        "cp_estimated_number_of_files",
        Kind::Int,
        true,
        |j| { copy_stat(j, |s| s.estimated_number_of_files) }
    ),
    field!(
        "kube_copy_progress.stats.io_size",
        "cp_io_size",
        Kind::Int,
        true,
        |j| copy_stat(j, |s| s.io_size)
    ),
    field!(
        "kube_copy_progress.stats.io_number_of_files",
        "cp_io_number_of_files",
        Kind::Int,
        true,
        |j| { copy_stat(j, |s| s.io_number_of_files) }
    ),
    field!(
        "kube_copy_progress.stats.transferred_size",
        "cp_transferred_size",
        Kind::Int,
        true,
        |j| { copy_stat(j, |s| s.transferred_size) }
    ),
    field!(
        "kube_copy_progress.stats.transferred_number_of_files",
        "cp_transferred_number_of_files",
        Kind::Int,
        true,
        |j| { copy_stat(j, |s| s.transferred_number_of_files) }
    ),
    field!(
        "kube_snapshot_progress.total_pvs",
        "sp_total_pvs",
        Kind::Int,
        true,
        |j| snap(j, |s| s.total_pvs)
    ),
    field!(
        "kube_snapshot_progress.pending_pvs",
        "sp_pending_pvs",
        Kind::Int,
        true,
        |j| snap(j, |s| s.pending_pvs)
    ),
    field!(
        "kube_snapshot_progress.active_pvs",
        "sp_active_pvs",
        Kind::Int,
        true,
        |j| snap(j, |s| s.active_pvs)
    ),
    field!(
        "kube_snapshot_progress.completed_pvs",
        "sp_completed_pvs",
        Kind::Int,
        true,
        |j| { snap(j, |s| s.completed_pvs) }
    ),
    field!(
        "kube_snapshot_progress.failed_pvs",
        "sp_failed_pvs",
        Kind::Int,
        true,
        |j| snap(j, |s| s.failed_pvs)
    ),
    field!(
        "kube_snapshot_progress.skipped_pvs",
        "sp_skipped_pvs",
        Kind::Int,
        true,
        |j| snap(j, |s| s.skipped_pvs)
    ),
    // Not a REST field, but the revision is useful to gRPC clients (changes since N).
    field!("revision", "revision", Kind::Int, false, |j| Value::Int(
        j.revision as i64
    )),
];

static PVC_FIELDS: [Field<PvcProgress>; 19] = [
    field!("_id", "id", Kind::Text, false, |p| Value::Text(
        p.id.to_string()
    )),
    field!("job_id", "job_id", Kind::Text, false, |p| Value::Text(
        p.job_id.to_string()
    )),
    field!(
        "namespace",
        "namespace",
        Kind::Text,
        false,
        |p| Value::Text(p.namespace.clone())
    ),
    field!("name", "name", Kind::Text, false, |p| Value::Text(
        p.name.clone()
    )),
    field!(
        "state",
        "state",
        Kind::Enum(EnumKind::PvcState),
        false,
        |p| { Value::Text(p.state.as_str().to_string()) }
    ),
    field!(
        "start_time",
        "start_time",
        Kind::Int,
        true,
        |p| Value::from(p.start_time)
    ),
    field!("end_time", "end_time", Kind::Int, true, |p| Value::from(
        p.end_time
    )),
    field!("message", "message", Kind::Text, true, |p| text(&p.message)),
    field!(
        "op_type",
        "op_type",
        Kind::Enum(EnumKind::OpType),
        true,
        |p| { Value::from(p.op_type.map(OpType::as_str)) }
    ),
    field!(
        "snapshot_progress_percentage",
        "snapshot_progress_percentage",
        Kind::Int,
        true,
        |p| { Value::from(p.snapshot_progress_percentage.map(i64::from)) }
    ),
    field!(
        "stats.estimated_size",
        "estimated_size",
        Kind::Int,
        true,
        |p| pvc_stat(p, |s| s.estimated_size)
    ),
    field!(
        "stats.estimated_number_of_files",
        "estimated_number_of_files",
        Kind::Int,
        true,
        |p| { pvc_stat(p, |s| s.estimated_number_of_files) }
    ),
    field!("stats.io_size", "io_size", Kind::Int, true, |p| pvc_stat(
        p,
        |s| s.io_size
    )),
    field!(
        "stats.io_number_of_files",
        "io_number_of_files",
        Kind::Int,
        true,
        |p| { pvc_stat(p, |s| s.io_number_of_files) }
    ),
    field!(
        "stats.transferred_size",
        "transferred_size",
        Kind::Int,
        true,
        |p| pvc_stat(p, |s| s.transferred_size)
    ),
    field!(
        "stats.transferred_number_of_files",
        "transferred_number_of_files",
        Kind::Int,
        true,
        |p| { pvc_stat(p, |s| s.transferred_number_of_files) }
    ),
    field!("_created", "created", Kind::Time, false, |p| Value::Int(
        p.created
    )),
    field!("_updated", "updated", Kind::Time, false, |p| Value::Int(
        p.updated
    )),
    field!("_etag", "etag", Kind::Text, false, |p| Value::Text(
        p.etag.clone()
    )),
];

impl Resource for Job {
    const NAME: &'static str = "jobs";
    fn fields() -> &'static [Field<Self>] {
        &JOB_FIELDS
    }
}

impl Resource for PvcProgress {
    const NAME: &'static str = "kubepvcprogress";
    fn fields() -> &'static [Field<Self>] {
        &PVC_FIELDS
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A parsed `where`. Columns come from the allow-list; values are bound as parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// All of them; an empty list matches everything.
    And(Vec<Filter>),
    /// Any of them; an empty list matches nothing.
    Or(Vec<Filter>),
    /// Matches every record the inner filter does not match, including those missing the field.
    Not(Box<Filter>),
    /// `Null` only with `Eq` (missing) and `Ne` (present).
    Compare {
        column: &'static str,
        op: CmpOp,
        value: Value,
    },
    /// `$in` / `$nin`; a `Null` in `values` matches a missing field.
    In {
        column: &'static str,
        values: Vec<Value>,
        negated: bool,
    },
    Exists {
        column: &'static str,
        exists: bool,
    },
    /// A pattern for the linear-time `regex` engine.
    Regex {
        column: &'static str,
        pattern: Pattern,
    },
}

/// A compiled regular expression, compared and shown by its text.
#[derive(Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Filter {
    pub const ALL: Filter = Filter::And(Vec::new());

    fn and(mut parts: Vec<Filter>) -> Filter {
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        }
    }

    /// Whether `record` matches, exactly as the store's SQL decides (watchers filter in memory).
    pub fn matches<T: Resource>(&self, record: &T) -> bool {
        self.eval(record) == Some(true)
    }

    /// SQL's three-valued logic: `None` is NULL (a comparison with a missing field).
    fn eval<T: Resource>(&self, record: &T) -> Option<bool> {
        let value = |column: &str| {
            T::fields()
                .iter()
                .find(|f| f.column == column)
                .map_or(Value::Null, |f| (f.get)(record))
        };
        match self {
            Filter::And(parts) => {
                let mut result = Some(true);
                for part in parts {
                    match part.eval(record) {
                        Some(false) => return Some(false),
                        None => result = None,
                        Some(true) => {}
                    }
                }
                result
            }
            Filter::Or(parts) => {
                let mut result = Some(false);
                for part in parts {
                    match part.eval(record) {
                        Some(true) => return Some(true),
                        None => result = None,
                        Some(false) => {}
                    }
                }
                result
            }
            Filter::Not(inner) => Some(!inner.eval(record).unwrap_or(false)),
            Filter::Compare {
                column,
                op,
                value: wanted,
            } => {
                let actual = value(column);
                match (op, wanted, &actual) {
                    (CmpOp::Eq, Value::Null, a) => Some(*a == Value::Null),
                    (CmpOp::Ne, Value::Null, a) => Some(*a != Value::Null),
                    (CmpOp::Ne, _, Value::Null) => Some(true),
                    (_, _, Value::Null) => None,
                    (op, w, a) => {
                        let ordering = a.cmp_sql(w);
                        Some(match op {
                            CmpOp::Eq => ordering.is_eq(),
                            CmpOp::Ne => ordering.is_ne(),
                            CmpOp::Gt => ordering.is_gt(),
                            CmpOp::Gte => ordering.is_ge(),
                            CmpOp::Lt => ordering.is_lt(),
                            CmpOp::Lte => ordering.is_le(),
                        })
                    }
                }
            }
            Filter::In {
                column,
                values,
                negated,
            } => {
                let actual = value(column);
                let has_null = values.contains(&Value::Null);
                if actual == Value::Null {
                    let any_present = values.iter().any(|v| *v != Value::Null);
                    return match (negated, has_null) {
                        (false, false) if any_present => None,
                        (false, false) => Some(false),
                        (false, true) | (true, false) => Some(true),
                        (true, true) => Some(false),
                    };
                }
                let found = values
                    .iter()
                    .any(|v| *v != Value::Null && actual.cmp_sql(v).is_eq());
                Some(found != *negated)
            }
            Filter::Exists { column, exists } => Some((value(column) != Value::Null) == *exists),
            Filter::Regex { column, pattern } => match value(column) {
                Value::Text(text) => Some(pattern.0.is_match(&text)),
                Value::Int(i) => Some(pattern.0.is_match(&i.to_string())),
                Value::Null => None,
            },
        }
    }
}

impl Filter {
    /// This filter as a `where` document that [`parse_where`] reads back to an equal filter, for
    /// every filter it produced: one operator per object, dates as RFC 1123 strings (date
    /// comparisons are stored as microsecond bounds on whole seconds), enums in their documented
    /// spelling, regex flags inline (`(?i)...`).
    pub fn to_where<T: Resource>(&self) -> Json {
        let name = |column: &str| {
            T::fields()
                .iter()
                .find(|f| f.column == column)
                .map_or_else(|| column.to_string(), |f| f.name.to_string())
        };
        let kind = |column: &str| {
            T::fields()
                .iter()
                .find(|f| f.column == column)
                .map(|f| f.kind)
        };
        let one =
            |key: String, value: Json| Json::Object(serde_json::Map::from_iter([(key, value)]));
        let list =
            |parts: &[Filter]| Json::Array(parts.iter().map(Filter::to_where::<T>).collect());
        match self {
            Filter::And(parts) if parts.is_empty() => Json::Object(serde_json::Map::new()),
            Filter::And(parts) => one("$and".into(), list(parts)),
            // `$or` needs a non-empty list; an empty `$in` on a date is the one `where` that
            // parses to an empty disjunction.
            Filter::Or(parts) if parts.is_empty() => {
                match T::fields().iter().find(|f| f.kind == Kind::Time) {
                    Some(date) => one(date.name.into(), one("$in".into(), Json::Array(Vec::new()))),
                    None => one("$or".into(), Json::Array(Vec::new())),
                }
            }
            Filter::Or(parts) => one("$or".into(), list(parts)),
            Filter::Not(inner) => one("$not".into(), inner.to_where::<T>()),
            Filter::Compare { column, op, value } => {
                let op = match op {
                    CmpOp::Eq => "$eq",
                    CmpOp::Ne => "$ne",
                    CmpOp::Gt => "$gt",
                    CmpOp::Gte => "$gte",
                    CmpOp::Lt => "$lt",
                    CmpOp::Lte => "$lte",
                };
                let value = value.to_json(kind(column));
                one(name(column), one(op.into(), value))
            }
            Filter::In {
                column,
                values,
                negated,
            } => {
                let op = if *negated { "$nin" } else { "$in" };
                let values = values.iter().map(|v| v.to_json(kind(column))).collect();
                one(name(column), one(op.into(), Json::Array(values)))
            }
            Filter::Exists { column, exists } => {
                one(name(column), one("$exists".into(), Json::Bool(*exists)))
            }
            Filter::Regex { column, pattern } => one(
                name(column),
                one("$regex".into(), Json::String(pattern.as_str().to_string())),
            ),
        }
    }
}

impl Value {
    /// The value as written in a `where`: a date field's microseconds as an RFC 1123 string of
    /// their whole second.
    fn to_json(&self, kind: Option<Kind>) -> Json {
        match (self, kind) {
            (Value::Null, _) => Json::Null,
            (Value::Int(micros), Some(Kind::Time)) => {
                let secs = micros.div_euclid(1_000_000);
                match u64::try_from(secs) {
                    Ok(secs) => Json::String(httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
                    )),
                    Err(_) => Json::from(secs),
                }
            }
            (Value::Int(i), _) => Json::from(*i),
            (Value::Text(s), _) => Json::String(s.clone()),
        }
    }

    /// SQLite's order of the values of one column: integers before text, text bytewise.
    fn cmp_sql(&self, other: &Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            (Value::Int(_), Value::Text(_)) => Ordering::Less,
            (Value::Text(_), Value::Int(_)) => Ordering::Greater,
        }
    }
}

/// Parses a `where` for resource `T`. Empty text matches everything.
pub fn parse_where<T: Resource>(text: &str) -> Result<Filter> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Filter::ALL);
    }
    if text.len() > MAX_WHERE_BYTES {
        return Err(Error::invalid(format!(
            "where is {} bytes long; the limit is {MAX_WHERE_BYTES}",
            text.len()
        )));
    }
    let json: Json = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("where is not valid JSON: {e}")))?;
    match &json {
        Json::Object(doc) => parse_doc::<T>(doc, "", 1),
        _ => Err(Error::invalid(
            "where must be a JSON object, like {\"state\":\"RUNNING\"}",
        )),
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "where".to_string()
    } else {
        format!("where at {path}")
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check_depth(path: &str, depth: usize) -> Result<()> {
    if depth > MAX_WHERE_DEPTH {
        return Err(Error::invalid(format!(
            "{}: nested deeper than {MAX_WHERE_DEPTH} levels",
            at(path)
        )));
    }
    Ok(())
}

fn parse_doc<T: Resource>(
    doc: &serde_json::Map<String, Json>,
    path: &str,
    depth: usize,
) -> Result<Filter> {
    check_depth(path, depth)?;
    let mut parts = Vec::with_capacity(doc.len());
    for (key, value) in doc {
        let here = join(path, key);
        match key.as_str() {
            "$and" | "$or" | "$nor" => {
                let list = value.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
                    Error::invalid(format!(
                        "{}: {key} takes a non-empty list of queries",
                        at(&here)
                    ))
                })?;
                let mut subs = Vec::with_capacity(list.len());
                for (i, item) in list.iter().enumerate() {
                    let item_path = format!("{here}[{i}]");
                    let doc = item.as_object().ok_or_else(|| {
                        Error::invalid(format!("{}: expected a query object", at(&item_path)))
                    })?;
                    subs.push(parse_doc::<T>(doc, &item_path, depth + 1)?);
                }
                parts.push(match key.as_str() {
                    "$and" => Filter::And(subs),
                    "$or" => Filter::Or(subs),
                    _ => Filter::Not(Box::new(Filter::Or(subs))),
                });
            }
            "$not" => {
                let doc = value.as_object().ok_or_else(|| {
                    Error::invalid(format!("{}: $not takes a query object", at(&here)))
                })?;
                parts.push(Filter::Not(Box::new(parse_doc::<T>(
                    doc,
                    &here,
                    depth + 1,
                )?)));
            }
            "$where" => {
                return Err(Error::invalid(format!(
                    "{}: $where (server-side JavaScript) is not supported",
                    at(&here)
                )));
            }
            op if op.starts_with('$') => {
                return Err(Error::invalid(format!(
                    "{}: unknown operator {op}; at the top level use $and, $or, $nor or $not",
                    at(&here)
                )));
            }
            name => {
                let field = T::field(name).ok_or_else(|| unknown_field::<T>(name, &here))?;
                parts.push(parse_field(field, value, &here, depth + 1)?);
            }
        }
    }
    Ok(Filter::and(parts))
}

fn unknown_field<T: Resource>(name: &str, path: &str) -> Error {
    let names: Vec<&str> = T::fields().iter().map(|f| f.name).collect();
    Error::invalid(format!(
        "{}: unknown field {:?} of {}; known fields: {}",
        at(path),
        truncate(name, 64),
        T::NAME,
        names.join(", ")
    ))
}

fn parse_field<T>(
    field: &'static Field<T>,
    value: &Json,
    path: &str,
    depth: usize,
) -> Result<Filter> {
    check_depth(path, depth)?;
    let Json::Object(ops) = value else {
        return compare(field, CmpOp::Eq, value, path);
    };
    if ops.is_empty() || !ops.keys().all(|k| k.starts_with('$')) {
        return Err(Error::invalid(format!(
            "{}: expected a value or an object of operators such as {{\"$gt\": 5}}; sub-documents are matched with dotted paths such as kube_copy_progress.failed_pvs",
            at(path)
        )));
    }
    let mut parts = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let here = join(path, op);
        let filter = match op.as_str() {
            "$eq" => compare(field, CmpOp::Eq, arg, &here)?,
            "$ne" => compare(field, CmpOp::Ne, arg, &here)?,
            "$gt" => compare(field, CmpOp::Gt, arg, &here)?,
            "$gte" => compare(field, CmpOp::Gte, arg, &here)?,
            "$lt" => compare(field, CmpOp::Lt, arg, &here)?,
            "$lte" => compare(field, CmpOp::Lte, arg, &here)?,
            "$in" | "$nin" => {
                let list = arg.as_array().ok_or_else(|| {
                    Error::invalid(format!("{}: {op} takes a list of values", at(&here)))
                })?;
                let negated = op == "$nin";
                if field.kind == Kind::Time {
                    let mut ranges = Vec::with_capacity(list.len());
                    for item in list {
                        ranges.push(compare(field, CmpOp::Eq, item, &here)?);
                    }
                    let any = Filter::Or(ranges);
                    if negated {
                        Filter::Not(Box::new(any))
                    } else {
                        any
                    }
                } else {
                    let mut values = Vec::with_capacity(list.len());
                    for item in list {
                        values.push(scalar(field, item, &here)?);
                    }
                    Filter::In {
                        column: field.column,
                        values,
                        negated,
                    }
                }
            }
            "$exists" => {
                let exists = match arg {
                    Json::Bool(b) => *b,
                    Json::Number(n) if n.as_i64() == Some(0) => false,
                    Json::Number(n) if n.as_i64() == Some(1) => true,
                    _ => {
                        return Err(Error::invalid(format!(
                            "{}: $exists takes true or false",
                            at(&here)
                        )));
                    }
                };
                Filter::Exists {
                    column: field.column,
                    exists,
                }
            }
            "$not" => {
                let inner = match arg {
                    Json::Object(_) => parse_field(field, arg, &here, depth + 1)?,
                    _ => {
                        return Err(Error::invalid(format!(
                            "{}: $not takes an object of operators, like {{\"$not\": {{\"$gt\": 5}}}}",
                            at(&here)
                        )));
                    }
                };
                Filter::Not(Box::new(inner))
            }
            "$regex" => regex(field, arg, ops.get("$options"), &here)?,
            "$options" if ops.contains_key("$regex") => continue,
            "$options" => {
                return Err(Error::invalid(format!(
                    "{}: $options needs a $regex beside it",
                    at(&here)
                )));
            }
            "$where" => {
                return Err(Error::invalid(format!(
                    "{}: $where (server-side JavaScript) is not supported",
                    at(&here)
                )));
            }
            other => {
                return Err(Error::invalid(format!(
                    "{}: unknown operator {}; use $eq $ne $gt $gte $lt $lte $in $nin $exists $not $regex",
                    at(&here),
                    truncate(other, 64)
                )));
            }
        };
        parts.push(filter);
    }
    Ok(Filter::and(parts))
}

fn regex<T>(
    field: &'static Field<T>,
    pattern: &Json,
    options: Option<&Json>,
    path: &str,
) -> Result<Filter> {
    if !matches!(field.kind, Kind::Text | Kind::Enum(_)) {
        return Err(Error::invalid(format!(
            "{}: $regex works on text fields; {} is not one",
            at(path),
            field.name
        )));
    }
    let Json::String(pattern) = pattern else {
        return Err(Error::invalid(format!(
            "{}: $regex takes a string",
            at(path)
        )));
    };
    if pattern.contains('\0') {
        return Err(Error::invalid(format!(
            "{}: a pattern cannot contain a NUL character; write \\x00",
            at(path)
        )));
    }
    let flags = match options {
        None => String::new(),
        Some(Json::String(o)) if o.chars().all(|c| "imsx".contains(c)) => o.clone(),
        Some(_) => {
            return Err(Error::invalid(format!(
                "{}: $options takes a string of the flags i, m, s and x",
                at(path)
            )));
        }
    };
    let full = if flags.is_empty() {
        pattern.clone()
    } else {
        format!("(?{flags}){pattern}")
    };
    let compiled = regex::RegexBuilder::new(&full)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::invalid(format!("{}: bad regular expression: {e}", at(path))))?;
    Ok(Filter::Regex {
        column: field.column,
        pattern: Pattern(compiled),
    })
}

/// One comparison. Dates compare at second resolution, as the REST JSON shows them.
fn compare<T>(field: &'static Field<T>, op: CmpOp, arg: &Json, path: &str) -> Result<Filter> {
    let value = scalar(field, arg, path)?;
    if value == Value::Null && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
        return Err(Error::invalid(format!(
            "{}: cannot order against null",
            at(path)
        )));
    }
    let column = field.column;
    let cmp = |op, micros: i64| Filter::Compare {
        column,
        op,
        value: Value::Int(micros),
    };
    Ok(match (field.kind, &value) {
        (Kind::Time, Value::Int(secs)) => {
            let start = secs.saturating_mul(1_000_000);
            let end = secs.saturating_add(1).saturating_mul(1_000_000);
            let within = Filter::And(vec![cmp(CmpOp::Gte, start), cmp(CmpOp::Lt, end)]);
            match op {
                CmpOp::Eq => within,
                CmpOp::Ne => Filter::Not(Box::new(within)),
                CmpOp::Gt => cmp(CmpOp::Gte, end),
                CmpOp::Gte => cmp(CmpOp::Gte, start),
                CmpOp::Lt => cmp(CmpOp::Lt, start),
                CmpOp::Lte => cmp(CmpOp::Lt, end),
            }
        }
        _ => Filter::Compare { column, op, value },
    })
}

/// Checks a JSON value against the field's type.
fn scalar<T>(field: &'static Field<T>, arg: &Json, path: &str) -> Result<Value> {
    let wrong = |expected: &str| {
        let shown = arg.to_string();
        Error::invalid(format!(
            "{}: {} expects {expected}, got {}",
            at(path),
            field.name,
            truncate(&shown, 64)
        ))
    };
    match (field.kind, arg) {
        (_, Json::Null) => Ok(Value::Null),
        (Kind::Int, Json::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Value::Int(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Value::Int(f as i64)),
            _ => Err(wrong("an integer")),
        },
        (Kind::Int, _) => Err(wrong("an integer")),
        (Kind::Text | Kind::Enum(_), Json::String(s)) if s.contains('\0') => {
            Err(Error::invalid(format!(
                "{}: text values cannot contain a NUL character (\\u0000)",
                at(path)
            )))
        }
        (Kind::Text, Json::String(s)) => Ok(Value::Text(s.clone())),
        (Kind::Text, _) => Err(wrong("a string")),
        (Kind::Enum(kind), Json::String(s)) => Ok(Value::Text(kind.canonical(s))),
        (Kind::Enum(_), _) => Err(wrong("a string")),
        (Kind::Time, Json::String(s)) => httpdate::parse_http_date(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| Value::Int(d.as_secs() as i64))
            .ok_or_else(|| wrong("an RFC 1123 date such as \"Mon, 24 Aug 2020 01:59:18 GMT\"")),
        (Kind::Time, _) => Err(wrong("an RFC 1123 date string")),
    }
}

/// One key of an order.
#[derive(Debug)]
pub struct SortKey<T: 'static> {
    pub field: &'static Field<T>,
    pub descending: bool,
}

impl<T> Clone for SortKey<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SortKey<T> {}

/// Parses `sort`: `-_created,name` or `[("_created", -1), ("name", 1)]`. Empty: no keys.
pub fn parse_sort<T: Resource>(text: &str) -> Result<Vec<SortKey<T>>> {
    let text = text.trim();
    let pairs = if text.is_empty() {
        Vec::new()
    } else if text.starts_with('[') {
        parse_sort_literal(text)?
    } else {
        let mut pairs = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let (name, descending) = match item.strip_prefix('-') {
                Some(rest) => (rest.trim(), true),
                None => (item.strip_prefix('+').unwrap_or(item).trim(), false),
            };
            if name.is_empty() {
                return Err(Error::invalid(format!(
                    "sort {text:?} has an empty field name"
                )));
            }
            pairs.push((name.to_string(), descending));
        }
        pairs
    };
    let mut keys: Vec<SortKey<T>> = Vec::with_capacity(pairs.len());
    for (name, descending) in pairs {
        let field = T::field(&name).ok_or_else(|| {
            let names: Vec<&str> = T::fields().iter().map(|f| f.name).collect();
            Error::invalid(format!(
                "sort: unknown field {:?} of {}; known fields: {}",
                truncate(&name, 64),
                T::NAME,
                names.join(", ")
            ))
        })?;
        if keys.iter().any(|k| k.field.column == field.column) {
            return Err(Error::invalid(format!("sort names {:?} twice", field.name)));
        }
        keys.push(SortKey { field, descending });
    }
    Ok(keys)
}

/// The python-eve literal form: `[("_created", -1), ("name", 1)]`.
fn parse_sort_literal(text: &str) -> Result<Vec<(String, bool)>> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "sort {:?} is malformed ({why}); expected [(\"field\", -1), (\"other\", 1)] or -field,other",
            truncate(text, 64)
        ))
    };
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| bad("missing closing ]"))?;
    let mut pairs = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let open = rest
            .strip_prefix('(')
            .or_else(|| rest.strip_prefix('['))
            .ok_or_else(|| bad("expected ("))?;
        let close = open.find([')', ']']).ok_or_else(|| bad("missing )"))?;
        let (tuple, after) = (&open[..close], &open[close + 1..]);
        let (name, dir) = tuple
            .rsplit_once(',')
            .ok_or_else(|| bad("expected (\"field\", direction)"))?;
        let name = name.trim();
        let unquoted = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .or_else(|| name.strip_prefix('\'').and_then(|n| n.strip_suffix('\'')))
            .ok_or_else(|| bad("field names are quoted"))?;
        let descending = match dir.trim() {
            "-1" => true,
            "1" | "+1" => false,
            _ => return Err(bad("the direction is 1 or -1")),
        };
        pairs.push((unquoted.to_string(), descending));
        rest = after.trim_start();
        rest = match rest.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if rest.is_empty() => rest,
            None => return Err(bad("expected , between pairs")),
        };
    }
    if pairs.is_empty() {
        return Err(bad("no fields"));
    }
    Ok(pairs)
}

/// Which page of a list to read.
#[derive(Clone, Copy, Debug)]
pub enum PageAt<'a> {
    /// The page after the one that returned this `next_page_token`; "" is the first page.
    /// Keyset paging: the cost of a page does not grow with its depth.
    Token(&'a str),
    /// Page `n`, 1-based, as the REST API numbers pages: the records after `(n-1) * page_size`.
    Number(u64),
}

/// A list request, parsed and checked: what to match, in which order, which page.
#[derive(Debug)]
pub struct ListQuery<T: 'static> {
    pub filter: Filter,
    /// The order, always ending with `_id`, so that it is total.
    pub order: Vec<SortKey<T>>,
    pub page_size: usize,
    /// Values of `order` of the last record of the previous page.
    pub after: Option<Vec<Value>>,
    /// Records to skip before the page (page-number paging); 0 with keyset paging.
    pub offset: u64,
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct PageToken {
    /// Fingerprint of the query the token belongs to.
    q: String,
    /// The sort values of the last record returned.
    k: Vec<Value>,
}

impl<T: Resource> ListQuery<T> {
    /// Parses a list request. `scope` narrows the query further (e.g. to one job's records) and
    /// is part of what a page token is bound to.
    pub fn parse(
        where_text: &str,
        sort_text: &str,
        page_size: i32,
        at: PageAt<'_>,
        max_page_size: usize,
        scope: Option<Filter>,
    ) -> Result<Self> {
        let mut filter = parse_where::<T>(where_text)?;
        if let Some(scope) = scope {
            filter = Filter::And(vec![scope, filter]);
        }
        let mut order = parse_sort::<T>(sort_text)?;
        let id = T::id_field();
        if !order.iter().any(|k| std::ptr::eq(k.field, id)) {
            // The tie-break follows the last key's direction, so that a one-direction order can
            // be read with one index range.
            let descending = order.last().is_some_and(|k| k.descending);
            order.push(SortKey {
                field: id,
                descending,
            });
        }
        let page_size = match page_size {
            n if n < 0 => {
                return Err(Error::invalid(format!(
                    "page_size is {n}: it cannot be negative"
                )));
            }
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(max_page_size),
        };
        let mut hasher = sha1_smol::Sha1::new();
        let keys: Vec<String> = order
            .iter()
            .map(|k| format!("{}{}", if k.descending { "-" } else { "" }, k.field.name))
            .collect();
        hasher.update(format!("{}|{:?}|{}", T::NAME, filter, keys.join(",")).as_bytes());
        let fingerprint = hasher.digest().to_string()[..16].to_string();
        let mut query = ListQuery {
            filter,
            order,
            page_size,
            after: None,
            offset: 0,
            fingerprint,
        };
        match at {
            PageAt::Token("") => {}
            PageAt::Token(token) => query.after = Some(query.decode_token(token)?),
            PageAt::Number(0) => return Err(Error::invalid("page numbers start at 1")),
            PageAt::Number(n) => query.offset = (n - 1).saturating_mul(query.page_size as u64),
        }
        Ok(query)
    }

    fn decode_token(&self, token: &str) -> Result<Vec<Value>> {
        let malformed =
            || Error::invalid("page_token is malformed: pass next_page_token as it was returned");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
        let token: PageToken = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        if token.q != self.fingerprint {
            return Err(Error::invalid(
                "page_token belongs to another query: where and sort must stay the same while paging",
            ));
        }
        if token.k.len() != self.order.len() {
            return Err(malformed());
        }
        for (key, value) in self.order.iter().zip(&token.k) {
            let fits = match (key.field.kind, value) {
                (_, Value::Null) => key.field.nullable,
                (Kind::Int | Kind::Time, Value::Int(_)) => true,
                (Kind::Text | Kind::Enum(_), Value::Text(_)) => true,
                _ => false,
            };
            if !fits {
                return Err(malformed());
            }
        }
        Ok(token.k)
    }

    /// The token of the page after `last`.
    pub fn token_after(&self, last: &T) -> String {
        let token = PageToken {
            q: self.fingerprint.clone(),
            k: self.order.iter().map(|k| (k.field.get)(last)).collect(),
        };
        // Serialising plain strings and numbers cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_compare_at_second_resolution() {
        let f = parse_where::<Job>(r#"{"_created":{"$gt":"Mon, 24 Aug 2020 01:59:18 GMT"}}"#)
            .expect("valid");
        assert_eq!(
            f,
            Filter::Compare {
                column: "created",
                op: CmpOp::Gte,
                value: Value::Int(1_598_234_359_000_000)
            }
        );
    }

    #[test]
    fn enum_strings_are_normalised_and_unknown_ones_kept() {
        let f =
            parse_where::<PvcProgress>(r#"{"state":{"$in":["SKIPPED_MISSING_ACCOUNT","NOPE"]}}"#)
                .expect("valid");
        assert_eq!(
            f,
            Filter::In {
                column: "state",
                values: vec![
                    Value::Text("SKIPPED-MISSING-ACCOUNT".into()),
                    Value::Text("NOPE".into())
                ],
                negated: false
            }
        );
    }

    #[test]
    fn bad_where_says_where_it_is_wrong() {
        let cases = [
            (r#"{"start_time":"x"}"#, "start_time expects an integer"),
            (r#"{"nope":1}"#, "unknown field \"nope\""),
            (r#"{"name":{"$foo":1}}"#, "unknown operator $foo"),
            (r#"{"$where":"1"}"#, "$where"),
            (
                r#"{"$or":[{"name":{"$regex":"("}}]}"#,
                "where at $or[0].name.$regex: bad regular expression",
            ),
            ("{", "not valid JSON"),
            ("[]", "must be a JSON object"),
        ];
        for (input, expected) in cases {
            let err = parse_where::<Job>(input).expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
        let deep = format!("{}{{}}{}", r#"{"$and":["#.repeat(40), "]}".repeat(40));
        let err = parse_where::<Job>(&deep).expect_err("deep").to_string();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn both_sort_forms_parse_alike() {
        let a = parse_sort::<Job>("-_created,name").expect("plain");
        let b = parse_sort::<Job>(r#"[("_created", -1), ('name', 1)]"#).expect("literal");
        let show = |k: &[SortKey<Job>]| {
            k.iter()
                .map(|k| (k.field.name, k.descending))
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&a), show(&b));
        assert_eq!(show(&a), vec![("_created", true), ("name", false)]);
        assert!(parse_sort::<Job>("-bogus").is_err());
        assert!(parse_sort::<Job>("[(\"name\", 2)]").is_err());
    }

    #[test]
    fn a_page_token_is_refused_with_another_query() {
        let q =
            ListQuery::<Job>::parse("", "name", 10, PageAt::Token(""), 1000, None).expect("valid");
        let job = crate::domain::NewJob::default().into_job(0).expect("valid");
        let token = q.token_after(&job);
        assert!(ListQuery::<Job>::parse("", "name", 10, PageAt::Token(&token), 1000, None).is_ok());
        assert!(
            ListQuery::<Job>::parse("", "-name", 10, PageAt::Token(&token), 1000, None).is_err()
        );
        assert!(
            ListQuery::<Job>::parse("", "name", 10, PageAt::Token("garbage!"), 1000, None).is_err()
        );
    }
}
