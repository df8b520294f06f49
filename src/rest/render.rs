//! Jobs and PVC records as the documented JSON: `_id`, `_created`, `_updated` (RFC 1123),
//! `_etag`, `_links`, then the fields, keys in sorted order as the framework writes them. A field
//! never set is absent; `projection` narrows the fields.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::domain::{CopyProgress, Job, PvcProgress, SnapshotProgress, TransferStats};
use crate::error::{Error, Result};

/// The projectable fields of a job, in the order they are rendered.
pub(crate) const JOB_FIELDS: &[&str] = &[
    "activity",
    "backupdef",
    "backupdef_name",
    "cluster",
    "cluster_name",
    "end_time",
    "kube_copy_progress",
    "kube_snapshot_progress",
    "message",
    "name",
    "num_backup_resources",
    "num_total_resources",
    "restoredef_name",
    "securityscan_name",
    "start_time",
    "state",
    "type",
];

/// The projectable fields of a PVC record.
pub(crate) const PVC_FIELDS: &[&str] = &[
    "end_time",
    "job_id",
    "message",
    "name",
    "namespace",
    "op_type",
    "snapshot_progress_percentage",
    "start_time",
    "state",
    "stats",
];

/// Returned whatever the projection says, as the framework does.
const ALWAYS: &[&str] = &["_id", "_created", "_updated", "_etag"];

/// Which fields an item shows: a bit per entry of the resource's field list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Projection(u32);

impl Projection {
    pub const ALL: Projection = Projection(u32::MAX);

    /// Parses `{"field": 1, ...}` (only these) or `{"field": 0, ...}` (all but these).
    pub fn parse(text: &str, fields: &[&str]) -> Result<Projection> {
        if text.trim().is_empty() {
            return Ok(Projection::ALL);
        }
        let bad = |why: String| {
            Error::invalid(format!(
                "projection {why}: give a JSON object such as {{\"name\": 1, \"state\": 1}} \
                 (only these fields) or {{\"activity\": 0}} (all but these)"
            ))
        };
        let doc: Map<String, Json> = match serde_json::from_str(text) {
            Ok(Json::Object(doc)) => doc,
            Ok(_) => return Err(bad("is not an object".into())),
            Err(e) => return Err(bad(format!("is not valid JSON ({e})"))),
        };
        let mut mask = 0u32;
        let mut include = None;
        for (name, value) in &doc {
            let wanted = match value {
                Json::Bool(b) => *b,
                Json::Number(n) if n.as_i64() == Some(1) => true,
                Json::Number(n) if n.as_i64() == Some(0) => false,
                _ => return Err(bad(format!("value of {name:?} must be 1 or 0"))),
            };
            if ALWAYS.contains(&name.as_str()) {
                continue;
            }
            let Some(bit) = fields.iter().position(|f| f == name) else {
                return Err(Error::invalid(format!(
                    "projection names unknown field {:?}; known fields: {}",
                    crate::domain::id::truncate(name, 64),
                    fields.join(", ")
                )));
            };
            if *include.get_or_insert(wanted) != wanted {
                return Err(bad("mixes 1 and 0".into()));
            }
            mask |= 1 << bit;
        }
        Ok(match include {
            None => Projection::ALL,
            Some(true) => Projection(mask),
            Some(false) => Projection(!mask),
        })
    }

    fn shows(self, fields: &[&str], name: &str) -> bool {
        fields
            .iter()
            .position(|f| *f == name)
            .is_some_and(|bit| self.0 & (1 << bit) != 0)
    }
}

/// `{"href": ..., "title": ...}`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Link {
    pub href: String,
    pub title: String,
}

impl Link {
    pub fn new(href: impl Into<String>, title: impl Into<String>) -> Link {
        Link {
            href: href.into(),
            title: title.into(),
        }
    }

    pub fn home() -> Link {
        Link::new("/", "home")
    }
}

/// Whether an item stands alone (fetched by its URL: `parent` and `collection` links too) or
/// sits in a list (`self` and `related` only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Context {
    Alone,
    InList,
}

#[derive(Serialize)]
struct ItemLinks {
    #[serde(skip_serializing_if = "Option::is_none")]
    collection: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<Link>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    related: BTreeMap<&'static str, Link>,
    #[serde(rename = "self")]
    self_: Link,
}

impl ItemLinks {
    fn new(context: Context, collection: &str, self_: Link) -> ItemLinks {
        let alone = context == Context::Alone;
        ItemLinks {
            collection: alone
                .then(|| Link::new(format!("v1/{collection}"), format!("/v1/{collection}"))),
            parent: alone.then(Link::home),
            related: BTreeMap::new(),
            self_,
        }
    }
}

/// RFC 1123, as `_created` and `_updated` are documented.
pub(crate) fn http_date(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000).max(0) as u64;
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[derive(Serialize)]
struct Stats {
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_number_of_files: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    io_number_of_files: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    io_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transferred_number_of_files: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transferred_size: Option<i64>,
}

impl From<&TransferStats> for Stats {
    fn from(s: &TransferStats) -> Self {
        Stats {
            estimated_number_of_files: s.estimated_number_of_files,
            estimated_size: s.estimated_size,
            io_number_of_files: s.io_number_of_files,
            io_size: s.io_size,
            transferred_number_of_files: s.transferred_number_of_files,
            transferred_size: s.transferred_size,
        }
    }
}

#[derive(Serialize)]
struct CopyItem {
    active_pvs: i64,
    completed_pvs: i64,
    failed_pvs: i64,
    pending_pvs: i64,
    stats: Stats,
    total_pvs: i64,
}

impl From<&CopyProgress> for CopyItem {
    fn from(c: &CopyProgress) -> Self {
        CopyItem {
            active_pvs: c.active_pvs,
            completed_pvs: c.completed_pvs,
            failed_pvs: c.failed_pvs,
            pending_pvs: c.pending_pvs,
            stats: Stats::from(&c.stats),
            total_pvs: c.total_pvs,
        }
    }
}

#[derive(Serialize)]
struct SnapshotItem {
    active_pvs: i64,
    completed_pvs: i64,
    failed_pvs: i64,
    pending_pvs: i64,
    skipped_pvs: i64,
    total_pvs: i64,
}

impl From<&SnapshotProgress> for SnapshotItem {
    fn from(s: &SnapshotProgress) -> Self {
        SnapshotItem {
            active_pvs: s.active_pvs,
            completed_pvs: s.completed_pvs,
            failed_pvs: s.failed_pvs,
            pending_pvs: s.pending_pvs,
            skipped_pvs: s.skipped_pvs,
            total_pvs: s.total_pvs,
        }
    }
}

/// A job as the documented JSON.
#[derive(Serialize)]
pub(crate) struct JobItem<'a> {
    _created: String,
    _etag: &'a str,
    _id: &'a str,
    _links: ItemLinks,
    _updated: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    activity: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backupdef: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backupdef_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kube_copy_progress: Option<CopyItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kube_snapshot_progress: Option<SnapshotItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_backup_resources: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_total_resources: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restoredef_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    securityscan_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    job_type: Option<&'static str>,
}

pub(crate) fn job_item(job: &Job, projection: Projection, context: Context) -> JobItem<'_> {
    let show = |name: &str| projection.shows(JOB_FIELDS, name);
    let f = &job.fields;
    let number = |name: &str, value: Option<i64>| value.filter(|_| show(name));
    let id = job.id.as_str();
    let mut links = ItemLinks::new(context, "jobs", Link::new(format!("/v1/jobs/{id}"), "Job"));
    let backupdef = text(show("backupdef"), &f.backupdef);
    let cluster = text(show("cluster"), &f.cluster);
    if let Some(backupdef) = backupdef {
        links.related.insert(
            "backupdef",
            Link::new(format!("/v1/kubebackups/{backupdef}"), "Kubebackup"),
        );
    }
    if let Some(cluster) = cluster {
        links.related.insert(
            "cluster",
            Link::new(format!("/v1/kubeclusters/{cluster}"), "Kubecluster"),
        );
    }
    JobItem {
        _created: http_date(job.created),
        _etag: &job.etag,
        _id: id,
        _links: links,
        _updated: http_date(job.updated),
        activity: (show("activity") && !job.activity.is_empty()).then_some(&job.activity[..]),
        backupdef,
        backupdef_name: text(show("backupdef_name"), &f.backupdef_name),
        cluster,
        cluster_name: text(show("cluster_name"), &f.cluster_name),
        end_time: number("end_time", f.end_time),
        kube_copy_progress: job
            .copy_progress
            .as_ref()
            .filter(|_| show("kube_copy_progress"))
            .map(CopyItem::from),
        kube_snapshot_progress: job
            .snapshot_progress
            .as_ref()
            .filter(|_| show("kube_snapshot_progress"))
            .map(SnapshotItem::from),
        message: text(show("message"), &f.message),
        name: text(show("name"), &f.name),
        num_backup_resources: number("num_backup_resources", f.num_backup_resources),
        num_total_resources: number("num_total_resources", f.num_total_resources),
        restoredef_name: text(show("restoredef_name"), &f.restoredef_name),
        securityscan_name: text(show("securityscan_name"), &f.securityscan_name),
        start_time: number("start_time", f.start_time),
        state: show("state").then(|| job.state.as_str()),
        job_type: f.job_type.filter(|_| show("type")).map(|t| t.as_str()),
    }
}

/// `value` if the projection shows it.
fn text(shown: bool, value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|_| shown)
}

/// A PVC progress record as the documented JSON.
#[derive(Serialize)]
pub(crate) struct PvcItem<'a> {
    _created: String,
    _etag: &'a str,
    _id: &'a str,
    _links: ItemLinks,
    _updated: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    op_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_progress_percentage: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<Stats>,
}

pub(crate) fn pvc_item(pvc: &PvcProgress, projection: Projection, context: Context) -> PvcItem<'_> {
    let show = |name: &str| projection.shows(PVC_FIELDS, name);
    let id = pvc.id.as_str();
    let mut links = ItemLinks::new(
        context,
        "kubepvcprogress",
        // The framework titles an item by its collection's name without the trailing "s"s.
        Link::new(format!("/v1/kubepvcprogress/{id}"), "Kubepvcprogre"),
    );
    let job_id = show("job_id").then(|| pvc.job_id.as_str());
    if let Some(job_id) = job_id {
        links
            .related
            .insert("job_id", Link::new(format!("/v1/jobs/{job_id}"), "Job"));
    }
    PvcItem {
        _created: http_date(pvc.created),
        _etag: &pvc.etag,
        _id: id,
        _links: links,
        _updated: http_date(pvc.updated),
        end_time: pvc.end_time.filter(|_| show("end_time")),
        job_id,
        message: pvc.message.as_deref().filter(|_| show("message")),
        name: show("name").then_some(pvc.name.as_str()),
        namespace: show("namespace").then_some(pvc.namespace.as_str()),
        op_type: pvc.op_type.filter(|_| show("op_type")).map(|o| o.as_str()),
        snapshot_progress_percentage: pvc
            .snapshot_progress_percentage
            .filter(|_| show("snapshot_progress_percentage")),
        start_time: pvc.start_time.filter(|_| show("start_time")),
        state: show("state").then(|| pvc.state.as_str()),
        stats: pvc
            .stats
            .as_ref()
            .filter(|_| show("stats"))
            .map(Stats::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_include_or_exclude_but_never_both() {
        let only = Projection::parse(r#"{"name": 1, "_id": 0}"#, JOB_FIELDS).expect("valid");
        assert!(only.shows(JOB_FIELDS, "name"));
        assert!(!only.shows(JOB_FIELDS, "state"));
        let but = Projection::parse(r#"{"activity": false}"#, JOB_FIELDS).expect("valid");
        assert!(!but.shows(JOB_FIELDS, "activity"));
        assert!(but.shows(JOB_FIELDS, "state"));
        for bad in [
            r#"{"name": 1, "state": 0}"#,
            r#"{"nmae": 1}"#,
            r#"{"name": 2}"#,
            r#"["name"]"#,
            "{name:1}",
        ] {
            assert!(Projection::parse(bad, JOB_FIELDS).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_rfc_1123() {
        assert_eq!(
            http_date(1_598_234_358_123_456),
            "Mon, 24 Aug 2020 01:59:18 GMT"
        );
    }
}
