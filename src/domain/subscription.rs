//! Webhook subscriptions: which changes of which jobs a receiver wants, where it is, and how its
//! deliveries stand. A subscription reads the change log from its own durable cursor, so every
//! change it wants is delivered (at least once, in commit order) whatever happens to the
//! replicas in between. Knows nothing of HTTP: the target is checked here only for its form.

use std::net::IpAddr;

use crate::domain::query::Filter;
use crate::domain::string_enum::string_enum;
use crate::domain::{Change, ChangeKind, Job, ObjectId};
use crate::error::{Error, Result};

/// Longest target URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

string_enum! {
    /// Which changes of the matching jobs a subscription wants.
    Events {
        /// The change that makes a job terminal.
        Terminal = "terminal",
        /// Every change of a job's state, its creation included.
        State = "state",
        /// Every change.
        All = "all",
    }
}

string_enum! {
    /// How a subscription's deliveries go.
    Status {
        Active = "active",
        /// A delivery is being retried.
        Retrying = "retrying",
        /// A delivery was retried for longer than the retry window; it goes on, less often.
        Failing = "failing",
    }
}

/// A stored subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: ObjectId,
    pub url: String,
    /// The `where` as given (the filter is parsed from it when used).
    pub where_: String,
    pub events: Events,
    /// `whsec_` + base64 of 32 random bytes; shown to the caller once, at creation.
    pub secret: String,
    /// µs since the epoch.
    pub created: i64,
    /// Every wanted change up to this position is delivered (or refused by the receiver).
    pub cursor: u64,
    pub status: Status,
    /// Since when the change being retried has failed (µs).
    pub failing_since: Option<i64>,
    pub last_error: String,
    /// Changes the receiver answered 2xx.
    pub delivered: u64,
}

string_enum! {
    /// How one attempt ended.
    Outcome {
        Delivered = "DELIVERED",
        /// Another attempt follows.
        Retrying = "RETRYING",
        /// A 4xx other than 408/429, or a redirect: not retried, the change is passed over.
        Refused = "REFUSED",
    }
}

/// One attempt to deliver one change, as `ListDeliveries` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub subscription_id: ObjectId,
    pub position: u64,
    /// 1 for the first.
    pub attempt: u32,
    /// µs since the epoch.
    pub at: i64,
    pub job_id: String,
    pub type_: String,
    /// 0 when the receiver did not answer.
    pub status_code: u16,
    pub error: String,
    pub micros: u64,
    pub outcome: Outcome,
}

/// What a delivering replica records of a subscription as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub cursor: u64,
    /// Changes delivered since the last record.
    pub delivered: u64,
    pub status: Status,
    pub failing_since: Option<i64>,
    pub last_error: String,
}

/// What a client asks to create.
#[derive(Clone, Debug)]
pub struct NewSubscription {
    pub url: String,
    pub where_: String,
    pub events: Events,
}

/// A target URL, checked for its form: `http` or `https`, a host, no user or password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let bad = |why: &str| Error::invalid(format!("url {url:?}: {why}"));
        if url.len() > MAX_URL_BYTES {
            return Err(bad(&format!("longer than {MAX_URL_BYTES} bytes")));
        }
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("only http:// and https:// targets are allowed"));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad("a user or password in the URL is not allowed"));
        }
        if path.contains('#') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("no fragment, spaces or control characters"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("no valid host"))?;
        let port = port.unwrap_or(if https { 443 } else { 80 });
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Target {
            https,
            host,
            port,
            path,
        })
    }

    /// The host as an address, when it is one (`[::1]` or `10.0.0.1`).
    pub fn literal_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// `host[:port]`, `[v6][:port]`; the host lower-cased, without brackets.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        (v6, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':');
    (!host.is_empty() && host.chars().all(valid)).then(|| (host.to_ascii_lowercase(), port))
}

/// Whether an address is one a webhook may not reach by default: loopback, private, link-local,
/// unique-local, CGNAT, unspecified, broadcast, multicast or documentation ranges (and IPv4
/// mapped into IPv6 by the same rules).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || first == 0x2001 && v6.segments()[1] == 0x0db8
        }
    }
}

impl NewSubscription {
    /// Checks the URL's form and the `where`; answers the target.
    pub fn validate(&self) -> Result<Target> {
        crate::domain::query::parse_where::<Job>(&self.where_)?;
        Target::parse(&self.url)
    }
}

/// The webhook type of a change: `job.created`, `job.updated`, `job.pvc_updated`,
/// `job.deleted`.
pub fn event_type(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Created => "job.created",
        ChangeKind::Updated => "job.updated",
        ChangeKind::PvcUpdated => "job.pvc_updated",
        ChangeKind::Deleted => "job.deleted",
    }
}

/// Whether a subscription for `events` of the jobs matching `filter` wants `change`. The filter
/// is matched on the job after the change (a deleted job: as it was last).
pub fn wants(events: Events, filter: &Filter<Job>, change: &Change) -> bool {
    if !filter.matches(&change.job) {
        return false;
    }
    let before = change.before.as_ref().map(|b| b.state);
    match events {
        Events::All => true,
        Events::State => {
            change.kind == ChangeKind::Created
                || (change.kind == ChangeKind::Updated && before != Some(change.job.state))
        }
        Events::Terminal => {
            change.kind != ChangeKind::Deleted
                && change.job.state.is_terminal()
                && !before.is_some_and(|b| b.is_terminal())
        }
    }
}

/// The id of the delivery of the change at `position` to subscription `id`: the same on every
/// attempt and every replica.
pub fn delivery_id(id: &ObjectId, position: u64) -> String {
    format!("msg_{id}_{position}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_http_or_https_with_a_host_and_nothing_else() {
        let t = Target::parse("https://hooks.example.com/jobtrack?x=1").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.com", 443, "/jobtrack?x=1")
        );
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(t.literal_ip(), Some("::1".parse().unwrap()));
        for bad in [
            "ftp://x/",
            "file:///etc/passwd",
            "http://",
            "http://user:pw@host/",
            "http://host:0/",
            "http://host:99999/",
            "http://ho st/",
            "http://host/#frag",
            "gopher://host/",
            "http://[zz]/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn private_addresses_are_told_from_public_ones() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }
}
