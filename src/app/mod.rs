//! The application layer: one method per operation, called by every transport, so that each rule
//! exists once. Parses ids and queries, then lets the store run the change through the domain.
//! Webhook subscriptions have their own file ([`subscriptions`]).

mod subscriptions;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::auth::{Keys, Permission, Principal};
use crate::domain::query::{ListQuery, PageAt};
use crate::domain::{Job, JobChange, JobUpdate, NewJob, ObjectId, PvcProgress, PvcReport};
use crate::error::{Error, Result};
use crate::interface::Transport;
use crate::metrics::{Metrics, OpenStream};
use crate::store::{Page, Store};
use crate::watch::{EventRx, JobHub, WatchEvent};
use crate::webhook::{Wakeup, WebhookConfig};

/// A watch stream's events, as the hub produces them; counted in `/metrics` while open.
pub struct Events {
    events: EventRx,
    _open: OpenStream,
}

impl Events {
    /// The next event; `None` once the stream is complete.
    pub async fn recv(&mut self) -> Option<Result<WatchEvent>> {
        self.events.recv().await
    }
}

impl tokio_stream::Stream for Events {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

/// Who is calling: the key (and so the role), and from where.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub peer: Option<std::net::SocketAddr>,
    pub transport: Transport,
}

impl Caller {
    /// The key's name for log spans; empty for an anonymous caller. Cheap: no formatting.
    pub fn key_name(&self) -> &str {
        match &self.principal {
            Principal::Key(key) => &key.name,
            Principal::Anyone => "",
        }
    }

    /// How activity lines name the caller ("Job cancelled by ...").
    pub fn description(&self) -> String {
        match (self.principal.describe(), self.peer) {
            (Some(key), _) => key,
            (None, Some(addr)) => {
                format!("an anonymous {} client at {addr}", self.transport.name())
            }
            (None, None) => format!("an anonymous {} client", self.transport.name()),
        }
    }
}

/// What [`App::get_caller`] answers.
#[derive(Clone, Debug)]
pub struct Access {
    pub keys_required: bool,
    pub principal: Principal,
    pub allowed: Vec<Permission>,
    pub denied: Vec<Permission>,
}

#[derive(Clone)]
pub struct App {
    store: Store,
    hub: JobHub,
    /// Largest page a list returns; larger requests are clamped to it.
    max_page_size: usize,
    keys: Keys,
    metrics: Arc<Metrics>,
    /// Where webhooks may go (checked when a subscription is created).
    webhooks: WebhookConfig,
    /// Tells this replica's deliverer that a subscription was created.
    webhook_wakeup: Wakeup,
}

impl App {
    pub fn new(
        store: Store,
        hub: JobHub,
        max_page_size: usize,
        keys: Keys,
        metrics: Arc<Metrics>,
        webhooks: WebhookConfig,
        webhook_wakeup: Wakeup,
    ) -> Self {
        App {
            store,
            hub,
            max_page_size,
            keys,
            metrics,
            webhooks,
            webhook_wakeup,
        }
    }

    /// The caller of a request with this `Authorization` header from this peer: the one
    /// authentication step of every transport.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<std::net::SocketAddr>,
        transport: Transport,
    ) -> Result<Caller> {
        let principal = self.keys.authenticate(authorization)?;
        self.keys.admit(&principal)?;
        Ok(Caller {
            principal,
            peer,
            transport,
        })
    }

    /// Who `caller` is and what it may do; any authenticated caller may ask.
    pub fn get_caller(&self, caller: &Caller) -> Access {
        let (allowed, denied) = Permission::ALL
            .into_iter()
            .partition(|p| caller.principal.may(*p));
        Access {
            keys_required: self.keys.required(),
            principal: caller.principal.clone(),
            allowed,
            denied,
        }
    }

    #[tracing::instrument(skip_all, fields(key = caller.key_name()))]
    pub async fn create_job(&self, caller: &Caller, job: NewJob) -> Result<Job> {
        caller.principal.require(Permission::Write)?;
        self.store.create_job(job).await
    }

    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn get_job(&self, caller: &Caller, id: &str) -> Result<Job> {
        caller.principal.require(Permission::Read)?;
        let id = ObjectId::parse("job id", id)?;
        self.store
            .get_job(&id)
            .await?
            .ok_or_else(|| job_not_found(&id))
    }

    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn list_jobs(
        &self,
        caller: &Caller,
        where_: &str,
        sort: &str,
        page_size: i32,
        at: PageAt<'_>,
    ) -> Result<Page<Job>> {
        caller.principal.require(Permission::Read)?;
        let query = ListQuery::<Job>::parse(where_, sort, page_size, at, self.max_page_size, None)?;
        self.store.list_jobs(&query).await
    }

    #[tracing::instrument(skip(self, caller, update), fields(key = caller.key_name()))]
    pub async fn update_job(
        &self,
        caller: &Caller,
        id: &str,
        update: JobUpdate,
        etag: &str,
    ) -> Result<Job> {
        caller.principal.require(Permission::Write)?;
        let id = ObjectId::parse("job.id", id)?;
        self.store
            .change_job(id, non_empty(etag), JobChange::Update(update))
            .await
    }

    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn delete_job(&self, caller: &Caller, id: &str, etag: &str) -> Result<Job> {
        caller.principal.require(Permission::Delete)?;
        let id = ObjectId::parse("job id", id)?;
        self.store.delete_job(id, non_empty(etag)).await
    }

    /// Cancels the job; with `etag`, only if the job is still at that etag.
    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn cancel_job(&self, id: &str, caller: &Caller, etag: Option<&str>) -> Result<Job> {
        caller.principal.require(Permission::Cancel)?;
        let id = ObjectId::parse("job id", id)?;
        let change = JobChange::Cancel {
            by: caller.description(),
        };
        self.store
            .change_job(id, etag.map(str::to_string), change)
            .await
    }

    #[tracing::instrument(skip_all, fields(key = caller.key_name(), job_id = %report.job_id))]
    pub async fn report_pvc_progress(
        &self,
        caller: &Caller,
        report: PvcReport,
    ) -> Result<PvcProgress> {
        caller.principal.require(Permission::Write)?;
        report.validate()?;
        Ok(self.store.report_pvc(report).await?.pvc)
    }

    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn get_pvc_progress(&self, caller: &Caller, id: &str) -> Result<PvcProgress> {
        caller.principal.require(Permission::Read)?;
        let id = ObjectId::parse("PVC progress id", id)?;
        self.store
            .get_pvc(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("PVC progress record {id} not found")))
    }

    /// Lists PVC records, of one job when `job_id` is not empty.
    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn list_pvc_progress(
        &self,
        caller: &Caller,
        job_id: &str,
        where_: &str,
        sort: &str,
        page_size: i32,
        at: PageAt<'_>,
    ) -> Result<Page<PvcProgress>> {
        caller.principal.require(Permission::Read)?;
        let scope = if job_id.is_empty() {
            None
        } else {
            let job_id = ObjectId::parse("job_id", job_id)?;
            Some(crate::domain::pvc::fields::of_job(&job_id))
        };
        let query = ListQuery::<PvcProgress>::parse(
            where_,
            sort,
            page_size,
            at,
            self.max_page_size,
            scope,
        )?;
        self.store.list_pvcs(&query).await
    }
}

impl App {
    /// WatchJob: the job's snapshot (or the changes since `resume_token`), SYNCED, then every change.
    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn watch_job(&self, caller: &Caller, id: &str, resume_token: &str) -> Result<Events> {
        caller.principal.require(Permission::Read)?;
        let id = ObjectId::parse("job id", id)?;
        let permit = self.keys.open_stream(&caller.principal)?;
        let events = self.hub.watch_job(id, resume_token).await?;
        Ok(self.guard(caller, permit, events))
    }

    /// WatchJobs: every job matching `where_`, with the same guarantees.
    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn watch_jobs(
        &self,
        caller: &Caller,
        where_: &str,
        resume_token: &str,
    ) -> Result<Events> {
        caller.principal.require(Permission::Read)?;
        let filter = crate::domain::query::parse_where::<Job>(where_)?;
        let permit = self.keys.open_stream(&caller.principal)?;
        let events = self.hub.watch_jobs(filter, where_, resume_token).await?;
        Ok(self.guard(caller, permit, events))
    }

    /// A stream opened with a key ends (UNAUTHENTICATED) within a second or two of the key's
    /// revocation; without keys, the stream is passed through untouched. Counted while open.
    fn guard(
        &self,
        caller: &Caller,
        permit: Option<crate::auth::StreamPermit>,
        events: EventRx,
    ) -> Events {
        let open = self.metrics.open_stream(caller.transport);
        let events = if caller.principal == Principal::Anyone {
            events
        } else {
            self.revocable(caller, permit, events)
        };
        Events {
            events,
            _open: open,
        }
    }

    /// `events`, ended with UNAUTHENTICATED once the caller's key is revoked.
    fn revocable(
        &self,
        caller: &Caller,
        permit: Option<crate::auth::StreamPermit>,
        mut events: EventRx,
    ) -> EventRx {
        let (tx, rx) = mpsc::channel(4);
        let (keys, principal) = (self.keys.clone(), caller.principal.clone());
        tokio::spawn(async move {
            // Held while the stream is open: the key's count of open streams.
            let _permit = permit;
            let mut check = tokio::time::interval(KEY_CHECK_EVERY);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => if tx.send(event).await.is_err() { return },
                        None => return,
                    },
                    _ = check.tick() => if !keys.still_valid(&principal) {
                        let _ = tx.send(Err(Error::Unauthenticated(
                            "the API key of this stream was revoked".into(),
                        ))).await;
                        return;
                    },
                    () = tx.closed() => return,
                }
            }
        });
        EventRx::relayed(rx)
    }
}

/// How often an open watch stream re-checks its key (keys are reloaded every second).
const KEY_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn job_not_found(id: &ObjectId) -> Error {
    Error::NotFound(format!("job {id} not found"))
}
