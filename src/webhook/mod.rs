//! Webhooks: every replica runs a [`Deliverer`] that takes the lease of the subscriptions no
//! live replica holds (renewing its own every third of `--webhook-lease`), runs one
//! [`worker::Worker`] per subscription it holds, and records their progress and attempts
//! ([`Ledger`]) in one transaction every quarter second, fenced by the lease: a replica that
//! lost a lease records nothing more for it and stops. So exactly one replica delivers a
//! subscription at a time, a replica that dies hands over when its leases run out, and each
//! change a subscription wants is delivered at least once, in commit order, from its cursor.
//!
//! Deliveries run on a runtime of their own ([`lane`]), on threads the kernel schedules after
//! the server's: when the machine is short of CPU, deliveries fall behind (and catch up from
//! their cursors) rather than writes slowing down.
//!
//! - [`sign`]: the Standard Webhooks signature and secrets;
//! - [`target`]: where a request may go (private addresses refused by default);
//! - [`http`]: one request, bounded in time and size, no redirects followed;
//! - [`fan`]: the live feed matched once for all the workers.

mod fan;
mod http;
mod lane;
pub mod sign;
pub mod target;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::domain::subscription::{Attempt, Progress};
use crate::domain::{Change, ObjectId, now_micros};
use crate::store::{DeliveryRecord, Store};

/// The `data` member of a change's webhook body: the job (and PVC record) as REST documents them.
pub type Render = fn(&Change) -> serde_json::Value;

/// How webhooks are delivered.
#[derive(Clone, Copy, Debug)]
pub struct WebhookConfig {
    /// Targets on loopback, private or link-local addresses are allowed.
    pub allow_private: bool,
    /// How long a delivery is retried before its subscription is marked FAILING.
    pub retry_for: Duration,
    /// The longest one request may take, connecting included.
    pub timeout: Duration,
    /// How long a replica's hold on a subscription lasts without renewal.
    pub lease: Duration,
}

/// Rung when a subscription is created, so that this replica claims it at once rather than at
/// its next renewal.
pub type Wakeup = Arc<tokio::sync::Notify>;

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private: false,
            retry_for: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(10),
        }
    }
}

/// How long a stopping replica waits for its workers' attempts in flight.
const FINISH_WITHIN: Duration = Duration::from_secs(2);

/// How often progress and attempts are written.
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// Progress and attempts of this replica's workers, until the next save.
#[derive(Default)]
pub(crate) struct Ledger {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    progress: HashMap<ObjectId, Progress>,
    attempts: Vec<Attempt>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A worker's state; its `delivered` adds to what is pending.
    fn progress(&self, id: &ObjectId, state: &Progress) {
        let mut pending = self.lock();
        let delivered = pending.progress.get(id).map_or(0, |p| p.delivered);
        pending.progress.insert(
            id.clone(),
            Progress {
                delivered: delivered + state.delivered,
                ..state.clone()
            },
        );
    }

    fn attempt(&self, attempt: Attempt) {
        self.lock().attempts.push(attempt);
    }

    /// What is pending; of each subscription's attempts only the newest the store keeps
    /// (older ones would only be overwritten in its ring).
    fn take(&self) -> DeliveryRecord {
        let mut pending = self.lock();
        let progress = pending.progress.drain().collect();
        let mut attempts = std::mem::take(&mut pending.attempts);
        let mut kept: HashMap<ObjectId, u64> = HashMap::new();
        attempts.reverse();
        attempts.retain(|a| {
            let n = kept.entry(a.subscription_id.clone()).or_default();
            *n += 1;
            *n <= crate::store::ATTEMPTS_KEPT
        });
        attempts.reverse();
        DeliveryRecord { progress, attempts }
    }

    /// Puts back what a failed save could not write; what the workers recorded since is newer.
    fn restore(&self, record: DeliveryRecord) {
        let DeliveryRecord { progress, attempts } = record;
        let mut pending = self.lock();
        for (id, old) in progress {
            match pending.progress.get_mut(&id) {
                Some(newer) => newer.delivered += old.delivered,
                None => {
                    pending.progress.insert(id, old);
                }
            }
        }
        let mut attempts = attempts;
        attempts.append(&mut pending.attempts);
        pending.attempts = attempts;
    }
}

/// This replica's deliveries; [`Deliverer::stop`] ends them and hands the leases over.
pub struct Deliverer {
    task: JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
    store: Store,
    owner: String,
    ledger: Arc<Ledger>,
}

impl Deliverer {
    /// Starts delivering on the delivery lane; an error if its threads cannot be started.
    pub fn start(
        store: Store,
        config: WebhookConfig,
        render: Render,
        wakeup: Wakeup,
    ) -> std::io::Result<Deliverer> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the operating system's random source");
        let owner = random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let ledger = Arc::<Ledger>::default();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let home = lane::Home::current();
        let supervisor = {
            let (store, owner, ledger) = (store.clone(), owner.clone(), ledger.clone());
            // On the lane: the fan and the workers it spawns run there.
            move || Supervisor {
                stopped,
                fan: Arc::new(fan::Fan::start(&store)),
                store,
                home,
                config,
                render,
                owner,
                ledger,
                workers: HashMap::new(),
                wakeup,
            }
        };
        let task = lane::run(move || supervisor().run())?;
        Ok(Deliverer {
            task,
            stop,
            store,
            owner,
            ledger,
        })
    }

    /// Stops every worker, records how far they got and gives the leases up, so another
    /// replica takes over at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let record = Arc::new(self.ledger.take());
        if let Err(e) = self.store.save_deliveries(&self.owner, record).await {
            tracing::warn!(error = %e, "could not record the last webhook progress");
        }
        if let Err(e) = self.store.release_subscriptions(&self.owner).await {
            tracing::warn!(error = %e, "could not hand the webhook subscriptions over");
        }
    }
}

struct Supervisor {
    /// True once the deliverer stops: workers finish what they are doing and end.
    stopped: tokio::sync::watch::Receiver<bool>,
    store: Store,
    /// Where the store is called from ([`lane::Home`]).
    home: lane::Home,
    config: WebhookConfig,
    render: Render,
    owner: String,
    ledger: Arc<Ledger>,
    workers: HashMap<ObjectId, JoinHandle<()>>,
    wakeup: Wakeup,
    fan: Arc<fan::Fan>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for worker in self.workers.values() {
            worker.abort();
        }
    }
}

impl Supervisor {
    async fn run(mut self) {
        let mut claim = tokio::time::interval(self.config.lease / 3);
        let mut save = tokio::time::interval(SAVE_EVERY);
        let mut claimed_at = Instant::now();
        let wakeup = self.wakeup.clone();
        let mut stopped = self.stopped.clone();
        loop {
            tokio::select! {
                _ = stopped.changed() => return self.finish().await,
                _ = claim.tick() => {
                    if self.claim().await {
                        claimed_at = Instant::now();
                    } else if claimed_at.elapsed() > self.config.lease * 2 / 3 {
                        // The leases may run out before the next renewal: stop before another
                        // replica may start.
                        self.stop_all();
                    }
                }
                _ = save.tick() => self.save().await,
                () = wakeup.notified() => {
                    if self.claim().await {
                        claimed_at = Instant::now();
                    }
                }
            }
        }
    }

    /// Takes and renews leases; starts a worker for each subscription newly held and stops
    /// those no longer held. False if the store could not be asked.
    async fn claim(&mut self) -> bool {
        let now = now_micros();
        let until = now + self.config.lease.as_micros() as i64;
        let (store, owner) = (self.store.clone(), self.owner.clone());
        let held = match self
            .home
            .call(async move { store.claim_subscriptions(&owner, now, until).await })
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "renewing the webhook leases failed");
                return false;
            }
        };
        let ids: Vec<&ObjectId> = held.iter().map(|s| &s.id).collect();
        self.workers.retain(|id, worker| {
            let keep = ids.contains(&id) && !worker.is_finished();
            if !keep {
                worker.abort();
            }
            keep
        });
        for subscription in held {
            if self.workers.contains_key(&subscription.id) {
                continue;
            }
            tracing::info!(subscription = %subscription.id, cursor = subscription.cursor, "delivering a webhook subscription");
            let id = subscription.id.clone();
            let worker = worker::Worker {
                fan: self.fan.clone(),
                stopped: self.stopped.clone(),
                store: self.store.clone(),
                home: self.home.clone(),
                config: self.config,
                render: self.render,
                ledger: self.ledger.clone(),
                subscription,
            };
            self.workers.insert(id, tokio::spawn(worker.run()));
        }
        true
    }

    /// Lets every worker end after its current attempt (at most [`FINISH_WITHIN`]), so that
    /// what it delivered is recorded and not sent again by the next replica.
    async fn finish(&mut self) {
        let workers: Vec<JoinHandle<()>> = self.workers.drain().map(|(_, w)| w).collect();
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(FINISH_WITHIN, futures_util::future::join_all(workers))
            .await
            .is_err()
        {
            for abort in aborts {
                abort.abort();
            }
        }
    }

    fn stop_all(&mut self) {
        for (_, worker) in self.workers.drain() {
            worker.abort();
        }
        self.ledger.take();
    }

    async fn save(&mut self) {
        let record = Arc::new(self.ledger.take());
        if record.progress.is_empty() && record.attempts.is_empty() {
            return;
        }
        let (store, owner, saved) = (self.store.clone(), self.owner.clone(), record.clone());
        match self
            .home
            .call(async move { store.save_deliveries(&owner, saved).await })
            .await
        {
            Ok(lost) => {
                for id in lost {
                    if let Some(worker) = self.workers.remove(&id) {
                        tracing::info!(subscription = %id, "no longer holding a webhook subscription; its delivery stops here");
                        worker.abort();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording webhook progress failed; trying again");
                let record = Arc::try_unwrap(record).unwrap_or_else(|shared| (*shared).clone());
                self.ledger.restore(record);
            }
        }
    }
}
