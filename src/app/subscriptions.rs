//! The operations of webhook subscriptions: admin only, since a subscription's URL and secret
//! say where job data goes and how to forge it.

use crate::app::{App, Caller};
use crate::auth::Permission;
use crate::domain::subscription::{Attempt, NewSubscription, Status, Subscription};
use crate::domain::{ObjectId, now_micros};
use crate::error::{Error, Result};

/// Most attempts ListDeliveries answers.
pub const MAX_ATTEMPTS_LISTED: usize = 100;

impl App {
    /// Creates a subscription starting at the newest change; the answer carries its secret.
    #[tracing::instrument(skip_all, fields(key = caller.key_name()))]
    pub async fn create_subscription(
        &self,
        caller: &Caller,
        new: NewSubscription,
    ) -> Result<Subscription> {
        caller.principal.require(Permission::Subscriptions)?;
        let target = new.validate()?;
        crate::webhook::target::resolve(&target, self.webhooks.allow_private).await?;
        let subscription = Subscription {
            id: ObjectId::generate(),
            url: new.url,
            where_: new.where_,
            events: new.events,
            secret: crate::webhook::sign::new_secret(),
            created: now_micros(),
            cursor: 0,
            status: Status::Active,
            failing_since: None,
            last_error: String::new(),
            delivered: 0,
        };
        let created = self.store.create_subscription(subscription).await?;
        self.webhook_wakeup.notify_one();
        Ok(created)
    }

    /// One subscription, its secret left out.
    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn get_subscription(&self, caller: &Caller, id: &str) -> Result<Subscription> {
        caller.principal.require(Permission::Subscriptions)?;
        let id = ObjectId::parse("subscription id", id)?;
        let found = self.store.get_subscription(&id).await?;
        found.map(without_secret).ok_or_else(|| not_found(&id))
    }

    /// Every subscription, oldest first, their secrets left out.
    #[tracing::instrument(skip_all, fields(key = caller.key_name()))]
    pub async fn list_subscriptions(&self, caller: &Caller) -> Result<Vec<Subscription>> {
        caller.principal.require(Permission::Subscriptions)?;
        let all = self.store.list_subscriptions().await?;
        Ok(all.into_iter().map(without_secret).collect())
    }

    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn delete_subscription(&self, caller: &Caller, id: &str) -> Result<()> {
        caller.principal.require(Permission::Subscriptions)?;
        let id = ObjectId::parse("subscription id", id)?;
        if self.store.delete_subscription(&id).await? {
            Ok(())
        } else {
            Err(not_found(&id))
        }
    }

    /// The newest attempts of one subscription (at most `limit`, 0 meaning the most).
    #[tracing::instrument(skip(self, caller), fields(key = caller.key_name()))]
    pub async fn list_deliveries(
        &self,
        caller: &Caller,
        id: &str,
        limit: i32,
    ) -> Result<Vec<Attempt>> {
        caller.principal.require(Permission::Subscriptions)?;
        let id = ObjectId::parse("subscription id", id)?;
        if limit < 0 {
            return Err(Error::invalid("page_size must not be negative"));
        }
        if self.store.get_subscription(&id).await?.is_none() {
            return Err(not_found(&id));
        }
        let limit = match limit as usize {
            0 => MAX_ATTEMPTS_LISTED,
            n => n.min(MAX_ATTEMPTS_LISTED),
        };
        self.store.list_attempts(&id, limit).await
    }
}

fn without_secret(subscription: Subscription) -> Subscription {
    Subscription {
        secret: String::new(),
        ..subscription
    }
}

fn not_found(id: &ObjectId) -> Error {
    Error::NotFound(format!("subscription {id} not found"))
}
