//! Turns a parsed [`Filter`] and order into parameterised SQL. Column names come only from the
//! tables of fields ([`Stored::columns`]); every value is bound as a parameter.

use crate::domain::Job;
use crate::domain::query::{CmpOp, Filter, ListQuery, SortKey, Value};
use crate::store::schema::{Param, Stored};

/// The SQL dialect: placeholders, regex operator and NULL ordering differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The placeholder of the `n`th parameter (1-based).
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => "?".to_string(),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// SQL text with its parameters, built front to back.
pub struct Sql {
    pub text: String,
    pub params: Vec<Param>,
    dialect: Dialect,
}

impl Sql {
    pub fn new(dialect: Dialect, text: &str) -> Self {
        Sql {
            text: text.to_string(),
            params: Vec::new(),
            dialect,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn bind(&mut self, param: Param) -> &mut Self {
        self.params.push(param);
        let placeholder = self.dialect.placeholder(self.params.len());
        self.text.push_str(&placeholder);
        self
    }

    fn bind_value(&mut self, value: &Value) -> &mut Self {
        self.bind(Param::from(value))
    }

    /// Appends the filter as a boolean expression. An expression may yield NULL for a missing
    /// field, which WHERE treats as false; negations make it two-valued first.
    pub fn filter<T: Stored>(&mut self, filter: &Filter<T>) -> &mut Self {
        let column = |field| T::columns().of_field(field);
        match filter {
            Filter::And(parts) => self.join(parts, " AND ", "1=1"),
            Filter::Or(parts) => self.join(parts, " OR ", "1=0"),
            Filter::Not(inner) => {
                self.push("NOT COALESCE((");
                self.filter(inner);
                self.push("), FALSE)")
            }
            Filter::Compare { field, op, value } => self.compare(column(field), *op, value),
            Filter::In {
                field,
                values,
                negated,
            } => self.in_list(column(field), values, *negated),
            Filter::Exists { field, exists } => {
                self.push(column(field))
                    .push(if *exists { " IS NOT NULL" } else { " IS NULL" })
            }
            Filter::Regex { field, pattern } => match self.dialect {
                Dialect::Sqlite => self
                    .push(column(field))
                    .push(" REGEXP ")
                    .bind(Param::Text(Some(pattern.as_str().to_string()))),
                Dialect::Postgres => self
                    .push(column(field))
                    .push(" ~ ")
                    .bind(Param::Text(Some(postgres_regex(pattern.as_str())))),
            },
        }
    }

    /// `column op value`; `$ne` also matches a missing field, as in the query language.
    fn compare(&mut self, column: &str, op: CmpOp, value: &Value) -> &mut Self {
        match (op, value) {
            (CmpOp::Eq, Value::Null) => return self.push(column).push(" IS NULL"),
            (CmpOp::Ne, Value::Null) => return self.push(column).push(" IS NOT NULL"),
            (CmpOp::Ne, v) => {
                return self
                    .push("(")
                    .push(column)
                    .push(" IS NULL OR ")
                    .push(column)
                    .push(" <> ")
                    .bind_value(v)
                    .push(")");
            }
            _ => {}
        }
        let symbol = match op {
            CmpOp::Eq => " = ",
            CmpOp::Ne => " <> ",
            CmpOp::Gt => " > ",
            CmpOp::Gte => " >= ",
            CmpOp::Lt => " < ",
            CmpOp::Lte => " <= ",
        };
        self.push(column).push(symbol).bind_value(value)
    }

    /// `$in` (`$nin` when `negated`); a `null` among the values matches a missing field.
    fn in_list(&mut self, column: &str, values: &[Value], negated: bool) -> &mut Self {
        let has_null = values.contains(&Value::Null);
        let present: Vec<&Value> = values.iter().filter(|v| **v != Value::Null).collect();
        // A missing field matches `$in [null]` and every `$nin` without null.
        let (null_test, glue, list_op) = match (negated, has_null) {
            (false, false) => (None, "", " IN ("),
            (false, true) => (Some(" IS NULL"), " OR ", " IN ("),
            (true, false) => (Some(" IS NULL"), " OR ", " NOT IN ("),
            (true, true) => (Some(" IS NOT NULL"), " AND ", " NOT IN ("),
        };
        if present.is_empty() {
            return match null_test {
                None => self.push("1=0"),
                Some(_) if negated && !has_null => self.push("1=1"),
                Some(test) => self.push(column).push(test),
            };
        }
        self.push("(");
        if let Some(test) = null_test {
            self.push(column).push(test).push(glue);
        }
        self.push(column).push(list_op);
        for (i, v) in present.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind_value(v);
        }
        self.push("))")
    }

    fn join<T: Stored>(&mut self, parts: &[Filter<T>], glue: &str, empty: &str) -> &mut Self {
        if parts.is_empty() {
            return self.push(empty);
        }
        self.push("(");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                self.push(glue);
            }
            self.filter(part);
        }
        self.push(")")
    }

    /// Appends "the row comes after `after` in `order`", NULL sorting before any value.
    pub fn after<T: Stored>(&mut self, order: &[SortKey<T>], after: &[Value]) -> &mut Self {
        let column = |key: &SortKey<T>| T::columns().of_field(key.field);
        let uniform = order.iter().all(|k| k.descending == order[0].descending);
        let no_nulls = after.iter().all(|v| *v != Value::Null);
        let nulls_cannot_follow = !order[0].descending || order.iter().all(|k| !k.field.nullable);
        if uniform && no_nulls && nulls_cannot_follow {
            // One row-value comparison: an index range scan.
            self.push("(");
            for (i, key) in order.iter().enumerate() {
                self.push(if i > 0 { ", " } else { "" }).push(column(key));
            }
            self.push(if order[0].descending {
                ") < ("
            } else {
                ") > ("
            });
            for (i, value) in after.iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.bind_value(value);
            }
            return self.push(")");
        }
        // The general lexicographic form: k1 after v1, or k1 = v1 and k2 after v2, ...
        self.push("(");
        for i in 0..order.len() {
            if i > 0 {
                self.push(" OR ");
            }
            self.push("(");
            for (key, value) in order[..i].iter().zip(after) {
                let column = column(key);
                match value {
                    Value::Null => self.push(column).push(" IS NULL AND "),
                    v => self.push(column).push(" = ").bind_value(v).push(" AND "),
                };
            }
            let (key, value) = (&order[i], &after[i]);
            let column = column(key);
            match (key.descending, value) {
                (false, Value::Null) => self.push(column).push(" IS NOT NULL"),
                (false, v) => self.push(column).push(" > ").bind_value(v),
                (true, Value::Null) => self.push("1=0"),
                (true, v) => self
                    .push("(")
                    .push(column)
                    .push(" < ")
                    .bind_value(v)
                    .push(" OR ")
                    .push(column)
                    .push(" IS NULL)"),
            };
            self.push(")");
        }
        self.push(")")
    }

    /// Appends ORDER BY for `order`: NULL first ascending, last descending.
    pub fn order_by<T: Stored>(&mut self, order: &[SortKey<T>]) -> &mut Self {
        self.push(" ORDER BY ");
        for (i, key) in order.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push(T::columns().of_field(key.field))
                .push(if key.descending { " DESC" } else { " ASC" });
            // SQLite sorts NULL first ascending, as the contract wants; Postgres must be told
            // (only for nullable columns, so that indexes on NOT NULL columns still serve).
            if self.dialect == Dialect::Postgres && key.field.nullable {
                self.push(if key.descending {
                    " NULLS LAST"
                } else {
                    " NULLS FIRST"
                });
            }
        }
        self
    }
}

/// A pattern of Rust's `regex` syntax (as the query language validated it) for Postgres's `~`.
/// The `$options` flags arrive as a leading `(?imsx)` group; Postgres has its own letters for the
/// newline modes: Rust's default (`.` stops at newlines, `^`/`$` at the ends) is Postgres's `p`,
/// `s` alone is `s`, `m` alone is `n`, both are `w`.
pub fn postgres_regex(pattern: &str) -> String {
    let (flags, rest) = match pattern.strip_prefix("(?").and_then(|r| r.split_once(')')) {
        Some((flags, rest)) if !flags.is_empty() && flags.chars().all(|c| "imsx".contains(c)) => {
            (flags, rest)
        }
        _ => ("", pattern),
    };
    let mut options = String::new();
    if flags.contains('i') {
        options.push('i');
    }
    if flags.contains('x') {
        options.push('x');
    }
    options.push(match (flags.contains('s'), flags.contains('m')) {
        (false, false) => 'p',
        (true, false) => 's',
        (false, true) => 'n',
        (true, true) => 'w',
    });
    format!("(?{options}){rest}")
}

/// The SQL of one page of `query` over `table`: the filter, the keyset or offset position, the
/// order, and one row more than the page (it tells whether another page follows).
pub fn page<T: Stored>(dialect: Dialect, query: &ListQuery<T>) -> Sql {
    let mut page = Sql::new(
        dialect,
        &format!("SELECT {} FROM {} WHERE ", T::columns().list, T::TABLE),
    );
    page.filter(&query.filter);
    if let Some(after) = &query.after {
        page.push(" AND ");
        page.after(&query.order, after);
    }
    page.order_by(&query.order);
    page.push(&format!(
        " LIMIT {} OFFSET {}",
        query.page_size + 1,
        query.offset
    ));
    page
}

/// One page of a WatchJobs snapshot: the jobs matching `filter` after the id `after`, in id
/// order, at most `limit` of them.
pub fn snapshot_page(
    dialect: Dialect,
    filter: &Filter<Job>,
    after: Option<&str>,
    limit: usize,
) -> Sql {
    let mut sql = Sql::new(
        dialect,
        &format!("SELECT {} FROM jobs WHERE (", Job::columns().list),
    );
    sql.filter(filter);
    sql.push(")");
    if let Some(after) = after {
        sql.push(" AND id > ");
        sql.bind(Param::Text(Some(after.to_string())));
    }
    sql.push(&format!(" ORDER BY id LIMIT {limit}"));
    sql
}
