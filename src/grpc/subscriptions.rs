//! `jobtrack.v1.SubscriptionService` over the application layer, through the same call wrapper
//! (log line, metrics, status mapping) as the job service.

use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::{GrpcJobService, caller, key_of};
use crate::domain::subscription::{
    Attempt, Events, NewSubscription, Status as State, Subscription,
};
use crate::error::Error;
use crate::interface::Rpc;
use crate::pb;
use crate::pb::subscription_service_server::SubscriptionService;

fn events_from_pb(value: i32) -> Result<Events, Error> {
    match pb::SubscriptionEvents::try_from(value) {
        Ok(pb::SubscriptionEvents::Unspecified | pb::SubscriptionEvents::Terminal) => {
            Ok(Events::Terminal)
        }
        Ok(pb::SubscriptionEvents::State) => Ok(Events::State),
        Ok(pb::SubscriptionEvents::All) => Ok(Events::All),
        Err(_) => Err(Error::invalid(format!(
            "events: {value} is not a SubscriptionEvents value (TERMINAL, STATE or ALL)"
        ))),
    }
}

fn subscription_to_pb(s: &Subscription) -> pb::Subscription {
    pb::Subscription {
        id: s.id.to_string(),
        url: s.url.clone(),
        r#where: s.where_.clone(),
        events: match s.events {
            Events::Terminal => pb::SubscriptionEvents::Terminal,
            Events::State => pb::SubscriptionEvents::State,
            Events::All => pb::SubscriptionEvents::All,
        } as i32,
        secret: s.secret.clone(),
        created: Some(timestamp(s.created)),
        status: match s.status {
            State::Active => pb::SubscriptionStatus::Active,
            State::Retrying => pb::SubscriptionStatus::Retrying,
            State::Failing => pb::SubscriptionStatus::Failing,
        } as i32,
        failing_since: s.failing_since.map(timestamp),
        last_error: s.last_error.clone(),
        cursor: s.cursor,
        delivered: s.delivered,
    }
}

fn attempt_to_pb(a: &Attempt) -> pb::Delivery {
    pb::Delivery {
        id: crate::domain::subscription::delivery_id(&a.subscription_id, a.position),
        position: a.position,
        job_id: a.job_id.clone(),
        r#type: a.type_.clone(),
        attempt: a.attempt,
        time: Some(timestamp(a.at)),
        status_code: u32::from(a.status_code),
        error: a.error.clone(),
        duration_micros: a.micros,
        outcome: a.outcome.as_str().to_string(),
    }
}

#[tonic::async_trait]
impl SubscriptionService for GrpcJobService {
    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let caller = caller(&self.app, &request);
        self.call(Rpc::CreateSubscription, key_of(&caller), async {
            let r = request.into_inner();
            let new = NewSubscription {
                url: r.url,
                where_: r.r#where,
                events: events_from_pb(r.events)?,
            };
            let created = self.app.create_subscription(&caller?, new).await?;
            Ok(subscription_to_pb(&created))
        })
        .await
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let caller = caller(&self.app, &request);
        self.call(Rpc::GetSubscription, key_of(&caller), async {
            let id = &request.get_ref().id;
            Ok(subscription_to_pb(
                &self.app.get_subscription(&caller?, id).await?,
            ))
        })
        .await
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = caller(&self.app, &request);
        self.call(Rpc::ListSubscriptions, key_of(&caller), async {
            let all = self.app.list_subscriptions(&caller?).await?;
            Ok(pb::ListSubscriptionsResponse {
                subscriptions: all.iter().map(subscription_to_pb).collect(),
            })
        })
        .await
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&self.app, &request);
        self.call(Rpc::DeleteSubscription, key_of(&caller), async {
            self.app
                .delete_subscription(&caller?, &request.get_ref().id)
                .await
        })
        .await
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = caller(&self.app, &request);
        self.call(Rpc::ListDeliveries, key_of(&caller), async {
            let r = request.get_ref();
            let attempts = self
                .app
                .list_deliveries(&caller?, &r.subscription_id, r.page_size)
                .await?;
            Ok(pb::ListDeliveriesResponse {
                deliveries: attempts.iter().map(attempt_to_pb).collect(),
            })
        })
        .await
    }
}
