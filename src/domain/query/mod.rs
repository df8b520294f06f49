//! The query language shared by gRPC, REST and watchers: a Mongo-style JSON `where`, a `sort` in
//! either documented form, and opaque keyset page tokens. Text is parsed once into a typed
//! [`Filter`] and [`SortKey`]s over a resource's table of fields ([`Resource`]); the store turns
//! them into parameterised SQL, watchers evaluate filters in memory.
//!
//! - [`value`]: values and their kinds; [`field`]: fields and the [`Resource`] trait;
//! - [`filter`]: the filter and its evaluation; [`parse`]: the `where` parser;
//! - [`sort`]: the `sort` parser; [`page`]: list requests and page tokens.

pub mod field;
pub mod filter;
pub mod page;
pub mod parse;
pub mod sort;
pub mod value;

pub use field::{Field, Origin, Resource, Rest, Uses};
pub use filter::{CmpOp, Filter, Operator, Pattern};
pub use page::{ListQuery, PageAt};
pub use parse::parse_where;
pub use sort::{SortKey, parse_sort};
pub use value::{Datum, EnumKind, Kind, Value};

/// Longest `where` accepted, in bytes.
pub const MAX_WHERE_BYTES: usize = 64 * 1024;
/// Deepest nesting of a `where` accepted.
pub const MAX_WHERE_DEPTH: usize = 32;
/// Page size when the client asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 25;

#[cfg(test)]
pub(crate) mod tests;
