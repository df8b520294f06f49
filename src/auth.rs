//! Who may do what: API keys with roles, one policy for every transport.
//!
//! A key looks like `jt_<id>_<secret>`: the id (16 hex) finds the key, the secret (43 base64url
//! characters, 256 random bits) proves it. Only SHA-256 of the secret is stored; with 256 bits of
//! entropy a fast hash is enough (there is nothing to guess), and hashes compare in constant time.
//! Transports pass the `Authorization: Bearer <key>` value to [`Keys::authenticate`] and each
//! application method asks the resulting [`Principal`] for the one [`Permission`] it needs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read and watch.
    Viewer,
    /// Viewer, and cancel.
    Operator,
    /// Create and update jobs, report PVC progress (and read, to do so).
    Executor,
    /// Everything, including delete.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Executor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Executor => "executor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => true,
            Permission::Cancel => matches!(self, Role::Operator | Role::Admin),
            Permission::Write => matches!(self, Role::Executor | Role::Admin),
            Permission::Delete | Permission::Subscriptions => self == Role::Admin,
        }
    }
}

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Get, list, watch.
    Read,
    /// CancelJob.
    Cancel,
    /// CreateJob, UpdateJob, ReportPvcProgress.
    Write,
    /// DeleteJob.
    Delete,
    /// Create, read and delete webhook subscriptions (their URLs and secrets).
    Subscriptions,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Cancel,
        Permission::Write,
        Permission::Delete,
        Permission::Subscriptions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Cancel => "cancel",
            Permission::Write => "write",
            Permission::Delete => "delete",
            Permission::Subscriptions => "subscriptions",
        }
    }

    /// In words, with the roles that have it.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read jobs",
            Permission::Cancel => "cancel jobs (operator or admin)",
            Permission::Write => "create and update jobs (executor or admin)",
            Permission::Delete => "delete jobs (admin)",
            Permission::Subscriptions => "manage webhook subscriptions (admin)",
        }
    }
}

/// A stored key (its secret only as a hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// Microseconds since the epoch.
    pub created: i64,
    pub revoked: Option<i64>,
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off (a loopback server without keys, or `--insecure-no-auth`).
    Anyone,
    /// Shared, so authenticating a call allocates nothing.
    Key(Arc<KeyIdentity>),
}

/// A key as callers see it: never its secret or hash.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyIdentity {
    pub id: String,
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// `Ok` if this caller may do `permission`, else PERMISSION_DENIED.
    pub fn require(&self, permission: Permission) -> Result<()> {
        match self {
            Principal::Key(key) if !self.may(permission) => Err(Error::PermissionDenied(format!(
                "key {:?} has the role {}, which may not {}",
                key.name,
                key.role.as_str(),
                permission.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// Whether this caller may do `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        match self {
            Principal::Anyone => true,
            Principal::Key(key) => key.role.allows(permission),
        }
    }

    /// How activity lines name this caller.
    pub fn describe(&self) -> Option<String> {
        match self {
            Principal::Anyone => None,
            Principal::Key(key) => Some(format!("key {:?} ({})", key.name, key.id)),
        }
    }
}

/// Makes a new key: (stored record without name/role filled by the caller, the key to show once).
pub fn generate(name: &str, role: Role, now: i64) -> (ApiKey, String) {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    // Without an entropy source there is no safe key: fail loudly rather than make a weak one.
    getrandom::fill(&mut id).expect("the operating system's random source");
    getrandom::fill(&mut secret).expect("the operating system's random source");
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let key = ApiKey {
        id: id.clone(),
        name: name.to_string(),
        role,
        hash: hash(&secret),
        created: now,
        revoked: None,
    };
    (key, format!("jt_{id}_{secret}"))
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stored hex hash as bytes (32 zero bytes, which no secret hashes to, if unreadable).
fn hash_bytes(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
}

/// A key as the server checks it: its identity and the hash as bytes.
struct Known {
    identity: Arc<KeyIdentity>,
    hash: [u8; 32],
    revoked: bool,
}

/// Equal in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Per-key limits, so that one client cannot hurt the rest.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Calls per second a key may make on average...
    pub rate: f64,
    /// ...and in a burst.
    pub burst: f64,
    /// Watch streams a key may hold open at once.
    pub max_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: 1000.0,
            burst: 2000.0,
            max_streams: 1000,
        }
    }
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

/// One open watch stream of a key; the count drops when it is dropped.
pub struct StreamPermit {
    streams: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = streams.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The keys the server knows, refreshed from the store; and whether they are required.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<RwLock<HashMap<String, Known>>>,
    limits: Limits,
    buckets: Arc<std::sync::Mutex<HashMap<String, Bucket>>>,
    streams: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// False: authentication is off and every caller is [`Principal::Anyone`].
    required: Arc<std::sync::atomic::AtomicBool>,
    forced_off: bool,
}

impl Keys {
    /// `off`: `--insecure-no-auth`.
    pub fn new(off: bool, limits: Limits) -> Keys {
        Keys {
            inner: Arc::default(),
            limits,
            buckets: Arc::default(),
            streams: Arc::default(),
            required: Arc::default(),
            forced_off: off,
        }
    }

    /// Replaces the known keys; keys are required as soon as one live key exists.
    pub fn replace(&self, keys: Vec<ApiKey>) {
        let live = keys.iter().any(|k| k.revoked.is_none());
        let map = keys
            .into_iter()
            .map(|k| {
                let known = Known {
                    hash: hash_bytes(&k.hash),
                    revoked: k.revoked.is_some(),
                    identity: Arc::new(KeyIdentity {
                        id: k.id.clone(),
                        name: k.name,
                        role: k.role,
                    }),
                };
                (k.id, known)
            })
            .collect();
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = map;
        self.required.store(
            live && !self.forced_off,
            std::sync::atomic::Ordering::Release,
        );
    }

    pub fn required(&self) -> bool {
        self.required.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The caller named by an `Authorization` header value (`Bearer jt_...`).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal> {
        if !self.required() {
            return Ok(Principal::Anyone);
        }
        let missing = || {
            Error::Unauthenticated(
                "this server requires an API key: send `Authorization: Bearer <key>`".into(),
            )
        };
        let value = authorization.ok_or_else(missing)?.trim();
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .ok_or_else(|| {
                Error::Unauthenticated("the Authorization header must be `Bearer <key>`".into())
            })?
            .1
            .trim();
        let malformed = || Error::Unauthenticated("the API key is malformed".into());
        let rest = token.strip_prefix("jt_").ok_or_else(malformed)?;
        let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
        let keys = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let unknown = || Error::Unauthenticated("unknown or revoked API key".into());
        let key = keys.get(id).ok_or_else(unknown)?;
        let presented = Sha256::digest(secret.as_bytes());
        if !constant_time_eq(&key.hash, &presented[..]) || key.revoked {
            return Err(unknown());
        }
        Ok(Principal::Key(key.identity.clone()))
    }

    /// Takes one call from the key's bucket; RESOURCE_EXHAUSTED when it is empty.
    pub fn admit(&self, principal: &Principal) -> Result<()> {
        let Principal::Key(key) = principal else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // A lookup by reference first, so a call allocates nothing once its key has a bucket.
        if let Some(bucket) = buckets.get_mut(&key.id) {
            return self.take(bucket, key, now);
        }
        let bucket = buckets.entry(key.id.clone()).or_insert(Bucket {
            tokens: self.limits.burst,
            at: now,
        });
        self.take(bucket, key, now)
    }

    /// Refills `bucket` for the time since its last call and takes one token from it.
    fn take(&self, bucket: &mut Bucket, key: &KeyIdentity, now: std::time::Instant) -> Result<()> {
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.limits.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.limits.burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let wait = ((1.0 - bucket.tokens) / self.limits.rate.max(0.001)).ceil() as u64;
            return Err(Error::ResourceExhausted {
                message: format!(
                    "key {:?} is over its rate of {} calls/s; retry in {}s",
                    key.name,
                    self.limits.rate,
                    wait.max(1)
                ),
                retry_after: wait.max(1),
            });
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Counts one more open watch stream of the key; RESOURCE_EXHAUSTED past the limit.
    pub fn open_stream(&self, principal: &Principal) -> Result<Option<StreamPermit>> {
        let Principal::Key(key) = principal else {
            return Ok(None);
        };
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let open = streams.entry(key.id.clone()).or_insert(0);
        if *open >= self.limits.max_streams {
            return Err(Error::ResourceExhausted {
                message: format!(
                    "key {:?} already holds {} watch streams, its limit; close one first",
                    key.name, self.limits.max_streams
                ),
                retry_after: 5,
            });
        }
        *open += 1;
        Ok(Some(StreamPermit {
            streams: self.streams.clone(),
            key: key.id.clone(),
        }))
    }

    /// Whether a principal authenticated earlier still may call (its key not revoked since).
    pub fn still_valid(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Anyone => !self.required(),
            Principal::Key(key) => self
                .inner
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key.id)
                .is_some_and(|k| !k.revoked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_issue_says() {
        use Permission::*;
        let table = [
            (Role::Viewer, [true, false, false, false]),
            (Role::Operator, [true, true, false, false]),
            (Role::Executor, [true, false, true, false]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, allowed) in table {
            for (p, a) in [Read, Cancel, Write, Delete].into_iter().zip(allowed) {
                assert_eq!(role.allows(p), a, "{role:?} {p:?}");
            }
        }
    }

    #[test]
    fn a_key_authenticates_until_revoked_and_nothing_else_does() {
        let keys = Keys::new(false, Limits::default());
        let (mut stored, shown) = generate("ci", Role::Viewer, 1);
        assert!(!shown.contains(&stored.hash));
        keys.replace(vec![stored.clone()]);
        let header = format!("Bearer {shown}");
        let principal = keys.authenticate(Some(&header)).expect("valid");
        assert!(matches!(principal, Principal::Key(ref k) if k.role == Role::Viewer));
        for scheme in ["bearer", "BEARER"] {
            let header = format!("{scheme} {shown}");
            assert_eq!(
                keys.authenticate(Some(&header)).expect("any case"),
                principal
            );
        }
        for bad in [
            None,
            Some("Bearer"),
            Some("Basic abc"),
            Some("Bearer jt_x"),
            Some("Bearer jt_00_00"),
        ] {
            assert!(
                matches!(keys.authenticate(bad), Err(Error::Unauthenticated(_))),
                "{bad:?}"
            );
        }
        let wrong = format!("Bearer jt_{}_{}", stored.id, "A".repeat(43));
        assert!(keys.authenticate(Some(&wrong)).is_err());
        stored.revoked = Some(2);
        keys.replace(vec![stored]);
        // No live key left: authentication is off again.
        assert_eq!(
            keys.authenticate(Some(&header)).expect("off"),
            Principal::Anyone
        );
    }
}
