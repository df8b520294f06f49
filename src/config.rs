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
