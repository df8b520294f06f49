//! Jobs and PVC records as the documented JSON, derived from their tables of fields: `_id`,
//! `_created`, `_updated` (RFC 1123), `_etag`, `_links`, then every REST field that is set, a
//! dotted name as a nested object (`kube_copy_progress.stats.io_size`), keys in sorted order as
//! the framework writes them. A field never set is absent; `projection` narrows the top-level
//! fields.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::domain::query::{Datum, Kind, Resource, Rest};
use crate::domain::{Job, PvcProgress};
use crate::error::{Error, Result};

/// The top-level REST fields of `T` a projection may name, sorted: the framework's own (`_id`,
/// `_created`, ...) are shown whatever the projection and are not among them.
pub(crate) fn projectable<T: Resource>() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = T::fields()
        .iter()
        .filter(|f| f.uses.rest != Rest::Hidden && !f.name.starts_with('_'))
        .map(|f| top_level(f.name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The top-level object a dotted name lives in (`kube_copy_progress` of
/// `kube_copy_progress.failed_pvs`).
fn top_level(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Which top-level fields an item shows.
#[derive(Clone, Debug)]
pub(crate) enum Projection {
    All,
    Only(Vec<String>),
    AllBut(Vec<String>),
}

impl Projection {
    /// Parses `{"field": 1, ...}` (only these) or `{"field": 0, ...}` (all but these), for the
    /// fields `projectable` lists.
    pub fn parse(text: &str, projectable: &[&str]) -> Result<Projection> {
        if text.trim().is_empty() {
            return Ok(Projection::All);
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
        let mut names = Vec::new();
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
            if !projectable.contains(&name.as_str()) {
                return Err(Error::invalid(format!(
                    "projection names unknown field {:?}; known fields: {}",
                    crate::domain::id::truncate(name, 64),
                    projectable.join(", ")
                )));
            }
            if *include.get_or_insert(wanted) != wanted {
                return Err(bad("mixes 1 and 0".into()));
            }
            names.push(name.clone());
        }
        Ok(match include {
            None => Projection::All,
            Some(true) => Projection::Only(names),
            Some(false) => Projection::AllBut(names),
        })
    }

    /// Whether the projection asks for `name` by name (how an extension is shown).
    fn names(&self, name: &str) -> bool {
        matches!(self, Projection::Only(names) if names.iter().any(|n| n == name))
    }

    /// Whether the item shows the top-level field `name`.
    fn shows(&self, name: &str) -> bool {
        match self {
            Projection::All => true,
            Projection::Only(names) => names.iter().any(|n| n == name),
            Projection::AllBut(names) => !names.iter().any(|n| n == name),
        }
    }
}

/// The framework's own fields: returned whatever the projection says.
const ALWAYS: &[&str] = &["_id", "_created", "_updated", "_etag"];

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
pub(crate) use crate::domain::http_date;

/// A field's value as REST shows it; `None` when it is absent.
fn shown(kind: Kind, datum: Datum<'_>) -> Option<Json> {
    match (kind, datum) {
        (_, Datum::Null) => None,
        (Kind::Time, Datum::Int(micros)) => Some(Json::String(http_date(micros))),
        (_, Datum::Int(i)) => Some(Json::from(i)),
        (_, Datum::Text(s)) => Some(Json::from(s)),
        (_, Datum::Lines([])) => None,
        (_, Datum::Lines(lines)) => Some(Json::from(lines)),
        (_, Datum::Times([])) => None,
        (_, Datum::Times(times)) => Some(Json::from(
            times.iter().map(|t| http_date(*t)).collect::<Vec<_>>(),
        )),
    }
}

/// Puts `value` at the dotted path `name` of `item`.
fn insert(item: &mut Map<String, Json>, name: &str, value: Json) {
    match name.split_once('.') {
        None => {
            item.insert(name.to_string(), value);
        }
        Some((outer, rest)) => {
            let inner = item
                .entry(outer)
                .or_insert_with(|| Json::Object(Map::new()));
            if let Json::Object(inner) = inner {
                insert(inner, rest, value);
            }
        }
    }
}

/// The REST fields of `record` the projection shows, with its links.
fn item<T: Resource>(record: &T, projection: &Projection, links: ItemLinks) -> Json {
    let mut item = Map::new();
    for field in T::fields().iter().filter(|f| f.uses.rest != Rest::Hidden) {
        let wanted = match field.uses.rest {
            _ if field.name.starts_with('_') => true,
            Rest::OnRequest => projection.names(top_level(field.name)),
            _ => projection.shows(top_level(field.name)),
        };
        if !wanted {
            continue;
        }
        if let Some(value) = shown(field.kind, (field.get)(record)) {
            insert(&mut item, field.name, value);
        }
    }
    // Serialising a struct of links and strings cannot fail.
    let links = serde_json::to_value(links).unwrap_or(Json::Null);
    item.insert("_links".into(), links);
    Json::Object(item)
}

/// A job as the documented JSON.
pub(crate) fn job_item(job: &Job, projection: &Projection, context: Context) -> Json {
    let id = job.id.as_str();
    let mut links = ItemLinks::new(context, "jobs", Link::new(format!("/v1/jobs/{id}"), "Job"));
    let f = &job.fields;
    if let Some(backupdef) = f
        .backupdef
        .as_deref()
        .filter(|_| projection.shows("backupdef"))
    {
        links.related.insert(
            "backupdef",
            Link::new(format!("/v1/kubebackups/{backupdef}"), "Kubebackup"),
        );
    }
    if let Some(cluster) = f.cluster.as_deref().filter(|_| projection.shows("cluster")) {
        links.related.insert(
            "cluster",
            Link::new(format!("/v1/kubeclusters/{cluster}"), "Kubecluster"),
        );
    }
    item(job, projection, links)
}

/// A PVC progress record as the documented JSON.
pub(crate) fn pvc_item(pvc: &PvcProgress, projection: &Projection, context: Context) -> Json {
    let id = pvc.id.as_str();
    let mut links = ItemLinks::new(
        context,
        "kubepvcprogress",
        // The framework titles an item by its collection's name without the trailing "s"s.
        Link::new(format!("/v1/kubepvcprogress/{id}"), "Kubepvcprogre"),
    );
    if projection.shows("job_id") {
        let job_id = pvc.job_id.as_str();
        links
            .related
            .insert("job_id", Link::new(format!("/v1/jobs/{job_id}"), "Job"));
    }
    item(pvc, projection, links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_include_or_exclude_but_never_both() {
        let fields = projectable::<Job>();
        let only = Projection::parse(r#"{"name": 1, "_id": 0}"#, &fields).expect("valid");
        assert!(only.shows("name"));
        assert!(!only.shows("state"));
        let but = Projection::parse(r#"{"activity": false}"#, &fields).expect("valid");
        assert!(!but.shows("activity"));
        assert!(but.shows("state"));
        for bad in [
            r#"{"name": 1, "state": 0}"#,
            r#"{"nmae": 1}"#,
            r#"{"name": 2}"#,
            r#"["name"]"#,
            "{name:1}",
            r#"{"revision": 1}"#,
        ] {
            assert!(Projection::parse(bad, &fields).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_rfc_1123() {
        assert_eq!(
            http_date(1_598_234_358_123_456),
            "Mon, 24 Aug 2020 01:59:18 GMT"
        );
    }

    /// The properties of an OpenAPI schema as dotted leaf paths, following `$ref`s.
    fn schema_paths(schemas: &Json, schema: &Json, prefix: &str, out: &mut Vec<String>) {
        let schema = match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference.trim_start_matches("#/components/schemas/");
                &schemas[name]
            }
            None => schema,
        };
        match schema["properties"].as_object() {
            Some(properties) if schema["type"] == "object" => {
                for (name, inner) in properties {
                    schema_paths(schemas, inner, &format!("{prefix}{name}."), out);
                }
            }
            _ => out.push(prefix.trim_end_matches('.').to_string()),
        }
    }

    fn documented(schema: &str) -> Vec<String> {
        let document: Json = serde_json::from_str(super::super::OPENAPI).expect("openapi.json");
        let schemas = &document["components"]["schemas"];
        let mut paths = Vec::new();
        schema_paths(schemas, &schemas[schema], "", &mut paths);
        paths.retain(|p| !p.starts_with("_links"));
        paths.sort();
        paths
    }

    fn rendered<T: Resource>() -> Vec<String> {
        let mut names: Vec<String> = T::fields()
            .iter()
            .filter(|f| f.uses.rest != Rest::Hidden)
            .map(|f| f.name.to_string())
            .collect();
        names.sort();
        names
    }

    /// Fails naming each field shown in REST but not documented, and the other way round.
    fn same_fields(schema: &str, documented: Vec<String>, rendered: Vec<String>) {
        let missing: Vec<&String> = rendered
            .iter()
            .filter(|f| !documented.contains(f))
            .collect();
        let extra: Vec<&String> = documented
            .iter()
            .filter(|f| !rendered.contains(f))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "src/rest/openapi.json's {schema} schema lacks {missing:?} (REST fields of the table) \
             and documents {extra:?} (no such REST field)"
        );
    }

    #[test]
    fn openapi_documents_exactly_the_rest_fields_of_each_table() {
        same_fields("Job", documented("Job"), rendered::<Job>());
        same_fields(
            "PvcProgress",
            documented("PvcProgress"),
            rendered::<PvcProgress>(),
        );
    }

    #[test]
    fn openapi_marks_exactly_the_extensions() {
        let document: Json = serde_json::from_str(super::super::OPENAPI).expect("openapi.json");
        let properties = &document["components"]["schemas"]["Job"]["properties"];
        for field in Job::fields().iter().filter(|f| f.uses.rest != Rest::Hidden) {
            let marked = properties[top_level(field.name)]["x-jobtrack-extension"] == true;
            assert_eq!(
                marked,
                field.uses.rest == Rest::OnRequest,
                "openapi.json: {} must carry \"x-jobtrack-extension\": true exactly when REST \
                 shows it only on request",
                field.name
            );
        }
    }

    #[test]
    fn extensions_show_only_when_a_projection_names_them() {
        let job = crate::domain::job::tests::a_job_with_everything_set();
        let fields = projectable::<Job>();
        let all = job_item(&job, &Projection::All, Context::InList);
        assert!(all.get("stalled_since").is_none() && all.get("stall_after_seconds").is_none());
        let all_but = Projection::parse(r#"{"name": 0}"#, &fields).expect("valid");
        assert!(
            job_item(&job, &all_but, Context::InList)
                .get("stalled_since")
                .is_none()
        );
        let asked =
            Projection::parse(r#"{"stalled_since": 1, "state": 1}"#, &fields).expect("valid");
        let item = job_item(&job, &asked, Context::InList);
        assert_eq!(item["stalled_since"], "Sun, 13 Sep 2020 12:26:41 GMT");
        assert_eq!(item["state"], "RUNNING");
        assert!(item.get("name").is_none());
    }

    #[test]
    fn a_job_item_nests_dotted_fields_and_sorts_its_keys() {
        let job = crate::domain::job::tests::a_job_with_everything_set();
        let item = job_item(&job, &Projection::All, Context::InList);
        let keys: Vec<&String> = item.as_object().expect("an object").keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(item["kube_copy_progress"]["stats"]["io_size"], 12);
        assert_eq!(item["kube_snapshot_progress"]["skipped_pvs"], 1);
        assert_eq!(item["type"], "K8S_COPY");
        assert!(
            item.get("revision").is_none(),
            "revision is not a REST field"
        );
        assert_eq!(item["_links"]["related"]["cluster"]["title"], "Kubecluster");
    }
}
