//! Webhooks, with a real HTTP receiver in the test that checks every request's signature exactly
//! as the Standard Webhooks convention says: what each kind of subscription gets, retries of a
//! receiver that fails and recovers, a receiver that hangs, refused targets, who may manage
//! subscriptions, and a server SIGKILLed mid-delivery whose successor delivers everything.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use jobtrack::auth::Role;
use jobtrack::pb;
use jobtrack::pb::subscription_service_client::SubscriptionServiceClient;
use serde_json::Value;
use tokio::sync::Notify;
use tonic::Code;
use tonic::transport::Channel;

use crate::auth::{app_with_keys_and, with_key};
use crate::helpers::*;
use crate::http::request;

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    Status(u16),
    /// With `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Never answers.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub id: String,
    timestamp: String,
    signature: String,
    /// The W3C trace context the request carried, if any.
    pub traceparent: String,
    body: Vec<u8>,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn type_(&self) -> String {
        self.json()["type"].as_str().expect("a type").to_string()
    }

    /// Checks the signature as a receiver following standardwebhooks.com does: HMAC-SHA256,
    /// keyed with the base64-decoded secret after `whsec_`, over `id.timestamp.body`, compared
    /// with each `v1,` signature of the header; the timestamp within five minutes of now.
    pub(crate) fn verify(&self, secret: &str) {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("a base64 secret");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("a key");
        mac.update(format!("{}.{}.", self.id, self.timestamp).as_bytes());
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert!(
            self.signature.split(' ').any(|s| s == expected),
            "signature {:?} is not {expected:?}",
            self.signature
        );
        let sent: i64 = self.timestamp.parse().expect("a unix timestamp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64;
        assert!((now - sent).abs() < 300, "timestamp {sent} is not now");
    }
}

/// A webhook receiver on a free loopback port: records every request, answers each by the next
/// scripted [`Answer`] (200 when the script is empty).
#[derive(Clone)]
pub(crate) struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    arrived: Arc<Notify>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receiver = Receiver {
            addr: listener.local_addr().expect("addr"),
            received: Arc::default(),
            script: Arc::default(),
            arrived: Arc::default(),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let receiver = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let receiver = receiver.clone();
                        async move { receiver.answer(request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hooks/jobtrack", self.addr)
    }

    fn then(&self, answers: &[Answer]) {
        self.script.lock().unwrap().extend(answers.iter().cloned());
    }

    async fn answer(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(request.method(), hyper::Method::POST);
        assert_eq!(request.uri().path(), "/hooks/jobtrack");
        assert_eq!(header("content-type"), "application/json");
        let (id, timestamp, signature, traceparent) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            header("traceparent"),
        );
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        self.received.lock().unwrap().push(Received {
            id,
            timestamp,
            signature,
            traceparent,
            body,
        });
        self.arrived.notify_waiters();
        let next = self.script.lock().unwrap().pop_front();
        let response = hyper::Response::builder();
        let response = match next.unwrap_or(Answer::Status(200)) {
            Answer::Status(code) => response.status(code),
            Answer::RetryAfter(code, secs) => response
                .status(code)
                .header("retry-after", secs.to_string()),
            Answer::Hang => std::future::pending().await,
        };
        Ok(response.body(Full::new(Bytes::new())).expect("a response"))
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived; answers them all.
    pub(crate) async fn wait_for(&self, n: usize, what: &str) -> Vec<Received> {
        within(what, async {
            loop {
                let arrived = self.arrived.notified();
                let received = self.received();
                if received.len() >= n {
                    return received;
                }
                arrived.await;
            }
        })
        .await
    }
}

pub(crate) fn subscriptions(app: &TestApp) -> SubscriptionServiceClient<Channel> {
    subscriptions_at(app.addr)
}

fn subscriptions_at(addr: SocketAddr) -> SubscriptionServiceClient<Channel> {
    SubscriptionServiceClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .expect("a valid URL")
            .connect_lazy(),
    )
}

pub(crate) async fn subscribe(
    app: &TestApp,
    url: &str,
    where_: &str,
    events: pb::SubscriptionEvents,
) -> pb::Subscription {
    subscribe_at(app.addr, url, where_, events).await
}

/// Creates a subscription on the server at `addr`.
pub(crate) async fn subscribe_at(
    addr: SocketAddr,
    url: &str,
    where_: &str,
    events: pb::SubscriptionEvents,
) -> pb::Subscription {
    subscriptions_at(addr)
        .create_subscription(pb::CreateSubscriptionRequest {
            url: url.to_string(),
            r#where: where_.to_string(),
            events: events as i32,
        })
        .await
        .expect("create_subscription")
        .into_inner()
}

async fn deliveries(app: &TestApp, id: &str) -> Vec<pb::Delivery> {
    subscriptions(app)
        .list_deliveries(pb::ListDeliveriesRequest {
            subscription_id: id.to_string(),
            page_size: 0,
        })
        .await
        .expect("list_deliveries")
        .into_inner()
        .deliveries
}

async fn get_subscription(app: &TestApp, id: &str) -> pb::Subscription {
    subscriptions(app)
        .get_subscription(pb::GetSubscriptionRequest { id: id.to_string() })
        .await
        .expect("get_subscription")
        .into_inner()
}

async fn allowing_private() -> TestApp {
    spawn_app_with(|c| c.webhooks.allow_private = true).await
}

/// The request's type and job id and state.
fn summary(r: &Received) -> (String, String, String) {
    let json = r.json();
    let job = &json["data"]["job"];
    (
        r.type_(),
        job["_id"].as_str().expect("_id").to_string(),
        job["state"].as_str().expect("state").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_subscription_gets_the_changes_it_asks_for_signed_and_in_commit_order() {
    let app = allowing_private().await;
    let (terminal, state, all) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let copies = r#"{"type": "K8S_COPY"}"#;
    let subs = [
        (
            &terminal,
            subscribe(
                &app,
                &terminal.url(),
                copies,
                pb::SubscriptionEvents::Terminal,
            )
            .await,
        ),
        (
            &state,
            subscribe(&app, &state.url(), copies, pb::SubscriptionEvents::State).await,
        ),
        (
            &all,
            subscribe(&app, &all.url(), copies, pb::SubscriptionEvents::All).await,
        ),
    ];
    // A job the filter does not match: no subscription hears of it.
    let snap = app.create(job(JobType::K8sSnap, JobState::Running)).await;
    app.set_state(&snap.id, JobState::Completed)
        .await
        .expect("complete");

    let copy = app.create(job(JobType::K8sCopy, JobState::Pending)).await;
    app.set_state(&copy.id, JobState::Running)
        .await
        .expect("run");
    app.set_message(&copy.id, "Transferring data").await;
    app.report(pvc(&copy.id, "data", OpType::K8sCopy, PvcState::Active))
        .await
        .expect("report");
    app.set_state(&copy.id, JobState::Completed)
        .await
        .expect("complete");
    // The last change each subscription wants: what came before it is all it gets.
    let sentinel = app.create(job(JobType::K8sCopy, JobState::Completed)).await;

    let c = |t: &str, id: &str, s: &str| (t.to_string(), id.to_string(), s.to_string());
    let expected = [
        vec![
            c("job.updated", &copy.id, "COMPLETED"),
            c("job.created", &sentinel.id, "COMPLETED"),
        ],
        vec![
            c("job.created", &copy.id, "PENDING"),
            c("job.updated", &copy.id, "RUNNING"),
            c("job.updated", &copy.id, "COMPLETED"),
            c("job.created", &sentinel.id, "COMPLETED"),
        ],
        vec![
            c("job.created", &copy.id, "PENDING"),
            c("job.updated", &copy.id, "RUNNING"),
            c("job.updated", &copy.id, "RUNNING"),
            c("job.pvc_updated", &copy.id, "RUNNING"),
            c("job.updated", &copy.id, "COMPLETED"),
            c("job.created", &sentinel.id, "COMPLETED"),
        ],
    ];
    for ((receiver, sub), expected) in subs.iter().zip(expected) {
        assert!(sub.secret.starts_with("whsec_"), "{sub:?}");
        let got = receiver
            .wait_for(expected.len(), "every wanted change")
            .await;
        let summaries: Vec<_> = got.iter().map(summary).collect();
        assert_eq!(summaries, expected, "subscription {:?}", sub.events);
        for r in &got {
            r.verify(&sub.secret);
            let position: u64 =
                r.id.rsplit('_')
                    .next()
                    .unwrap()
                    .parse()
                    .expect("a position");
            assert_eq!(r.id, format!("msg_{}_{position}", sub.id));
            let json = r.json();
            assert!(json["timestamp"].as_str().unwrap().ends_with('Z'), "{json}");
        }
        let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(ids, unique, "no repeats from a healthy receiver");
    }
    // The job is the documented REST item, exactly as GET /api/v1/jobs/<id> shows it then.
    let last = all.received()[4].json();
    let rest = request(
        app.addr,
        "GET",
        &format!("/api/v1/jobs/{}", copy.id),
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(last["data"]["job"], rest);
    let pvc_change = all.received()[3].json();
    assert_eq!(pvc_change["data"]["pvc"]["name"], "data");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_fails_is_retried_with_the_same_id_and_one_that_refuses_is_passed_over() {
    let app = allowing_private().await;
    let receiver = Receiver::start().await;
    receiver.then(&[
        Answer::RetryAfter(503, 1),
        Answer::Status(500),
        Answer::Status(200),
        Answer::Status(400),
    ]);
    let sub = subscribe(&app, &receiver.url(), "", pb::SubscriptionEvents::All).await;
    let first = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    receiver.wait_for(1, "the first attempt").await;
    let retrying = eventually("the subscription to say it is retrying", || async {
        let s = get_subscription(&app, &sub.id).await;
        (s.status == pb::SubscriptionStatus::Retrying as i32).then_some(s)
    })
    .await;
    assert!(retrying.last_error.contains("503"), "{retrying:?}");
    assert!(retrying.failing_since.is_some());
    assert_eq!(retrying.secret, "", "the secret is shown once");

    let second = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let third = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    let got = receiver.wait_for(5, "the retries, then the rest").await;
    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids[0], ids[1], "a retry has the id of the first attempt");
    assert_eq!(ids[1], ids[2]);
    assert_ne!(ids[2], ids[3]);
    assert_ne!(ids[3], ids[4]);
    let jobs: Vec<String> = got.iter().map(|r| summary(r).1).collect();
    assert_eq!(
        jobs,
        [&first.id, &first.id, &first.id, &second.id, &third.id].map(String::clone),
        "the refused change (the second job's) is not retried; the third follows"
    );
    for r in &got {
        r.verify(&sub.secret);
    }
    assert_eq!(got[0].body, got[2].body, "the same body on every attempt");
    let active = eventually("the subscription to be active again", || async {
        let s = get_subscription(&app, &sub.id).await;
        (s.status == pb::SubscriptionStatus::Active as i32 && s.delivered == 2).then_some(s)
    })
    .await;
    assert_eq!(active.failing_since, None);
    let attempts = eventually("every attempt recorded", || async {
        let d = deliveries(&app, &sub.id).await;
        (d.len() == 5).then_some(d)
    })
    .await;
    let seen: Vec<(u32, u32, &str)> = attempts
        .iter()
        .rev()
        .map(|d| (d.attempt, d.status_code, d.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, 503, "RETRYING"),
            (2, 500, "RETRYING"),
            (3, 200, "DELIVERED"),
            (1, 400, "REFUSED"),
            (1, 200, "DELIVERED"),
        ]
    );
    assert_eq!(attempts[4].id, ids[0]);
    assert_eq!(attempts[4].job_id, first.id);
    assert_eq!(attempts[4].r#type, "job.created");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_hangs_delays_no_other_subscription() {
    let app = spawn_app_with(|c| {
        c.webhooks.allow_private = true;
        c.webhooks.timeout = Duration::from_secs(600);
    })
    .await;
    let (hanging, healthy) = (Receiver::start().await, Receiver::start().await);
    hanging.then(&[Answer::Hang]);
    subscribe(&app, &hanging.url(), "", pb::SubscriptionEvents::All).await;
    subscribe(&app, &healthy.url(), "", pb::SubscriptionEvents::All).await;
    let first = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    hanging.wait_for(1, "the request that will hang").await;
    for n in 0..5 {
        app.set_message(&first.id, &format!("step {n}")).await;
    }
    let got = healthy
        .wait_for(6, "every change at the healthy receiver")
        .await;
    assert_eq!(got.len(), 6);
    assert_eq!(
        hanging.received().len(),
        1,
        "the hanging one is still on its first"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn targets_inside_the_network_and_bad_subscriptions_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let mut client = subscriptions(&app);
    let refused = [
        ("http://127.0.0.1:9/hook", "", 0, "--webhook-allow-private"),
        ("http://localhost:9/hook", "", 0, "--webhook-allow-private"),
        ("http://10.1.2.3/hook", "", 0, "--webhook-allow-private"),
        (
            "http://169.254.169.254/latest/meta-data",
            "",
            0,
            "--webhook-allow-private",
        ),
        ("http://[::1]:9/hook", "", 0, "--webhook-allow-private"),
        (
            "http://[::ffff:127.0.0.1]/",
            "",
            0,
            "--webhook-allow-private",
        ),
        ("ftp://hooks.example.com/", "", 0, "http"),
        ("file:///etc/passwd", "", 0, "http"),
        ("http://user:pw@hooks.example.com/", "", 0, "password"),
        (
            "https://93.184.215.14/",
            r#"{"state": "RUNNIN"}"#,
            0,
            "RUNNIN",
        ),
        ("https://93.184.215.14/", "{", 0, "where"),
        ("https://93.184.215.14/", "", 99, "events"),
    ];
    for (url, where_, events, says) in refused {
        let status = client
            .create_subscription(pb::CreateSubscriptionRequest {
                url: url.into(),
                r#where: where_.into(),
                events,
            })
            .await
            .expect_err(url);
        assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
        assert!(
            status.message().contains(says),
            "{url}: {}",
            status.message()
        );
    }
    for id in ["nope", "6B0F98FB7C9993AEF5000000"] {
        let status = client
            .get_subscription(pb::GetSubscriptionRequest { id: id.into() })
            .await
            .expect_err(id);
        assert_eq!(status.code(), Code::InvalidArgument, "{id}");
    }
    let status = client
        .delete_subscription(pb::DeleteSubscriptionRequest {
            id: "6b0f98fb7c9993aef5000000".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let listed = client
        .list_subscriptions(pb::ListSubscriptionsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert!(listed.subscriptions.is_empty(), "{listed:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_admins_manage_subscriptions_and_a_secret_is_shown_once() {
    let (app, keys) = app_with_keys_and(|c| c.webhooks.allow_private = true).await;
    let receiver = Receiver::start().await;
    let admin = keys.of(Role::Admin);
    let mut client = subscriptions(&app);
    let create = || pb::CreateSubscriptionRequest {
        url: receiver.url(),
        r#where: String::new(),
        events: 0,
    };
    let created = client
        .create_subscription(with_key(create(), Some(&admin)))
        .await
        .expect("admin creates")
        .into_inner();
    assert!(created.secret.starts_with("whsec_"));
    assert_eq!(
        created.events,
        pb::SubscriptionEvents::Terminal as i32,
        "the default"
    );
    let id = created.id.clone();
    for role in [Role::Viewer, Role::Operator, Role::Executor] {
        let key = keys.of(role);
        let k = Some(key.as_str());
        let codes = [
            client
                .create_subscription(with_key(create(), k))
                .await
                .err(),
            client
                .get_subscription(with_key(pb::GetSubscriptionRequest { id: id.clone() }, k))
                .await
                .err(),
            client
                .list_subscriptions(with_key(pb::ListSubscriptionsRequest {}, k))
                .await
                .err(),
            client
                .list_deliveries(with_key(
                    pb::ListDeliveriesRequest {
                        subscription_id: id.clone(),
                        page_size: 0,
                    },
                    k,
                ))
                .await
                .err(),
            client
                .delete_subscription(with_key(
                    pb::DeleteSubscriptionRequest { id: id.clone() },
                    k,
                ))
                .await
                .err(),
        ];
        for status in codes {
            let status = status.expect("refused");
            assert_eq!(status.code(), Code::PermissionDenied, "{role:?}");
            assert!(status.message().contains(role.as_str()), "{status:?}");
        }
    }
    let status = client
        .list_subscriptions(pb::ListSubscriptionsRequest {})
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);

    let listed = client
        .list_subscriptions(with_key(pb::ListSubscriptionsRequest {}, Some(&admin)))
        .await
        .expect("admin lists")
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 1, "the refused creates created nothing");
    assert_eq!(listed[0].url, receiver.url());
    assert_eq!(listed[0].secret, "", "never shown again");
    client
        .delete_subscription(with_key(
            pb::DeleteSubscriptionRequest { id: id.clone() },
            Some(&admin),
        ))
        .await
        .expect("admin deletes");
    let gone = client
        .get_subscription(with_key(pb::GetSubscriptionRequest { id }, Some(&admin)))
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    app.stop().await;
}

/// The binary, SIGKILLed while a receiver holds its request; a replica started on the same
/// database after it takes the subscription over once the dead one's lease runs out, sends the
/// interrupted delivery again (same id) and then every later change, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_delivery_is_taken_over_and_nothing_is_skipped() {
    let db = test_db().await;
    let (mut child, addr) = crate::durability::start_binary_with(
        &db.url,
        &["--webhook-allow-private", "--webhook-lease", "2s"],
    );
    let mut client = connect(addr).await;
    let receiver = Receiver::start().await;
    receiver.then(&[Answer::Hang]);
    let mut subs = SubscriptionServiceClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect_lazy(),
    );
    let sub = subs
        .create_subscription(pb::CreateSubscriptionRequest {
            url: receiver.url(),
            r#where: String::new(),
            events: pb::SubscriptionEvents::All as i32,
        })
        .await
        .expect("create")
        .into_inner();
    let created = client
        .create_job(pb::CreateJobRequest {
            job: Some(job(JobType::K8sCopy, JobState::Running)),
        })
        .await
        .expect("create")
        .into_inner();
    receiver.wait_for(1, "the delivery that will hang").await;
    let mut last = created.clone();
    for n in 0..10 {
        last = client
            .update_job(step_request(&created.id, n))
            .await
            .expect("update")
            .into_inner();
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let successor = spawn_app_on(&db.url, |c| c.webhooks.allow_private = true).await;
    let got = receiver
        .wait_for(12, "the interrupted delivery again, then the ten updates")
        .await;
    let first_id = got[0].id.clone();
    assert_eq!(got[1].id, first_id, "the interrupted delivery comes again");
    let mut ids: Vec<String> = got[1..].iter().map(|r| r.id.clone()).collect();
    ids.dedup();
    assert_eq!(
        ids.len(),
        11,
        "the create and ten updates, each once: {ids:?}"
    );
    let positions: Vec<u64> = ids
        .iter()
        .map(|id| id.rsplit('_').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[1] == w[0] + 1),
        "in commit order, none skipped: {positions:?}"
    );
    for r in &got {
        r.verify(&sub.secret);
    }
    assert_eq!(
        got.last().unwrap().json()["data"]["job"]["_etag"],
        last.etag
    );
    successor.stop().await;
}

/// ListDeliveries answers the newest 100 attempts, newest first, also after a restart: the
/// record is a ring of 100 per subscription that carries on where it was.
#[tokio::test(flavor = "multi_thread")]
async fn the_delivery_record_holds_the_newest_hundred_attempts_across_a_restart() {
    let db = test_db().await;
    let receiver = Receiver::start().await;
    let app = spawn_app_on(&db.url, |c| c.webhooks.allow_private = true).await;
    let sub = subscribe(&app, &receiver.url(), "", pb::SubscriptionEvents::All).await;
    let created = app.create(job(JobType::K8sCopy, JobState::Running)).await;
    for n in 0..79 {
        app.client()
            .update_job(step_request(&created.id, n))
            .await
            .expect("update");
    }
    receiver.wait_for(80, "the first 80 deliveries").await;
    // Graceful: what was delivered is recorded before the server ends.
    app.stop().await;

    let app = spawn_app_on(&db.url, |c| c.webhooks.allow_private = true).await;
    for n in 79..139 {
        app.client()
            .update_job(step_request(&created.id, n))
            .await
            .expect("update");
    }
    let got = receiver.wait_for(140, "all 140 deliveries").await;
    // Every request the receiver got is one attempt; the newest 100 of them, newest first.
    let position = |id: &str| -> u64 { id.rsplit('_').next().unwrap().parse().unwrap() };
    let expected: Vec<u64> = got
        .iter()
        .rev()
        .take(100)
        .map(|r| position(&r.id))
        .collect();
    let recorded = within("the newest attempt in the record", async {
        loop {
            let recorded = deliveries(&app, &sub.id).await;
            if recorded.first().map(|d| d.position) == expected.first().copied() {
                return recorded;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let positions: Vec<u64> = recorded.iter().map(|d| d.position).collect();
    assert_eq!(positions, expected);
    assert!(
        recorded
            .iter()
            .all(|d| d.outcome == "DELIVERED" && d.attempt == 1)
    );
    app.stop().await;
}
