//! `jobtrack subscriptions create|list|delete|deliveries`: webhook subscriptions over gRPC
//! (`JOBTRACK_KEY` must be an admin key on a server that requires keys).

use clap::{Subcommand, ValueEnum};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::ServerArg;
use super::client::{KeyHeader, channel, key_header, rpc_error};
use super::format::datetime;
use crate::pb;
use crate::pb::subscription_service_client::SubscriptionServiceClient;

type Client = SubscriptionServiceClient<InterceptedService<Channel, KeyHeader>>;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum EventsArg {
    /// The change that makes a job terminal.
    Terminal,
    /// Every change of a job's state, its creation included.
    State,
    /// Every change.
    All,
}

#[derive(Subcommand, Clone, Debug)]
pub enum SubscriptionsCommand {
    /// Create a subscription; prints its id and its secret (shown only this once).
    Create {
        /// Where to POST: http:// or https://.
        #[arg(long)]
        url: String,
        /// The jobs it is about, in the language of `jobs list --where`; default every job.
        #[arg(long = "where", default_value = "")]
        where_: String,
        /// Which of their changes it wants.
        #[arg(long, value_enum, default_value = "terminal")]
        events: EventsArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List the subscriptions with how their deliveries go.
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Delete a subscription.
    Delete {
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// The newest delivery attempts of a subscription, newest first.
    Deliveries {
        id: String,
        /// Attempts to show (at most 100).
        #[arg(long, default_value_t = 20)]
        limit: i32,
        #[command(flatten)]
        server: ServerArg,
    },
}

async fn connect(server: &str) -> Result<Client, String> {
    Ok(SubscriptionServiceClient::with_interceptor(
        channel(server).await?,
        key_header(),
    ))
}

pub(super) async fn run(command: SubscriptionsCommand) -> Result<(), String> {
    match command {
        SubscriptionsCommand::Create {
            url,
            where_,
            events,
            server,
        } => {
            let events = match events {
                EventsArg::Terminal => pb::SubscriptionEvents::Terminal,
                EventsArg::State => pb::SubscriptionEvents::State,
                EventsArg::All => pb::SubscriptionEvents::All,
            };
            let created = connect(&server.server)
                .await?
                .create_subscription(pb::CreateSubscriptionRequest {
                    url,
                    r#where: where_,
                    events: events as i32,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            out!("{}", created.id);
            out!("{}", created.secret);
            Ok(())
        }
        SubscriptionsCommand::List { server } => {
            let all = connect(&server.server)
                .await?
                .list_subscriptions(pb::ListSubscriptionsRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            for s in all.subscriptions {
                out!("{}", line(&s));
            }
            Ok(())
        }
        SubscriptionsCommand::Delete { id, server } => {
            connect(&server.server)
                .await?
                .delete_subscription(pb::DeleteSubscriptionRequest { id: id.clone() })
                .await
                .map_err(rpc_error)?;
            out!("deleted {id}");
            Ok(())
        }
        SubscriptionsCommand::Deliveries { id, limit, server } => {
            let list = connect(&server.server)
                .await?
                .list_deliveries(pb::ListDeliveriesRequest {
                    subscription_id: id,
                    page_size: limit,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            for d in list.deliveries {
                let status = match d.status_code {
                    0 => "-".to_string(),
                    code => code.to_string(),
                };
                out!(
                    "{} {} #{} {} {} {} {:.1}ms {} {}",
                    datetime(d.time.map(|t| t.seconds)),
                    d.outcome,
                    d.attempt,
                    status,
                    d.r#type,
                    d.job_id,
                    d.duration_micros as f64 / 1000.0,
                    d.id,
                    d.error
                );
            }
            Ok(())
        }
    }
}

/// One subscription in one line: id, status, events, url, where, delivered, cursor, error.
fn line(s: &pb::Subscription) -> String {
    let status = pb::SubscriptionStatus::try_from(s.status)
        .map(|v| {
            v.as_str_name()
                .trim_start_matches("SUBSCRIPTION_STATUS_")
                .to_string()
        })
        .unwrap_or_default();
    let events = pb::SubscriptionEvents::try_from(s.events)
        .map(|v| {
            v.as_str_name()
                .trim_start_matches("SUBSCRIPTION_EVENTS_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let where_ = if s.r#where.is_empty() {
        "{}"
    } else {
        &s.r#where
    };
    let mut text = format!(
        "{} {status} {events} {} where {where_} · {} delivered · cursor {}",
        s.id, s.url, s.delivered, s.cursor
    );
    if !s.last_error.is_empty() {
        text.push_str(&format!(" · last error: {}", s.last_error));
    }
    text
}
