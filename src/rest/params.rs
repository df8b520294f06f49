//! The query string of a list request (`where`, `sort`, `max_results`, `page`, `projection`) and
//! the paging links built back from it, in the framework's (python-eve's) forms.
//!
//! Real clients send `where` both URL-encoded and raw (`?where={"cluster":"5f77..."}`), so the
//! query string is decoded leniently, as the framework does: `%XX` sequences and `+` are decoded,
//! anything else is taken as it stands. What decodes to bytes that are not UTF-8 is refused,
//! naming the parameter: a query is never silently changed.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::error::{Error, Result};

/// Parameters the framework knows, and the watch's (`watch`, `resume_token`); every other one is
/// carried through paging links unchanged.
const KNOWN: [&str; 7] = [
    "where",
    "sort",
    "max_results",
    "page",
    "projection",
    "watch",
    "resume_token",
];

/// What must be escaped in a link's query value so the link parses back to the same request,
/// while JSON stays readable (`{"state":"RUNNING"}` as the framework writes it).
const HREF_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'#').add(b'%').add(b'&').add(b'+');

/// `Link` headers carry URI references (RFC 8288): there, every character a URI does not allow
/// is escaped as well, so that header parsers never see a raw quote, brace or comma.
const LINK_VALUE: &AsciiSet = &HREF_VALUE
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The parameters of `GET /api/v1/<collection>`.
#[derive(Debug, Default)]
pub(crate) struct ListParams {
    pub where_: String,
    pub sort: String,
    /// As requested; 0 (absent) means the default page size.
    pub max_results: i32,
    /// 1-based.
    pub page: u64,
    pub projection: String,
    /// `watch=1`: follow the collection or item as Server-Sent Events.
    pub watch: bool,
    /// Where a watch resumes (as `Last-Event-ID` does).
    pub resume_token: String,
    /// Which parameters were given, by name.
    given: Vec<&'static str>,
    /// Unknown parameters, in order: ignored, but kept in paging links as the framework does.
    pub others: Vec<(String, String)>,
}

impl ListParams {
    pub fn parse(query: Option<&str>) -> Result<ListParams> {
        let mut params = ListParams {
            page: 1,
            ..ListParams::default()
        };
        for (key, value) in decode(query.unwrap_or(""))? {
            let Some(name) = KNOWN.iter().copied().find(|k| *k == key) else {
                params.others.push((key, value));
                continue;
            };
            if params.given.contains(&name) {
                return Err(Error::invalid(format!(
                    "{key} is given twice: give each query parameter once"
                )));
            }
            params.given.push(name);
            match name {
                "where" => params.where_ = value,
                "sort" => params.sort = value,
                "max_results" => params.max_results = parse_max_results(&value)?,
                "page" => params.page = parse_page(&value)?,
                "watch" => params.watch = parse_watch(&value)?,
                "resume_token" => params.resume_token = value,
                _ => params.projection = value,
            }
        }
        if !params.watch && params.given.contains(&"resume_token") {
            return Err(Error::invalid(
                "resume_token applies to a watch: add watch=1 (or leave resume_token out)",
            ));
        }
        Ok(params)
    }

    /// Refuses the given parameters outside `allowed` (a watch takes only some of them).
    pub fn only(&self, allowed: &[&str], of: &str) -> Result<()> {
        match self.given.iter().find(|name| !allowed.contains(name)) {
            Some(name) => Err(Error::invalid(format!(
                "{name} does not apply to {of}; it takes {}",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// The query string of this request at page `page`, in the framework's order
    /// (`max_results`, `where`, `sort`, `page`, then the rest), omitting defaults: `?` included,
    /// or empty when nothing is left.
    fn query_at(&self, page: u64, page_size: usize, escape: &'static AsciiSet) -> String {
        let mut parts: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
        if page_size != crate::domain::query::DEFAULT_PAGE_SIZE {
            parts.push(("max_results".into(), page_size.to_string().into()));
        }
        for (key, value) in [("where", &self.where_), ("sort", &self.sort)] {
            if !value.is_empty() {
                parts.push((key.into(), value.as_str().into()));
            }
        }
        if page > 1 {
            parts.push(("page".into(), page.to_string().into()));
        }
        if !self.projection.is_empty() {
            parts.push(("projection".into(), self.projection.as_str().into()));
        }
        for (key, value) in &self.others {
            parts.push((key.as_str().into(), value.as_str().into()));
        }
        let mut out = String::new();
        for (i, (key, value)) in parts.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.extend(utf8_percent_encode(key, escape));
            out.push('=');
            out.extend(utf8_percent_encode(value, escape));
        }
        out
    }

    /// The framework's `_links` of a list: `parent`, `self`, and `next`/`prev`/`last` when those
    /// pages exist. Hrefs are relative (`v1/jobs?...`), titled as the documented example shows.
    pub fn envelope_links(
        &self,
        collection: &str,
        page_size: usize,
        total: u64,
    ) -> Vec<(&'static str, String, String)> {
        let base = format!("v1/{collection}");
        let mut links = vec![
            ("parent", "/".to_string(), "home".to_string()),
            (
                "self",
                format!("{base}{}", self.query_at(self.page, page_size, HREF_VALUE)),
                format!("/{base}"),
            ),
        ];
        for (rel, page, title) in self.paging(page_size, total) {
            let href = format!("{base}{}", self.query_at(page, page_size, HREF_VALUE));
            links.push((rel, href, title.to_string()));
        }
        links
    }

    /// RFC 8288 `Link` header value for the paging relations, with absolute paths.
    pub fn link_header(&self, collection: &str, page_size: usize, total: u64) -> String {
        self.paging(page_size, total)
            .into_iter()
            .chain(std::iter::once(("first", 1, "first page")))
            .map(|(rel, page, _)| {
                format!(
                    "</api/v1/{collection}{}>; rel=\"{rel}\"",
                    self.query_at(page, page_size, LINK_VALUE)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// (relation, page number, title) of the framework's paging links: `next` and `last` while
    /// later pages exist, `prev` after the first page.
    fn paging(&self, page_size: usize, total: u64) -> Vec<(&'static str, u64, &'static str)> {
        let mut links = Vec::new();
        let page_size = page_size.max(1) as u64;
        if self.page.saturating_mul(page_size) < total {
            links.push(("next", self.page + 1, "next page"));
            links.push(("last", total.div_ceil(page_size), "last page"));
        }
        if self.page > 1 {
            links.push(("prev", self.page - 1, "previous page"));
        }
        links
    }
}

/// The `key=value` pairs of a query string: `+` is a space, `%XX` a byte, the rest as it stands;
/// a key or value whose bytes are not UTF-8 is refused, naming the parameter.
fn decode(query: &str) -> Result<Vec<(String, String)>> {
    let text = |part: &str, what: &dyn Fn() -> String| -> Result<String> {
        let spaced = part.replace('+', " ");
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
        String::from_utf8(bytes).map_err(|_| {
            Error::invalid(format!(
                "{} is not UTF-8 once percent-decoded: encode text as UTF-8 (%C3%A9 for é)",
                what()
            ))
        })
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = text(key, &|| "a query parameter's name".to_string())?;
            let value = text(value, &|| format!("the value of {}", truncate(&key)))?;
            Ok((key, value))
        })
        .collect()
}

fn parse_watch(value: &str) -> Result<bool> {
    match value.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(Error::invalid(format!(
            "watch {:?} is not 1 or 0: watch=1 follows the jobs as Server-Sent Events",
            truncate(value)
        ))),
    }
}

fn parse_max_results(value: &str) -> Result<i32> {
    match value.trim().parse::<u64>() {
        Ok(n) => Ok(n.min(i32::MAX as u64) as i32),
        Err(_) => Err(Error::invalid(format!(
            "max_results {:?} is not a whole number: give 1 or more (0 or none means 25)",
            truncate(value)
        ))),
    }
}

fn parse_page(value: &str) -> Result<u64> {
    match value.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Error::invalid(format!(
            "page {:?} is not a page number: pages are numbered from 1",
            truncate(value)
        ))),
    }
}

fn truncate(s: &str) -> &str {
    crate::domain::id::truncate(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_encoded_where_decode_alike() {
        let raw =
            ListParams::parse(Some(r#"where={"cluster":"5f77"}&sort=-_created"#)).expect("valid");
        let encoded = ListParams::parse(Some(
            "where=%7B%22cluster%22%3A%225f77%22%7D&sort=-_created",
        ))
        .expect("valid");
        assert_eq!(raw.where_, r#"{"cluster":"5f77"}"#);
        assert_eq!(raw.where_, encoded.where_);
        assert_eq!(raw.sort, "-_created");
    }

    #[test]
    fn links_follow_the_framework_order_and_omit_defaults() {
        let p = ListParams::parse(Some(
            r#"page=2&sort=-_created&where={"state":"RUNNING"}&max_results=10&x=1"#,
        ))
        .expect("valid");
        let links = p.envelope_links("jobs", 10, 35);
        let find = |rel: &str| links.iter().find(|l| l.0 == rel).map(|l| l.1.clone());
        assert_eq!(
            find("self").expect("valid"),
            r#"v1/jobs?max_results=10&where={"state":"RUNNING"}&sort=-_created&page=2&x=1"#
        );
        assert_eq!(
            find("prev").expect("valid"),
            r#"v1/jobs?max_results=10&where={"state":"RUNNING"}&sort=-_created&x=1"#
        );
        assert!(find("last").expect("valid").contains("&page=4"));
        let header = p.link_header("jobs", 10, 35);
        assert!(header.contains(
            "</api/v1/jobs?max_results=10&where=%7B%22state%22:%22RUNNING%22%7D&sort=-_created&page=3&x=1>; rel=\"next\""
        ));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_naming_the_parameter() {
        let refused = |query: &str| ListParams::parse(Some(query)).expect_err(query).to_string();
        assert!(refused("where=%7B%22name%22%3A%22%FF%FE%22%7D").contains("the value of where"));
        assert!(refused("sort=%C3%28").contains("the value of sort"));
        assert!(refused("x%FF=1").contains("a query parameter's name"));
        let fine =
            ListParams::parse(Some("where=%7B%22name%22%3A%22caf%C3%A9+x%22%7D")).expect("valid");
        assert_eq!(fine.where_, r#"{"name":"café x"}"#);
    }

    #[test]
    fn a_watch_takes_a_token_and_a_token_needs_a_watch() {
        let watch = ListParams::parse(Some("watch=1&resume_token=abc")).expect("valid");
        assert!(watch.watch);
        assert_eq!(watch.resume_token, "abc");
        assert!(watch.only(&["watch", "resume_token"], "a watch").is_ok());
        assert!(watch.only(&["watch"], "a watch").is_err());
        assert!(ListParams::parse(Some("resume_token=abc")).is_err());
        assert!(ListParams::parse(Some("watch=yes")).is_err());
        assert!(!ListParams::parse(Some("watch=0")).expect("valid").watch);
    }

    #[test]
    fn bad_numbers_and_repeats_are_refused() {
        assert!(ListParams::parse(Some("page=0")).is_err());
        assert!(ListParams::parse(Some("page=x")).is_err());
        assert!(ListParams::parse(Some("max_results=-1")).is_err());
        assert!(ListParams::parse(Some("sort=a&sort=b")).is_err());
        assert_eq!(
            ListParams::parse(Some("max_results=99999999999"))
                .expect("valid")
                .max_results,
            i32::MAX
        );
    }
}
