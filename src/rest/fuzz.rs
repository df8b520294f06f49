//! Fuzzing the REST query string (with its projection and paging links) through the query
//! language's harness ([`crate::domain::query::tests::fuzz`]): every input is answered, parsed or
//! refused as INVALID_ARGUMENT, and never panics.

use super::params::ListParams;
use super::render::{self, Projection};
use crate::domain::Job;
use crate::domain::query::tests::fuzz::fuzz;
use crate::domain::query::{ListQuery, PageAt};
use crate::error::Error;

/// Everything the gateway parses from a list request's query string, for the fuzzing harness.
fn parse_all(query: &str) -> Result<(), Error> {
    let params = ListParams::parse(Some(query))?;
    Projection::parse(&params.projection, &render::projectable::<Job>())?;
    ListQuery::<Job>::parse(
        &params.where_,
        &params.sort,
        params.max_results,
        PageAt::Number(params.page),
        1000,
        None,
    )?;
    let _ = params.envelope_links("jobs", 25, 1_000_000);
    let _ = params.link_header("jobs", 25, 1_000_000);
    Ok(())
}

#[test]
fn rest_query_strings_never_panic_and_refuse_only_with_invalid_argument() {
    fuzz("query", 0x8CB9_2BA7_2F3D_8DD7, parse_all);
}
