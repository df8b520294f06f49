//! The application layer: one method per operation, called by every transport, so that each rule
//! exists once. Parses ids and queries, then lets the store run the change through the domain.

use crate::domain::query::{CmpOp, Filter, ListQuery, PageAt, Value};
use crate::domain::{Job, JobChange, JobUpdate, NewJob, ObjectId, PvcProgress, PvcReport};
use crate::error::{Error, Result};
use crate::store::{Page, Store};
use crate::watch::{JobHub, WatchEvent};

/// A watch stream's events, as the hub produces them.
pub type Events = tokio::sync::mpsc::Receiver<Result<WatchEvent>>;

/// Who is calling, for activity lines ("Job cancelled by ...").
#[derive(Clone, Debug)]
pub struct Caller {
    pub description: String,
}

#[derive(Clone)]
pub struct App {
    store: Store,
    hub: JobHub,
    /// Largest page a list returns; larger requests are clamped to it.
    max_page_size: usize,
}

impl App {
    pub fn new(store: Store, hub: JobHub, max_page_size: usize) -> Self {
        App {
            store,
            hub,
            max_page_size,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    #[tracing::instrument(skip_all)]
    pub async fn create_job(&self, job: NewJob) -> Result<Job> {
        self.store.create_job(job).await
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_job(&self, id: &str) -> Result<Job> {
        let id = ObjectId::parse("job id", id)?;
        self.store
            .get_job(&id)
            .await?
            .ok_or_else(|| job_not_found(&id))
    }

    #[tracing::instrument(skip(self))]
    pub async fn list_jobs(
        &self,
        where_: &str,
        sort: &str,
        page_size: i32,
        at: PageAt<'_>,
    ) -> Result<Page<Job>> {
        let query = ListQuery::<Job>::parse(where_, sort, page_size, at, self.max_page_size, None)?;
        self.store.list_jobs(&query).await
    }

    #[tracing::instrument(skip(self, update))]
    pub async fn update_job(&self, id: &str, update: JobUpdate, etag: &str) -> Result<Job> {
        let id = ObjectId::parse("job.id", id)?;
        self.store
            .change_job(id, non_empty(etag), JobChange::Update(update))
            .await
    }

    #[tracing::instrument(skip(self))]
    pub async fn delete_job(&self, id: &str, etag: &str) -> Result<Job> {
        let id = ObjectId::parse("job id", id)?;
        self.store.delete_job(id, non_empty(etag)).await
    }

    /// Cancels the job; with `etag`, only if the job is still at that etag.
    #[tracing::instrument(skip(self))]
    pub async fn cancel_job(&self, id: &str, caller: &Caller, etag: Option<&str>) -> Result<Job> {
        let id = ObjectId::parse("job id", id)?;
        let change = JobChange::Cancel {
            by: caller.description.clone(),
        };
        self.store
            .change_job(id, etag.map(str::to_string), change)
            .await
    }

    #[tracing::instrument(skip_all, fields(job_id = %report.job_id))]
    pub async fn report_pvc_progress(&self, report: PvcReport) -> Result<PvcProgress> {
        report.validate()?;
        Ok(self.store.report_pvc(report).await?.pvc)
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_pvc_progress(&self, id: &str) -> Result<PvcProgress> {
        let id = ObjectId::parse("PVC progress id", id)?;
        self.store
            .get_pvc(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("PVC progress record {id} not found")))
    }

    /// Lists PVC records, of one job when `job_id` is not empty.
    #[tracing::instrument(skip(self))]
    pub async fn list_pvc_progress(
        &self,
        job_id: &str,
        where_: &str,
        sort: &str,
        page_size: i32,
        at: PageAt<'_>,
    ) -> Result<Page<PvcProgress>> {
        let scope = if job_id.is_empty() {
            None
        } else {
            let job_id = ObjectId::parse("job_id", job_id)?;
            Some(Filter::Compare {
                column: "job_id",
                op: CmpOp::Eq,
                value: Value::Text(job_id.to_string()),
            })
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
    #[tracing::instrument(skip(self))]
    pub async fn watch_job(&self, id: &str, resume_token: &str) -> Result<Events> {
        let id = ObjectId::parse("job id", id)?;
        self.hub.watch_job(id, resume_token).await
    }

    /// WatchJobs: every job matching `where_`, with the same guarantees.
    #[tracing::instrument(skip(self))]
    pub async fn watch_jobs(&self, where_: &str, resume_token: &str) -> Result<Events> {
        let filter = crate::domain::query::parse_where::<Job>(where_)?;
        self.hub.watch_jobs(filter, resume_token).await
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn job_not_found(id: &ObjectId) -> Error {
    Error::NotFound(format!("job {id} not found"))
}
