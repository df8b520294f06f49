//! What the server needs to start ([`Config`]; `jobtrack serve` builds it from its flags, tests
//! directly), where the database is found, and how its URL is shown in logs.

/// What the server needs to start; tests build it directly.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: String,
    pub database: String,
    pub max_page_size: usize,
    pub shutdown_grace: std::time::Duration,
    pub heartbeat: std::time::Duration,
    pub history_retention: std::time::Duration,
    pub history_max_changes: u64,
    /// Jobs read per page of a WatchJobs snapshot.
    pub watch_snapshot_page: usize,
    /// How often the change log is pruned.
    pub history_prune_interval: std::time::Duration,
    /// How often health checks the database (NOT_SERVING while it does not answer).
    pub health_check_interval: std::time::Duration,
    /// Cross-origin callers allowed (`*`: any); empty: same origin only.
    pub cors_origins: Vec<String>,
    /// Authentication off whatever keys exist.
    pub insecure_no_auth: bool,
    /// Per-key limits.
    pub key_limits: crate::auth::Limits,
    /// TLS certificate and key files (PEM); both or neither.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// How many connections may be open at once, and how long one may stay silent.
    pub connections: ConnectionLimits,
    /// Retention of finished jobs and the handling of silent executors.
    pub upkeep: crate::domain::Upkeep,
    /// How often the upkeep sweeps look for due jobs.
    pub sweep_interval: std::time::Duration,
    /// Webhook delivery.
    pub webhooks: crate::webhook::WebhookConfig,
}

/// Limits on the port's connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_open: usize,
    /// A connection that sends nothing for this long after it opens is closed.
    pub first_byte_timeout: std::time::Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_open: 10_000,
            first_byte_timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl Config {
    /// A config for tests and tools: the given database, a free loopback port.
    pub fn for_database(database: &str) -> Config {
        Config {
            listen: "127.0.0.1:0".to_string(),
            database: database.to_string(),
            max_page_size: 1000,
            shutdown_grace: std::time::Duration::from_secs(5),
            heartbeat: std::time::Duration::from_secs(15),
            history_retention: std::time::Duration::from_secs(24 * 3600),
            history_max_changes: 1_000_000,
            watch_snapshot_page: 1000,
            history_prune_interval: std::time::Duration::from_secs(60),
            health_check_interval: std::time::Duration::from_secs(2),
            cors_origins: Vec::new(),
            insecure_no_auth: false,
            key_limits: crate::auth::Limits::default(),
            tls_cert: None,
            tls_key: None,
            connections: ConnectionLimits::default(),
            upkeep: crate::domain::Upkeep::default(),
            sweep_interval: std::time::Duration::from_secs(1),
            webhooks: crate::webhook::WebhookConfig::default(),
        }
    }
}

/// The database to open: the one given, else `DATABASE_URL`, else the SQLite file `jobtrack.db`
/// in the working directory. `serve` and `keys` find it alike.
pub fn database_url(given: Option<String>) -> String {
    given
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "jobtrack.db".to_string())
}

/// A duration as operators write it: a number and a unit, `ms`, `s`, `m`, `h` or `d`, possibly
/// several (`1h30m`); `0` alone is zero.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let bad = || {
        format!(
            "{text:?} is not a duration: write a number and a unit (ms, s, m, h, d), e.g. 30d, 10m, 1h30m or 0"
        )
    };
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    // A hundred years is "for ever" enough, and keeps every sum of times in range.
    if !total.is_finite() || total > 100.0 * 365.25 * 86_400.0 {
        return Err(format!("{text:?} is longer than a hundred years"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// A database URL fit for logs: the password of a `postgres://user:password@host/db` is hidden.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_operators_write_them() {
        use super::parse_duration;
        use std::time::Duration;
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "5x", "m", "1h-5m", "1000000d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            super::redacted("postgres://jt:s3cr@t@db:5432/jobtrack"),
            "postgres://jt:***@db:5432/jobtrack"
        );
        assert_eq!(
            super::redacted("postgres://db/jobtrack"),
            "postgres://db/jobtrack"
        );
        assert_eq!(super::redacted("jobtrack.db"), "jobtrack.db");
    }
}
