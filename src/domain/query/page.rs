//! Which page of a list to read, and list requests parsed and checked ([`ListQuery`]): keyset
//! paging with opaque page tokens bound to their query, or page numbers as REST has them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::DEFAULT_PAGE_SIZE;
use super::field::Resource;
use super::filter::Filter;
use super::parse::parse_where;
use super::sort::{SortKey, parse_sort};
use super::value::Value;
use crate::error::{Error, Result};

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
    pub filter: Filter<T>,
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
        scope: Option<Filter<T>>,
    ) -> Result<Self> {
        let mut filter = parse_where::<T>(where_text)?;
        if let Some(scope) = scope {
            filter = Filter::And(vec![scope, filter]);
        }
        let mut order = parse_sort::<T>(sort_text)?;
        let id = T::id_field();
        if !order.iter().any(|k| k.field == id) {
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
            let fits = match value {
                Value::Null => key.field.nullable,
                Value::Int(_) => key.field.kind.is_integer(),
                Value::Text(_) => !key.field.kind.is_integer(),
                Value::Lines(_) | Value::Times(_) => false,
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
            k: self
                .order
                .iter()
                .map(|k| (k.field.get)(last).to_value())
                .collect(),
        };
        // Serialising plain strings and numbers cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
    }
}
