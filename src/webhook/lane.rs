//! The delivery lane: a runtime of its own for rendering, signing and sending webhooks, on
//! threads at a lower scheduling priority (nice 10) than the server's. Delivering every change
//! to 100 subscriptions is 100 requests per write; on the server's runtime those requests took
//! the CPU that writes need (1,000 UpdateJob/s: p50 1.8 ms alone, 44 ms beside them). Here the
//! kernel runs the server's threads first and deliveries use what is left; a lane that falls
//! behind reads the log from its cursors, so nothing is lost by waiting.
//!
//! The store is only ever called from the server's runtime ([`Home::call`]): its connections
//! belong to that runtime's I/O driver and must not be tied to the lane's, which stops first.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// How much lower than the server's the lane's threads run (nice 0 → 10: about a tenth of
/// the CPU when both want all of it).
const NICER_BY: i32 = 10;

/// The server's runtime, seen from the lane.
#[derive(Clone)]
pub(super) struct Home(Handle);

impl Home {
    /// The runtime this is called on.
    pub(super) fn current() -> Home {
        Home(Handle::current())
    }

    /// Runs `call` (a store call) on the server's runtime and answers its result;
    /// UNAVAILABLE if that runtime is shutting down.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.0
            .spawn(call)
            .await
            .map_err(|e| Error::Unavailable(format!("the server is stopping: {e}")))?
    }
}

/// Runs the future `start` makes on a new lane (half the machine's cores, at least one
/// thread); the handle, on the caller's runtime, resolves once it has ended and the lane has
/// stopped.
pub(super) fn run<F>(start: impl FnOnce() -> F + Send + 'static) -> std::io::Result<JoinHandle<()>>
where
    F: Future<Output = ()>,
{
    let threads = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("jobtrack-webhooks")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()?;
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("jobtrack-webhooks".into())
        .spawn(move || {
            lower_priority();
            // `start` is called inside the lane, so that what it spawns runs there.
            runtime.block_on(async move { start().await });
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            let _ = done.send(());
        })?;
    Ok(tokio::spawn(async move {
        let _ = ended.await;
    }))
}

/// Lowers the calling thread's scheduling priority by [`NICER_BY`] (on Linux the nice value
/// is a thread's own); a failure only leaves it where it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers and touch no memory
        // of ours.
        let failed = unsafe {
            let tid = libc::gettid();
            let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, now + NICER_BY) != 0
        };
        if failed {
            tracing::debug!("could not lower the webhook threads' priority");
        }
    }
}
