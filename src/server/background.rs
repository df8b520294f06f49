//! What a server does besides answering calls: reports its database's health, reloads API keys
//! (so a key created or revoked anywhere takes effect on every replica), prunes the change
//! log to the retained history, and sweeps jobs due for retention, stall or abandon
//! ([`crate::upkeep`]).

use std::time::Duration;

use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Keys;
use crate::store::Store;

/// How long the change log keeps history for resuming watchers.
#[derive(Clone, Copy, Debug)]
pub(super) struct HistoryRetention {
    pub max_age: Duration,
    pub max_changes: u64,
    pub every: Duration,
}

/// What the upkeep sweeper runs with.
pub(super) struct Upkeeping {
    pub upkeep: crate::domain::Upkeep,
    pub every: Duration,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// The background tasks of one server; they stop with [`Background::stop`].
pub(super) struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    pub(super) fn start(
        store: &Store,
        health: HealthReporter,
        health_every: Duration,
        keys: Keys,
        history: HistoryRetention,
        upkeep: Upkeeping,
    ) -> Background {
        Background {
            tasks: vec![
                tokio::spawn(monitor_health(store.clone(), health, health_every)),
                tokio::spawn(refresh_keys(store.clone(), keys)),
                tokio::spawn(prune_history(store.clone(), history)),
                tokio::spawn(crate::upkeep::run(
                    store.clone(),
                    upkeep.upkeep,
                    upkeep.every,
                    upkeep.metrics,
                )),
            ],
        }
    }

    pub(super) fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Prunes the change log: entries older than the retention, or beyond the newest
/// `max_changes`. A watcher resuming from before the retained history gets a snapshot.
async fn prune_history(store: Store, retention: HistoryRetention) {
    loop {
        tokio::time::sleep(retention.every).await;
        let older_than = crate::domain::now_micros() - retention.max_age.as_micros() as i64;
        loop {
            match store.prune_history(older_than, retention.max_changes).await {
                // Pruning goes in bounded chunks; a full chunk means there may be more.
                Ok(removed) if removed >= 50_000 => continue,
                Ok(removed) => {
                    if removed > 0 {
                        tracing::debug!(removed, "pruned the change log");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the change log failed");
                    break;
                }
            }
        }
    }
}

/// Reports NOT_SERVING while the database does not answer, SERVING once it does again.
async fn monitor_health(store: Store, health: HealthReporter, every: Duration) {
    let mut serving = true;
    loop {
        tokio::time::sleep(every).await;
        // A dead database must not hold the check up: no answer in time is NOT_SERVING.
        let ok = matches!(tokio::time::timeout(every, store.ping()).await, Ok(Ok(())));
        if ok != serving {
            serving = ok;
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            tracing::warn!(?status, "database health changed");
            health.set_service_status("", status).await;
            health
                .set_service_status("jobtrack.v1.JobService", status)
                .await;
        }
    }
}

/// Reloads the keys every second.
async fn refresh_keys(store: Store, keys: Keys) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match store.list_keys().await {
            Ok(list) => keys.replace(list),
            Err(e) => {
                tracing::debug!(error = %e, "reloading API keys failed; keeping the last ones")
            }
        }
    }
}
