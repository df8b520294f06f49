//! One subscription's delivery, on the replica that holds its lease: reads the change log after
//! the subscription's cursor, POSTs each change it wants, in commit order, each until the
//! receiver takes it (2xx) or refuses it (a 4xx other than 408/429, or a redirect), and records
//! its progress through the [`Ledger`]. One worker per subscription, so one slow or dead
//! receiver never delays another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::Instrument;

use super::fan::Wanted;
use super::http::{Answer, Client};
use super::{Ledger, Render, WebhookConfig};
use crate::domain::query::Filter;
use crate::domain::subscription::{
    Attempt, Outcome, Progress, Status, Subscription, Target, delivery_id, event_type, wants,
};
use crate::domain::{Change, Job, now_micros};
use crate::store::Store;

/// Changes read from the log at a time.
const PAGE: u32 = 256;
/// The first retry waits about this long; each next one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How often a FAILING subscription is tried again.
const FAILING_RETRY: Duration = Duration::from_secs(3600);
/// How often the cursor of a subscription that wants none of the changes is recorded.
const RECORD_CURSOR_EVERY: Duration = Duration::from_secs(5);
/// How long a worker waits for the feed before looking at the log again anyway.
const IDLE_LOOK: Duration = Duration::from_secs(1);

pub(super) struct Worker {
    /// The wanted changes of the live feed, once caught up.
    pub fan: Arc<super::fan::Fan>,
    /// True once the replica stops: the worker ends after its current attempt.
    pub stopped: tokio::sync::watch::Receiver<bool>,
    pub store: Store,
    /// Where the store is called from ([`super::lane::Home`]).
    pub home: super::lane::Home,
    pub config: WebhookConfig,
    pub render: Render,
    pub ledger: Arc<Ledger>,
    pub subscription: Subscription,
}

impl Worker {
    /// Delivers until aborted (the lease lost, the subscription deleted, shutdown).
    pub async fn run(self) {
        let s = &self.subscription;
        let (filter, target) = match (
            crate::domain::query::parse_where::<Job>(&s.where_),
            Target::parse(&s.url),
        ) {
            (Ok(filter), Ok(target)) => (filter, target),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(subscription = %s.id, error = %e, "a stored subscription does not parse");
                return;
            }
        };
        let mut inbox = self.fan.register(s.events, filter.clone());
        let mut client = Client::default();
        let mut recorded = Instant::now();
        let mut state = progress_of(s);
        loop {
            // Behind (a start, a lag, a long delivery): from the log, a page at a time. What
            // the fan misses from here on is flagged, so the log is read again for it.
            inbox.resync();
            if !self
                .catch_up(&mut client, &target, &filter, &mut state, &mut recorded)
                .await
            {
                return;
            }
            // Caught up: only the changes it wants, from the fan, until it lags.
            while !inbox.lagged() {
                let mut stopped = self.stopped.clone();
                let next = tokio::select! {
                    next = tokio::time::timeout(IDLE_LOOK, inbox.recv()) => next,
                    _ = stopped.changed() => return,
                };
                match next {
                    Ok(Some(wanted)) if wanted.change.seq <= state.cursor => {}
                    // A wanted change before this one was missed: the log has it.
                    Ok(Some(_)) if inbox.lagged() => break,
                    Ok(Some(wanted)) => {
                        if !self
                            .handle(
                                &mut client,
                                &target,
                                &filter,
                                &wanted,
                                &mut state,
                                &mut recorded,
                            )
                            .await
                        {
                            return;
                        }
                    }
                    Ok(None) => break,
                    // Quiet: every change up to the fan's head was looked at; the cursor moves.
                    Err(_) => {
                        if let Some(passed) = inbox.passed()
                            && passed > state.cursor
                        {
                            state.cursor = passed;
                            if recorded.elapsed() >= RECORD_CURSOR_EVERY {
                                self.ledger.progress(&s.id, &state);
                                state.delivered = 0;
                                recorded = Instant::now();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads the log after the cursor, a page at a time, until it is empty; false once the
    /// replica stops.
    async fn catch_up(
        &self,
        client: &mut Client,
        target: &Target,
        filter: &Filter<Job>,
        state: &mut Progress,
        recorded: &mut Instant,
    ) -> bool {
        let s = &self.subscription;
        loop {
            let (store, cursor) = (self.store.clone(), state.cursor);
            let changes = match self
                .home
                .call(async move { store.changes_after(cursor, None, PAGE).await })
                .await
            {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::warn!(subscription = %s.id, error = %e, "reading the change log failed; trying again");
                    tokio::time::sleep(IDLE_LOOK).await;
                    continue;
                }
            };
            if let Some(first) = changes.first()
                && first.seq > state.cursor + 1
            {
                tracing::error!(subscription = %s.id, cursor = state.cursor, next = first.seq,
                    "changes after this subscription's cursor are no longer in the log");
            }
            if changes.is_empty() {
                return true;
            }
            for change in changes {
                let wanted = Wanted::new(Arc::new(change));
                if !self
                    .handle(client, target, filter, &wanted, state, recorded)
                    .await
                {
                    return false;
                }
            }
        }
    }

    /// Delivers `change` if the subscription wants it, then moves the cursor past it; false
    /// once the replica stops (the change is then not done unless it was delivered).
    async fn handle(
        &self,
        client: &mut Client,
        target: &Target,
        filter: &Filter<Job>,
        candidate: &Wanted,
        state: &mut Progress,
        recorded: &mut Instant,
    ) -> bool {
        let change = &candidate.change;
        let wanted = wants(self.subscription.events, filter, change);
        if wanted && !self.deliver(client, target, candidate, state).await {
            return false;
        }
        state.cursor = change.seq;
        // A change passed over needs no record at once: after a crash it is only read and
        // passed over again. The cursor still moves every few seconds, for pruning.
        if wanted || recorded.elapsed() >= RECORD_CURSOR_EVERY {
            self.ledger.progress(&self.subscription.id, state);
            state.delivered = 0;
            *recorded = Instant::now();
        }
        !*self.stopped.borrow()
    }

    /// Delivers one change: attempts until the receiver takes or refuses it (true), or the
    /// replica stops between attempts (false).
    async fn deliver(
        &self,
        client: &mut Client,
        target: &Target,
        wanted: &Wanted,
        state: &mut Progress,
    ) -> bool {
        let s = &self.subscription;
        let change = &wanted.change;
        let id = delivery_id(&s.id, change.seq);
        let body = wanted.body(|change| body(self.render, change));
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let at = now_micros();
            let (outcome, error, retry_after) = self
                .attempt(client, target, change, &id, attempt, &body)
                .await;
            match outcome {
                Outcome::Delivered | Outcome::Refused => {
                    if outcome == Outcome::Delivered {
                        state.delivered += 1;
                    } else {
                        tracing::warn!(subscription = %s.id, delivery = %id, %error, "the receiver refused a delivery; passing over it");
                    }
                    state.status = Status::Active;
                    state.failing_since = None;
                    state.last_error = if outcome == Outcome::Refused {
                        error
                    } else {
                        String::new()
                    };
                    return true;
                }
                Outcome::Retrying => {
                    let since = *state.failing_since.get_or_insert(at);
                    let failing_for = Duration::from_micros((at - since).max(0) as u64);
                    state.status = if failing_for > self.config.retry_for {
                        Status::Failing
                    } else {
                        Status::Retrying
                    };
                    state.last_error = error;
                    self.ledger.progress(&s.id, state);
                    let wait = match (state.status, retry_after) {
                        (Status::Failing, _) => FAILING_RETRY,
                        (_, Some(asked)) => asked.min(MAX_BACKOFF),
                        _ => jitter(backoff),
                    };
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let mut stopped = self.stopped.clone();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stopped.changed() => return false,
                    }
                }
            }
        }
    }
}

impl Worker {
    /// One attempt, signed afresh, recorded in the ledger; answers its outcome, the error and
    /// the wait the receiver asked for.
    async fn attempt(
        &self,
        client: &mut Client,
        target: &Target,
        change: &Change,
        id: &str,
        attempt: u32,
        body: &Bytes,
    ) -> (Outcome, String, Option<Duration>) {
        let s = &self.subscription;
        let at = now_micros();
        let timestamp = at / 1_000_000;
        let mut headers = vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                super::sign::signature(&s.secret, id, timestamp, body),
            ),
        ];
        let span = tracing::info_span!(
            "webhook.deliver",
            otel.kind = "client",
            subscription = %s.id,
            delivery = id,
            attempt
        );
        crate::telemetry::inject(&span, &mut headers);
        let started = Instant::now();
        let answer = client
            .post(
                target,
                self.config.allow_private,
                &headers,
                body.clone(),
                self.config.timeout,
            )
            .instrument(span)
            .await;
        let (outcome, code, error, retry_after) = judge(&answer);
        self.ledger.attempt(Attempt {
            subscription_id: s.id.clone(),
            position: change.seq,
            attempt,
            at,
            job_id: change.job.id.to_string(),
            type_: event_type(change.kind).to_string(),
            status_code: code,
            error: error.clone(),
            micros: started.elapsed().as_micros() as u64,
            outcome,
        });
        (outcome, error, retry_after)
    }
}

/// A change's webhook body: `{"type", "timestamp" (its commit), "data"}`.
fn body(render: Render, change: &Change) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "type": event_type(change.kind),
            "timestamp": rfc3339(change.at),
            "data": render(change),
        }))
        .unwrap_or_default(),
    )
}

/// A stored subscription's progress, where its worker starts.
fn progress_of(s: &Subscription) -> Progress {
    Progress {
        cursor: s.cursor,
        delivered: 0,
        status: s.status,
        failing_since: s.failing_since,
        last_error: s.last_error.clone(),
    }
}

/// What an answer means: outcome, status code, error text, the wait it asked for.
fn judge(answer: &Answer) -> (Outcome, u16, String, Option<Duration>) {
    match answer {
        Answer::Status { code, .. } if (200..300).contains(code) => {
            (Outcome::Delivered, *code, String::new(), None)
        }
        Answer::Status { code, retry_after } if *code == 408 || *code == 429 || *code >= 500 => (
            Outcome::Retrying,
            *code,
            format!("the receiver answered {code}"),
            *retry_after,
        ),
        Answer::Status { code, .. } if (300..400).contains(code) => (
            Outcome::Refused,
            *code,
            format!("the receiver answered {code}: redirects are not followed"),
            None,
        ),
        Answer::Status { code, .. } => (
            Outcome::Refused,
            *code,
            format!("the receiver answered {code}"),
            None,
        ),
        Answer::Failed(why) => (Outcome::Retrying, 0, why.clone(), None),
    }
}

/// A wait between half of `d` and all of it, at random: receivers that failed together do
/// not get their retries together.
fn jitter(d: Duration) -> Duration {
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    let fraction = f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX);
    d.mul_f64(0.5 + fraction / 2.0)
}

/// µs since the epoch as RFC 3339 with microseconds, UTC.
fn rfc3339(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{sub:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_as_the_convention_says() {
        let status = |code| Answer::Status {
            code,
            retry_after: None,
        };
        let outcome = |a: &Answer| judge(a).0;
        assert_eq!(outcome(&status(200)), Outcome::Delivered);
        assert_eq!(outcome(&status(204)), Outcome::Delivered);
        for retried in [408, 429, 500, 502, 503] {
            assert_eq!(outcome(&status(retried)), Outcome::Retrying, "{retried}");
        }
        for refused in [301, 302, 400, 401, 404, 410] {
            assert_eq!(outcome(&status(refused)), Outcome::Refused, "{refused}");
        }
        assert_eq!(outcome(&Answer::Failed("reset".into())), Outcome::Retrying);
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_796_159_300_123_456),
            "2026-12-01T21:08:20.123456Z"
        );
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(8));
            assert!(
                j >= Duration::from_secs(4) && j <= Duration::from_secs(8),
                "{j:?}"
            );
        }
    }
}
