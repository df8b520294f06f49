//! Where a webhook may go: the target's host resolved here, once per attempt, and every address
//! checked, so that the connection goes to an address that was checked (a name that resolves to
//! a public address when created and to 127.0.0.1 later is refused then, too).

use std::net::SocketAddr;
use std::time::Duration;

use crate::domain::subscription::{Target, is_private};
use crate::error::{Error, Result};

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses to connect to for `target`; refused when any is private and `allow_private`
/// is off (a name with one private address among public ones is refused too).
pub async fn resolve(target: &Target, allow_private: bool) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = match target.literal_ip() {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => {
            let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(e)) => {
                    return Err(Error::invalid(format!(
                        "url: cannot resolve {}: {e}",
                        target.host
                    )));
                }
                Err(_) => {
                    return Err(Error::invalid(format!(
                        "url: resolving {} took longer than {RESOLVE_TIMEOUT:?}",
                        target.host
                    )));
                }
            }
        }
    };
    if addrs.is_empty() {
        return Err(Error::invalid(format!(
            "url: {} has no address",
            target.host
        )));
    }
    if !allow_private && let Some(private) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(Error::invalid(format!(
            "url: {} is a loopback, private or link-local address ({}); targets there are \
             refused unless the server runs with --webhook-allow-private",
            target.host,
            private.ip()
        )));
    }
    Ok(addrs)
}
