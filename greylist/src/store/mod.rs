//! Where triplets are remembered: the [`Store`] trait and its backends.
//!
//! A store runs the rule of [`crate::policy`] on its own records, at its own clock, so that
//! concurrent attempts of one triplet leave one consistent record:
//!
//! - `embedded`: one redb file in the data directory, written by one thread in group commits.
//! - `mysql`: shards chosen by rendezvous hashing (`placement`), each a primary with optional
//!   read replicas, the rule applied through conflict-safe upserts at the shard's clock;
//!   `mysql_schema` keeps their tables and daily partitions.

pub mod embedded;
pub mod mysql;
mod mysql_schema;
pub mod placement;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::policy::{Rules, Verdict};
use crate::triplet::Triplet;

/// The future a [`Store`] method returns: boxed, so that stores can be chosen at run time.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed.
    #[error("embedded store {path}: {source}")]
    Embedded {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// The embedded database is held by another process: redb takes an exclusive lock.
    #[error(
        "embedded store {path} is open in another process (a moat serve or moat greylist policy \
         on the same data directory); stop it, or give this one its own data_dir"
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The embedded store's writer thread has stopped (it logged why).
    #[error("embedded store {path}: the writer thread has stopped")]
    WriterStopped {
        /// The database file.
        path: PathBuf,
    },
    /// A MySQL shard failed or could not be reached.
    #[error("mysql shard {shard}: {source}")]
    Mysql {
        /// The shard's name.
        shard: String,
        /// What the driver said.
        source: Box<mysql_async::Error>,
    },
    /// A MySQL shard answered something Moat cannot use.
    #[error("mysql shard {shard}: {detail}")]
    MysqlData {
        /// The shard's name.
        shard: String,
        /// What was wrong.
        detail: String,
    },
}

/// A greylist store: one or more shards holding triplet and client records.
///
/// Every method is cancel safe in the sense the greylist needs: dropping a future (when the
/// budget runs out) may or may not leave its write done, and either is a valid state, since
/// each write is a whole record in one transaction.
pub trait Store: Send + Sync + 'static {
    /// The shards' names, in a fixed order; [`Store::shard_of`] indexes into it.
    fn shard_names(&self) -> Vec<String>;

    /// The shard holding a triplet.
    fn shard_of(&self, triplet: &Triplet) -> usize;

    /// Decides one attempt of `triplet` by `rules` at the store's clock and writes what
    /// changed: the client's auto-whitelist record and the triplet's, each in its own
    /// transaction (where they live on two MySQL shards, both at once).
    ///
    /// # Errors
    /// [`StoreError`] when a shard cannot be read or written; nothing is decided then.
    fn decide<'a>(&'a self, triplet: &'a Triplet, rules: &'a Rules) -> StoreFuture<'a, Verdict>;

    /// Removes the records `rules` say have expired; returns how many went (an estimate where
    /// a backend drops whole partitions).
    ///
    /// # Errors
    /// [`StoreError`] when a shard cannot be reached; the next run catches up.
    fn expire<'a>(&'a self, rules: &'a Rules) -> StoreFuture<'a, u64>;
}
