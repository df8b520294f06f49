//! The gRPC client of the command line tools (`watch`, `jobs`, `whoami`, `simulate`, `bench`):
//! it sends the API key from `JOBTRACK_KEY`, when set, as `Authorization: Bearer <key>` on every
//! call.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::pb::access_service_client::AccessServiceClient;
use crate::pb::job_service_client::JobServiceClient;

pub type Client = JobServiceClient<InterceptedService<Channel, KeyHeader>>;

/// Adds the key to each request.
#[derive(Clone)]
pub struct KeyHeader(Option<MetadataValue<Ascii>>);

impl Interceptor for KeyHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type AccessClient = AccessServiceClient<InterceptedService<Channel, KeyHeader>>;

/// `JOBTRACK_KEY` (if set and well-formed) as an `Authorization` value.
pub fn key_header() -> KeyHeader {
    let key = std::env::var("JOBTRACK_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .and_then(|k| format!("Bearer {}", k.trim()).parse().ok());
    KeyHeader(key)
}

/// A client on `channel` carrying `JOBTRACK_KEY`.
pub fn client(channel: Channel) -> Client {
    JobServiceClient::with_interceptor(channel, key_header())
}

/// An `AccessService` client on `channel` carrying `JOBTRACK_KEY`.
pub fn access_client(channel: Channel) -> AccessClient {
    AccessServiceClient::with_interceptor(channel, key_header())
}

/// A connection to `server` (an `http://` or `https://` URL).
pub async fn channel(server: &str) -> Result<Channel, String> {
    Endpoint::from_shared(server.to_string())
        .map_err(|e| format!("bad --server {server:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {server}: {e}"))
}

/// A client of `server` carrying `JOBTRACK_KEY`, accepting the large messages a job with a long
/// activity log makes.
pub async fn connect(server: &str) -> Result<Client, String> {
    Ok(client(channel(server).await?).max_decoding_message_size(64 * 1024 * 1024))
}

/// A gRPC status as a command's error message.
pub fn rpc_error(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Whether a call failed for a reason that passes (the server restarting, a dropped
/// connection), so that trying again is the right answer.
pub fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

/// The waits between retries of the client tools: 250 ms, doubling up to 5 s, and from the
/// shortest again once a try has succeeded.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MOST: Duration = Duration::from_secs(5);

    /// The wait before the next try (which then doubles).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MOST);
        wait
    }

    /// A try succeeded: the next outage starts from the shortest wait.
    pub fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_five_seconds_and_starts_again_after_a_success() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..7).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        backoff.succeeded();
        assert_eq!(backoff.next_wait().as_millis(), 250);
    }
}
