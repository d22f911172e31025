//! MySQL shards: records placed by rendezvous hash, read from replicas, written to primaries
//! through conflict-safe upserts at the shard's clock.
//!
//! Each record is keyed by its key and the day (by the shard's clock) it was written; the
//! tables are partitioned by that day (see `mysql_schema`). A lookup takes the newest row of a
//! key; a write goes to today's row, merging with a concurrent writer's (`INSERT ... ON
//! DUPLICATE KEY UPDATE` that keeps the earliest first-seen, the latest last-seen, and a pass
//! once made). So two gateway nodes seeing one new triplet at the same instant leave one row.
//!
//! One attempt costs as few round trips as keep that true:
//!
//! - One read per shard involved, sent at once: the triplet's record, the client's record when
//!   it lives on the same shard, and the shard's clock come back from one statement. A replica
//!   answers where there is one. Known triplets and early retries end here, since known records
//!   are rewritten at most daily (see `LAST_SEEN_REFRESH`).
//! - Otherwise one write per record that changed, sent at once. When the read came from the
//!   primary, a plain upsert. When it came from a replica, which may lag, the upsert is made
//!   only if the primary's newest record is still the one the replica showed, checked in the
//!   same statement; `RETURNING` says whether it was made.
//! - Only when that check fails (a lagging replica, or another node writing first) is the
//!   attempt decided again from the primaries and written, as before.
//!
//! Every time comes from the triplet's shard (`UNIX_TIMESTAMP()` in the same query as the
//! read), so gateway nodes with skewed clocks agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use tokio::sync::OnceCell;

use super::mysql_schema::{self, DDL_LOCK, TABLES, day_of};
use super::placement::Placement;
use super::{Store, StoreError, StoreFuture};
use crate::config::ShardSettings;
use crate::policy::{ClientRecord, Rules, TripletRecord, Verdict};
use crate::triplet::Triplet;

/// How long a replica may take before the primary is asked instead.
pub const REPLICA_TIMEOUT: Duration = Duration::from_millis(300);

/// InnoDB's "deadlock found": two upserts of one new key took their locks in opposite orders
/// and this one was rolled back. Retrying it is InnoDB's own advice.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// The shard's clock, the newest triplet record, and the newest client record when the client
/// lives on the same shard (its parameter is NULL otherwise). Each record comes as its columns
/// joined by commas, the form the checked upserts compare: scalar subqueries need no temporary
/// table, where joining derived tables made three per read.
const READ_STATE: &str = "SELECT UNIX_TIMESTAMP(),
    (SELECT CONCAT_WS(',', first_seen, last_seen, passed) FROM greylist_triplets
        WHERE triplet = ? ORDER BY day DESC LIMIT 1),
    (SELECT CONCAT_WS(',', passes, last_counted, last_seen) FROM greylist_clients
        WHERE client = ? ORDER BY day DESC LIMIT 1)";

/// A client's newest record, where it lives on another shard than its triplet.
const READ_CLIENT: &str = "SELECT passes, last_counted, last_seen FROM greylist_clients
    WHERE client = ? ORDER BY day DESC LIMIT 1";

/// The merge of two triplet writers: a new round only when the stored one is past its retry
/// window and never passed; otherwise the earliest first attempt, and a pass once made stays.
/// Its one parameter is the retry window.
macro_rules! merge_triplet {
    () => {
        "ON DUPLICATE KEY UPDATE
            first_seen = IF(passed = 0 AND VALUES(first_seen) > first_seen + ?,
                            VALUES(first_seen), LEAST(first_seen, VALUES(first_seen))),
            passed = GREATEST(passed, VALUES(passed)),
            last_seen = GREATEST(last_seen, VALUES(last_seen))"
    };
}

/// The merge of two client writers: counts and times only grow.
macro_rules! merge_client {
    () => {
        "ON DUPLICATE KEY UPDATE
            passes = GREATEST(passes, VALUES(passes)),
            last_counted = GREATEST(last_counted, VALUES(last_counted)),
            last_seen = GREATEST(last_seen, VALUES(last_seen))"
    };
}

const UPSERT_TRIPLET: &str = concat!(
    "INSERT INTO greylist_triplets (triplet, day, first_seen, last_seen, passed)
    VALUES (?, ?, ?, ?, ?) ",
    merge_triplet!()
);

/// [`UPSERT_TRIPLET`] made only if the newest record is still the expected one (its columns
/// joined by commas, NULL for none); a row comes back only when the write was made.
const CHECKED_UPSERT_TRIPLET: &str = concat!(
    "INSERT INTO greylist_triplets (triplet, day, first_seen, last_seen, passed)
    SELECT ?, ?, ?, ?, ? FROM DUAL
    WHERE (SELECT CONCAT_WS(',', first_seen, last_seen, passed) FROM greylist_triplets
        WHERE triplet = ? ORDER BY day DESC LIMIT 1) <=> ? ",
    merge_triplet!(),
    " RETURNING passed"
);

const UPSERT_CLIENT: &str = concat!(
    "INSERT INTO greylist_clients (client, day, passes, last_counted, last_seen)
    VALUES (?, ?, ?, ?, ?) ",
    merge_client!()
);

/// [`UPSERT_CLIENT`] made only if the newest record is still the expected one.
const CHECKED_UPSERT_CLIENT: &str = concat!(
    "INSERT INTO greylist_clients (client, day, passes, last_counted, last_seen)
    SELECT ?, ?, ?, ?, ? FROM DUAL
    WHERE (SELECT CONCAT_WS(',', passes, last_counted, last_seen) FROM greylist_clients
        WHERE client = ? ORDER BY day DESC LIMIT 1) <=> ? ",
    merge_client!(),
    " RETURNING passes"
);

/// A [`READ_STATE`] row: the shard's clock, the triplet's and the client's columns.
type StateRow = (u64, Option<String>, Option<String>);

/// Where a read may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFrom {
    /// A replica if the shard has one that answers in time, else the primary.
    Replica,
    /// The primary, which no lag can mislead.
    Primary,
}

/// A record as read, and whether a primary said it (so that a write may rely on it unchecked).
#[derive(Debug, Clone, Copy)]
struct Seen<T> {
    record: Option<T>,
    from_primary: bool,
}

/// What the shards said of one attempt.
struct Observation {
    /// The triplet shard's clock.
    now: u64,
    triplet: Seen<TripletRecord>,
    client: Seen<ClientRecord>,
}

/// One shard: a primary for writes and authoritative reads, replicas for the rest.
struct Shard {
    name: String,
    primary: Pool,
    replicas: Vec<Pool>,
    next_replica: AtomicUsize,
    schema: OnceCell<()>,
}

/// The MySQL store.
pub struct MysqlStore {
    shards: Vec<Arc<Shard>>,
    placement: Placement,
}

/// The keys one attempt touches and the shards that hold them.
struct Attempt<'a> {
    triplet_key: Vec<u8>,
    triplet_shard: &'a Shard,
    /// The client's key and shard; `None` when the auto-whitelist is off.
    client: Option<(&'a [u8], &'a Shard)>,
    rules: &'a Rules,
}

impl MysqlStore {
    /// Sets up a connection pool per server. Nothing is connected yet: each shard creates or
    /// migrates its schema on first use, so a shard that is down at start only fails its own
    /// requests, under the failure mode, until it comes back.
    pub async fn connect(shards: &[ShardSettings]) -> MysqlStore {
        let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
        let shards = shards
            .iter()
            .map(|settings| {
                Arc::new(Shard {
                    name: settings.name.clone(),
                    primary: pool(&settings.primary, settings.max_connections),
                    replicas: settings
                        .replicas
                        .iter()
                        .map(|url| pool(url, settings.max_connections))
                        .collect(),
                    next_replica: AtomicUsize::new(0),
                    schema: OnceCell::new(),
                })
            })
            .collect();
        MysqlStore {
            shards,
            placement: Placement::new(&names),
        }
    }

    /// Closes every pool.
    pub async fn disconnect(self) {
        for shard in self.shards {
            if let Ok(shard) = Arc::try_unwrap(shard) {
                let _ = shard.primary.disconnect().await;
                for replica in shard.replicas {
                    let _ = replica.disconnect().await;
                }
            }
        }
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        &self.shards[self.placement.shard_of(key)]
    }

    async fn decide_triplet(
        &self,
        triplet: &Triplet,
        rules: &Rules,
    ) -> Result<Verdict, StoreError> {
        let triplet_key = triplet.key();
        let client_key = triplet.client_key();
        let attempt = Attempt {
            triplet_shard: self.shard(&triplet_key),
            triplet_key,
            client: (rules.auto_whitelist_after > 0).then(|| (client_key, self.shard(client_key))),
            rules,
        };

        // Known triplets and early retries end with this read.
        let seen = attempt.observe(ReadFrom::Replica).await?;
        let (verdict, client_update, triplet_update) =
            rules.decide(seen.client.record, seen.triplet.record, seen.now);
        if client_update.is_none() && triplet_update.is_none() {
            return Ok(verdict);
        }
        if attempt.write(&seen, client_update, triplet_update).await? {
            return Ok(verdict);
        }

        // A replica was behind its primary, or another node wrote first: decide again from the
        // primaries, whose reads the writes can then rely on.
        let shard = &attempt.triplet_shard.name;
        tracing::trace!(%shard, "greylist record changed since it was read; read the primary");
        let seen = attempt.observe(ReadFrom::Primary).await?;
        let (verdict, client_update, triplet_update) =
            rules.decide(seen.client.record, seen.triplet.record, seen.now);
        attempt.write(&seen, client_update, triplet_update).await?;
        Ok(verdict)
    }
}

impl Attempt<'_> {
    /// Reads both records, one statement per shard involved, the shards at once.
    async fn observe(&self, read_from: ReadFrom) -> Result<Observation, StoreError> {
        let triplet_key = self.triplet_key.as_slice();
        let Some((client_key, client_shard)) = self.client else {
            return self
                .triplet_shard
                .read_state(triplet_key, None, read_from)
                .await;
        };
        if std::ptr::eq(client_shard, self.triplet_shard) {
            let state = self
                .triplet_shard
                .read_state(triplet_key, Some(client_key), read_from);
            return state.await;
        }

        let (state, client) = tokio::try_join!(
            self.triplet_shard.read_state(triplet_key, None, read_from),
            client_shard.read_client(client_key, read_from),
        )?;
        Ok(Observation { client, ..state })
    }

    /// Writes the records that changed, the shards at once. Returns false when a write was
    /// not made because the record it was decided from has changed since it was read; the
    /// other may have been made, which is a valid state (see [`Store`]).
    async fn write(
        &self,
        seen: &Observation,
        client_update: Option<ClientRecord>,
        triplet_update: Option<TripletRecord>,
    ) -> Result<bool, StoreError> {
        let day = day_of(seen.now);
        let triplet = async {
            let Some(record) = triplet_update else {
                return Ok(true);
            };
            let key = self.triplet_key.as_slice();
            let (shard, rules) = (self.triplet_shard, self.rules);
            shard
                .upsert_triplet(key, day, record, seen.triplet, rules)
                .await
        };
        let client = async {
            let (Some(record), Some((key, shard))) = (client_update, self.client) else {
                return Ok(true);
            };
            shard.upsert_client(key, day, record, seen.client).await
        };
        let (triplet_made, client_made) = tokio::try_join!(triplet, client)?;
        Ok(triplet_made && client_made)
    }
}

fn pool(url: &str, max_connections: usize) -> Pool {
    // The URL was checked by the configuration; a default is unreachable but harmless.
    let opts = Opts::from_url(url).unwrap_or_default();
    let constraints = PoolConstraints::new(0, max_connections.max(1))
        .unwrap_or_else(|| PoolConstraints::new(0, 1).expect("0..1 is a valid pool size"));
    // No session state is used, so resetting each connection on return is a wasted round trip.
    let pool_opts = PoolOpts::default()
        .with_constraints(constraints)
        .with_reset_connection(false);
    Pool::new(OptsBuilder::from_opts(opts).pool_opts(pool_opts))
}

/// A record's columns as the checked upserts compare them (`CONCAT_WS(',', ...)`).
fn triplet_columns(record: Option<TripletRecord>) -> Option<String> {
    record.map(|r| format!("{},{},{}", r.first_seen, r.last_seen, u8::from(r.passed)))
}

fn client_columns(record: Option<ClientRecord>) -> Option<String> {
    record.map(|r| format!("{},{},{}", r.passes, r.last_counted, r.last_seen))
}

/// A triplet record from [`triplet_columns`]' form; `None` if it is not that.
fn parse_triplet(columns: &str) -> Option<TripletRecord> {
    let [first_seen, last_seen, passed] = numbers(columns)?;
    Some(TripletRecord {
        first_seen,
        last_seen,
        passed: passed != 0,
    })
}

/// A client record from [`client_columns`]' form; `None` if it is not that.
fn parse_client(columns: &str) -> Option<ClientRecord> {
    let [passes, last_counted, last_seen] = numbers(columns)?;
    Some(ClientRecord {
        passes: u32::try_from(passes).ok()?,
        last_counted,
        last_seen,
    })
}

/// Exactly three unsigned numbers separated by commas.
fn numbers(columns: &str) -> Option<[u64; 3]> {
    let mut parts = columns.split(',').map(|part| part.parse::<u64>().ok());
    let numbers = [parts.next()??, parts.next()??, parts.next()??];
    parts.next().is_none().then_some(numbers)
}

fn is_deadlock(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(e) if e.code == ER_LOCK_DEADLOCK)
}

impl Shard {
    fn error(&self, source: mysql_async::Error) -> StoreError {
        StoreError::Mysql {
            shard: self.name.clone(),
            source: Box::new(source),
        }
    }

    fn data_error(&self, detail: &str) -> StoreError {
        StoreError::MysqlData {
            shard: self.name.clone(),
            detail: detail.to_owned(),
        }
    }

    /// A connection to the primary, with the schema in place.
    async fn primary(&self) -> Result<Conn, StoreError> {
        let mut conn = self.primary.get_conn().await.map_err(|e| self.error(e))?;
        self.schema
            .get_or_try_init(|| async { mysql_schema::migrate(&mut conn).await })
            .await
            .map_err(|e| self.error(e))?;
        Ok(conn)
    }

    /// A connection for a read, and whether it is the primary's: a replica if asked for, there
    /// is one and it answers in time, else the primary.
    async fn reader(&self, read_from: ReadFrom) -> Result<(Conn, bool), StoreError> {
        let use_replica = read_from == ReadFrom::Replica && !self.replicas.is_empty();
        if use_replica && self.schema.initialized() {
            let index = self.next_replica.fetch_add(1, Ordering::Relaxed) % self.replicas.len();
            let attempt = tokio::time::timeout(REPLICA_TIMEOUT, self.replicas[index].get_conn());
            let shard = &self.name;
            match attempt.await {
                Ok(Ok(conn)) => return Ok((conn, false)),
                Ok(Err(error)) => {
                    tracing::debug!(%shard, replica = index, %error, "replica failed; use primary");
                }
                Err(_) => {
                    tracing::debug!(%shard, replica = index, "replica too slow; use primary");
                }
            }
        }
        Ok((self.primary().await?, true))
    }

    /// The shard's clock, the triplet's newest record, and the client's if `client_key` is
    /// given (it lives on this shard).
    async fn read_state(
        &self,
        triplet_key: &[u8],
        client_key: Option<&[u8]>,
        read_from: ReadFrom,
    ) -> Result<Observation, StoreError> {
        let (mut conn, from_primary) = self.reader(read_from).await?;
        let row: Option<StateRow> = conn
            .exec_first(READ_STATE, (triplet_key, client_key))
            .await
            .map_err(|e| self.error(e))?;
        let Some((now, triplet, client)) = row else {
            return Err(self.data_error("UNIX_TIMESTAMP() returned no row"));
        };

        let triplet = match triplet.as_deref().map(parse_triplet) {
            Some(None) => return Err(self.data_error("a triplet record's columns are not numbers")),
            parsed => parsed.flatten(),
        };
        let client = match client.as_deref().map(parse_client) {
            Some(None) => return Err(self.data_error("a client record's columns are not numbers")),
            parsed => parsed.flatten(),
        };
        Ok(Observation {
            now,
            triplet: Seen {
                record: triplet,
                from_primary,
            },
            client: Seen {
                record: client,
                from_primary,
            },
        })
    }

    /// A client's newest record, where it lives on another shard than its triplet.
    async fn read_client(
        &self,
        key: &[u8],
        read_from: ReadFrom,
    ) -> Result<Seen<ClientRecord>, StoreError> {
        let (mut conn, from_primary) = self.reader(read_from).await?;
        let row: Option<(u32, u64, u64)> = conn
            .exec_first(READ_CLIENT, (key,))
            .await
            .map_err(|e| self.error(e))?;
        let record = row.map(|(passes, last_counted, last_seen)| ClientRecord {
            passes,
            last_counted,
            last_seen,
        });
        Ok(Seen {
            record,
            from_primary,
        })
    }

    /// Writes a triplet's record decided from `seen`: unchecked if a primary said it, else
    /// only if the primary still holds it. Returns whether the write was made.
    async fn upsert_triplet(
        &self,
        key: &[u8],
        day: i64,
        record: TripletRecord,
        seen: Seen<TripletRecord>,
        rules: &Rules,
    ) -> Result<bool, StoreError> {
        let mut conn = self.primary().await?;
        let (first_seen, last_seen) = (record.first_seen, record.last_seen);
        let passed = u8::from(record.passed);
        if seen.from_primary {
            let params = (key, day, first_seen, last_seen, passed, rules.retry_window);
            return self.upsert(&mut conn, UPSERT_TRIPLET, params).await;
        }

        let expected = triplet_columns(seen.record);
        let retry_window = rules.retry_window;
        let params = (
            key,
            day,
            first_seen,
            last_seen,
            passed,
            key,
            expected,
            retry_window,
        );
        self.checked_upsert(&mut conn, CHECKED_UPSERT_TRIPLET, params)
            .await
    }

    /// Writes a client's record decided from `seen`, as [`Shard::upsert_triplet`] does.
    async fn upsert_client(
        &self,
        key: &[u8],
        day: i64,
        record: ClientRecord,
        seen: Seen<ClientRecord>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.primary().await?;
        let (passes, last_counted, last_seen) =
            (record.passes, record.last_counted, record.last_seen);
        if seen.from_primary {
            let params = (key, day, passes, last_counted, last_seen);
            return self.upsert(&mut conn, UPSERT_CLIENT, params).await;
        }

        let expected = client_columns(seen.record);
        let params = (key, day, passes, last_counted, last_seen, key, expected);
        self.checked_upsert(&mut conn, CHECKED_UPSERT_CLIENT, params)
            .await
    }

    /// Runs an unchecked upsert, once more if InnoDB rolled it back for a deadlock with a
    /// concurrent writer of the same key. Always made when it returns `Ok`.
    async fn upsert<P>(&self, conn: &mut Conn, sql: &str, params: P) -> Result<bool, StoreError>
    where
        P: Into<mysql_async::Params> + Clone + Send,
    {
        match conn.exec_drop(sql, params.clone()).await {
            Err(error) if is_deadlock(&error) => {}
            done => return done.map(|()| true).map_err(|e| self.error(e)),
        }
        conn.exec_drop(sql, params)
            .await
            .map(|()| true)
            .map_err(|e| self.error(e))
    }

    /// Runs a checked upsert: whether it was made. A deadlock with a concurrent writer means
    /// the record is changing under it, which is the same answer as a failed check.
    async fn checked_upsert<P>(
        &self,
        conn: &mut Conn,
        sql: &str,
        params: P,
    ) -> Result<bool, StoreError>
    where
        P: Into<mysql_async::Params> + Send,
    {
        let made: Result<Option<u64>, _> = conn.exec_first(sql, params).await;
        match made {
            Ok(row) => Ok(row.is_some()),
            Err(error) if is_deadlock(&error) => Ok(false),
            Err(error) => Err(self.error(error)),
        }
    }

    /// Makes the coming days' partitions and drops those older than the rules keep.
    async fn expire(&self, rules: &Rules) -> Result<u64, StoreError> {
        let mut conn = self.primary().await?;
        // Partitions change under a lock, so gateway nodes expiring at once take turns.
        let locked: Option<Option<i64>> = conn
            .exec_first("SELECT GET_LOCK(?, 0)", (DDL_LOCK,))
            .await
            .map_err(|e| self.error(e))?;
        if locked.flatten() != Some(1) {
            tracing::debug!(shard = %self.name, "another node is expiring this shard");
            return Ok(0);
        }
        let result = self.expire_locked(&mut conn, rules).await;
        let _ = conn.exec_drop("DO RELEASE_LOCK(?)", (DDL_LOCK,)).await;
        result
    }

    async fn expire_locked(&self, conn: &mut Conn, rules: &Rules) -> Result<u64, StoreError> {
        mysql_schema::ensure_partitions(conn)
            .await
            .map_err(|e| self.error(e))?;
        let today = mysql_schema::today(conn).await.map_err(|e| self.error(e))?;
        // A partition may go once every row in it is past the longest time a record is kept.
        let keep_days = (rules.max_age.max(rules.retry_window) / 86_400) as i64 + 1;
        let mut removed = 0;
        for table in TABLES {
            let old: Vec<(String, u64)> = mysql_schema::partitions(conn, table)
                .await
                .map_err(|e| self.error(e))?
                .into_iter()
                .filter(|p| p.below.is_some_and(|below| below <= today - keep_days))
                .map(|p| (p.name, p.rows))
                .collect();
            if old.is_empty() {
                continue;
            }
            let names: Vec<&str> = old.iter().map(|(name, _)| name.as_str()).collect();
            let sql = format!("ALTER TABLE {table} DROP PARTITION {}", names.join(", "));
            conn.query_drop(sql).await.map_err(|e| self.error(e))?;
            removed += old.iter().map(|(_, rows)| rows).sum::<u64>();
            let (shard, partitions) = (&self.name, names.len());
            tracing::info!(%shard, table, partitions, "greylist partitions dropped");
        }
        Ok(removed)
    }
}

impl Store for MysqlStore {
    fn shard_names(&self) -> Vec<String> {
        self.shards.iter().map(|shard| shard.name.clone()).collect()
    }

    fn shard_of(&self, triplet: &Triplet) -> usize {
        self.placement.shard_of(&triplet.key())
    }

    fn decide<'a>(&'a self, triplet: &'a Triplet, rules: &'a Rules) -> StoreFuture<'a, Verdict> {
        Box::pin(self.decide_triplet(triplet, rules))
    }

    fn expire<'a>(&'a self, rules: &'a Rules) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut removed = 0;
            let mut first_error = None;
            // One shard down must not stop the others' expiry.
            for shard in &self.shards {
                match shard.expire(rules).await {
                    Ok(n) => removed += n,
                    Err(error) => {
                        tracing::warn!(shard = %shard.name, %error, "greylist expiry failed");
                        first_error.get_or_insert(error);
                    }
                }
            }
            match first_error {
                Some(error) if removed == 0 => Err(error),
                _ => Ok(removed),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_the_checked_upserts_compare_them() {
        let triplet = TripletRecord {
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_300,
            passed: true,
        };
        let columns = triplet_columns(Some(triplet)).expect("a record has columns");
        assert_eq!(columns, "1700000000,1700000300,1");
        assert_eq!(parse_triplet(&columns), Some(triplet));

        let client = ClientRecord {
            passes: 5,
            last_counted: 1_700_000_000,
            last_seen: 1_700_003_600,
        };
        let columns = client_columns(Some(client)).expect("a record has columns");
        assert_eq!(parse_client(&columns), Some(client));
        assert_eq!(triplet_columns(None), None);
    }

    #[test]
    fn malformed_columns_are_not_a_record() {
        assert_eq!(parse_triplet("1,2"), None);
        assert_eq!(parse_triplet("1,2,3,4"), None);
        assert_eq!(parse_triplet("1,x,0"), None);
        assert_eq!(parse_client("99999999999,1,1"), None);
    }
}
