//! A pooled connection inside a transaction that the store began by hand (`BEGIN …`): if the
//! read is cancelled or fails before the transaction ends, the connection is closed instead of
//! going back to the pool. Reads are cancelled for real — a watch stream whose client goes away
//! is dropped wherever it is, mid-snapshot included — and a connection returned still inside its
//! transaction would fail the next caller ("cannot start a transaction within a transaction")
//! or, on Postgres, keep its locks and snapshot.

use std::ops::{Deref, DerefMut};

use sqlx::Database;
use sqlx::pool::PoolConnection;

pub struct TxConn<DB: Database> {
    conn: Option<PoolConnection<DB>>,
}

impl<DB: Database> TxConn<DB> {
    /// `conn`, about to begin a transaction.
    pub fn new(conn: PoolConnection<DB>) -> TxConn<DB> {
        TxConn { conn: Some(conn) }
    }

    /// The transaction has ended (COMMIT or ROLLBACK succeeded): the connection may go back
    /// to the pool.
    pub fn ended(mut self) -> PoolConnection<DB> {
        self.conn
            .take()
            .expect("a connection until it is handed back")
    }
}

impl<DB: Database> Deref for TxConn<DB> {
    type Target = PoolConnection<DB>;

    fn deref(&self) -> &PoolConnection<DB> {
        self.conn
            .as_ref()
            .expect("a connection until it is handed back")
    }
}

impl<DB: Database> DerefMut for TxConn<DB> {
    fn deref_mut(&mut self) -> &mut PoolConnection<DB> {
        self.conn
            .as_mut()
            .expect("a connection until it is handed back")
    }
}

impl<DB: Database> Drop for TxConn<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}
