//! `jobtrack keys create|list|revoke` (on the database, as `serve` opens it) and `jobtrack
//! whoami` (asks a server which key `JOBTRACK_KEY` is and what its role may do).

use clap::{Args, Subcommand};

use super::ServerArg;
use super::client::{access_client, channel, rpc_error};
use crate::auth::Role;
use crate::config::database_url;
use crate::pb;
use crate::store::Store;

/// The database the key commands work on: as `serve` finds it.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArg {
    /// Database (as for `serve`); falls back to DATABASE_URL, then `jobtrack.db`.
    #[arg(long, env = "JOBTRACK_DATABASE")]
    pub database: Option<String>,
}

#[derive(Subcommand, Clone, Debug)]
pub enum KeysCommand {
    /// Creates a key and prints it once (only its hash is stored).
    Create {
        /// A name that says who holds the key (shown in logs and activity lines).
        #[arg(long)]
        name: String,
        /// viewer (read, watch), operator (+ cancel), executor (create, update, report), admin.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Lists the keys (never their secrets).
    List {
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Revokes a key by its id; servers stop accepting it within a few seconds.
    Revoke {
        /// The key's id, as `keys list` shows it.
        id: String,
        #[command(flatten)]
        database: DatabaseArg,
    },
}

pub(super) async fn run(command: KeysCommand) -> Result<(), String> {
    let database = match &command {
        KeysCommand::Create { database, .. }
        | KeysCommand::List { database }
        | KeysCommand::Revoke { database, .. } => database.database.clone(),
    };
    let store = Store::open(&database_url(database))
        .await
        .map_err(|e| e.to_string())?;
    let outcome = match command {
        KeysCommand::Create { name, role, .. } => create(&store, &name, &role).await,
        KeysCommand::List { .. } => list(&store).await,
        KeysCommand::Revoke { id, .. } => revoke(&store, &id).await,
    };
    store.close().await;
    outcome
}

async fn create(store: &Store, name: &str, role: &str) -> Result<(), String> {
    let role = Role::parse(role)
        .ok_or_else(|| format!("unknown role {role:?}: use viewer, operator, executor or admin"))?;
    if name.trim().is_empty() {
        return Err("--name must not be empty".into());
    }
    let (key, secret) = crate::auth::generate(name.trim(), role, crate::domain::now_micros());
    store.create_key(&key).await.map_err(|e| e.to_string())?;
    out!("{secret}");
    eprintln!(
        "key {} ({}, {}) created; it is shown only this once",
        key.id,
        key.name,
        role.as_str()
    );
    Ok(())
}

async fn list(store: &Store) -> Result<(), String> {
    for key in store.list_keys().await.map_err(|e| e.to_string())? {
        out!(
            "{}  {:<9} {:<24} {}",
            key.id,
            key.role.as_str(),
            key.name,
            if key.revoked.is_some() {
                "revoked"
            } else {
                "active"
            }
        );
    }
    Ok(())
}

async fn revoke(store: &Store, id: &str) -> Result<(), String> {
    let revoked = store
        .revoke_key(id, crate::domain::now_micros())
        .await
        .map_err(|e| e.to_string())?;
    if !revoked {
        return Err(format!("no key {id}"));
    }
    out!("key {id} revoked");
    Ok(())
}

/// `jobtrack whoami`: which key `JOBTRACK_KEY` is, and what its role may and may not do.
pub(super) async fn whoami(server: ServerArg) -> Result<(), String> {
    let mut access = access_client(channel(&server.server).await?);
    let caller = access
        .get_caller(pb::GetCallerRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if !caller.keys_required {
        out!(
            "{} requires no API key: anyone may do everything",
            server.server
        );
        return Ok(());
    }
    out!("key:      {:?} ({})", caller.key_name, caller.key_id);
    out!("role:     {}", caller.role);
    for (label, list) in [("may:", &caller.allowed), ("may not:", &caller.denied)] {
        for (i, p) in list.iter().enumerate() {
            out!("{:<9} {}", if i == 0 { label } else { "" }, p.description);
        }
    }
    Ok(())
}
