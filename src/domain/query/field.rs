//! A resource's fields, each declared once in its resource's table ([`Resource::fields`]): its
//! documented name, its kind, where it shows and who writes it, and how to read and set it on a
//! record. The query language, the store's columns and row decoding, the REST JSON and the
//! update mask are all derived from the tables; nothing else lists a resource's fields.

use std::fmt;

use super::value::{Datum, Kind, Value};
use crate::error::Result;

/// One field of a resource.
pub struct Field<T: 'static> {
    /// The documented name, as in `where`, `sort` and REST JSON; a dotted name is a path into a
    /// nested object (`kube_copy_progress.failed_pvs`). Names starting with `_` are the
    /// framework's own (`_id`, `_created`, ...): REST shows them whatever the projection.
    pub name: &'static str,
    pub kind: Kind,
    /// Whether a record may lack it (`null` in a query, absent from REST JSON).
    pub nullable: bool,
    pub uses: Uses,
    /// The field's value in a record.
    pub get: for<'a> fn(&'a T) -> Datum<'a>,
    /// Sets the field of a record: from a stored row, or from an update's values. A value of
    /// the wrong type is refused.
    pub set: fn(&mut T, Value) -> Result<()>,
}

impl<T> Field<T> {
    /// Whether clients write this field (CreateJob, UpdateJob's mask).
    pub fn is_written_by_clients(&self) -> bool {
        self.uses.origin == Origin::Client
    }

    /// Whether the field has a column (a computed one is derived from the others when read).
    pub fn is_stored(&self) -> bool {
        self.uses.origin != Origin::Computed
    }
}

impl<T> fmt::Debug for Field<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Fields are entries of one static table: the same entry is the same field.
impl<T> PartialEq for Field<T> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

/// Where a field shows, and who writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uses {
    /// In `where` and `sort`.
    pub query: bool,
    /// Whether REST items show it.
    pub rest: Rest,
    pub origin: Origin,
}

/// Whether a REST item shows a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rest {
    /// Always: a field of the documented JSON.
    Shown,
    /// Only when a `projection` names it: a jobtrack extension, so that items stay exactly the
    /// documented JSON for the clients that do not ask.
    OnRequest,
    /// Never (gRPC only).
    Hidden,
}

impl Uses {
    /// Written by clients, queried and shown: most fields.
    pub const CLIENT: Uses = Uses {
        query: true,
        rest: Rest::Shown,
        origin: Origin::Client,
    };
    /// Written by clients and queried; in REST only on request (a jobtrack extension).
    pub const CLIENT_EXTENSION: Uses = Uses {
        query: true,
        rest: Rest::OnRequest,
        origin: Origin::Client,
    };
    /// Set by the server and queried; in REST only on request (a jobtrack extension).
    pub const SERVER_EXTENSION: Uses = Uses {
        query: true,
        rest: Rest::OnRequest,
        origin: Origin::Server,
    };
    /// Computed when read from what is stored; in REST only on request (a jobtrack extension),
    /// not in `where` or `sort` (the database has no column of it).
    pub const COMPUTED_EXTENSION: Uses = Uses {
        query: false,
        rest: Rest::OnRequest,
        origin: Origin::Computed,
    };
    /// What the server keeps for itself (to index or to compute with): queried by nobody,
    /// shown nowhere.
    pub const INTERNAL: Uses = Uses {
        query: false,
        rest: Rest::Hidden,
        origin: Origin::Server,
    };
    /// Set by the server, queried and shown (ids, times, etags).
    pub const SERVER: Uses = Uses {
        query: true,
        rest: Rest::Shown,
        origin: Origin::Server,
    };
    /// Derived from other records, queried and shown (a job's PVC aggregates).
    pub const DERIVED: Uses = Uses {
        query: true,
        rest: Rest::Shown,
        origin: Origin::Derived,
    };
}

/// Who writes a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Clients: CreateJob, and UpdateJob through its mask.
    Client,
    /// The server: ids, times, etags, revisions (output only).
    Server,
    /// Derived from other records: a job's aggregates from its PVC records.
    Derived,
    /// Appended to, never replaced: the activity log.
    Appended,
    /// Computed from the record's other fields when read; not stored (no column).
    Computed,
}

/// A resource that can be stored, listed, watched and queried: a table of fields.
pub trait Resource: Sized + Clone + fmt::Debug + PartialEq + 'static {
    /// The collection's name, as in REST paths (`jobs`, `kubepvcprogress`).
    const NAME: &'static str;

    /// Every field, the id first.
    fn fields() -> &'static [Field<Self>];

    /// A record with no field set yet, which setting every field completes (decoding).
    fn blank() -> Self;

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

    /// A queryable field by name (`where`, `sort`).
    fn query_field(name: &str) -> Option<&'static Field<Self>> {
        Self::field(name).filter(|f| f.uses.query)
    }

    /// The names of the queryable fields, for error messages.
    fn query_field_names() -> Vec<&'static str> {
        Self::fields()
            .iter()
            .filter(|f| f.uses.query)
            .map(|f| f.name)
            .collect()
    }

    fn id_field() -> &'static Field<Self> {
        &Self::fields()[0]
    }
}

/// A nullable integer member `$member` of a record that the server computes, as a field of
/// kind `$kind` used as `$uses` (an extension shown on request, or [`Uses::INTERNAL`]).
macro_rules! computed {
    ($name:literal, $member:ident, $kind:expr, $uses:expr) => {
        $crate::domain::query::Field {
            name: $name,
            kind: $kind,
            nullable: true,
            uses: $uses,
            get: |r| $crate::domain::query::Datum::int(r.$member),
            set: |r, v| {
                r.$member = v.into_int()?;
                Ok(())
            },
        }
    };
}
pub(crate) use computed;
