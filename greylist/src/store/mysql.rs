//! MySQL shards: records placed by rendezvous hash, read from replicas, written to primaries
//! through conflict-safe upserts, expired by dropping whole daily partitions.
//!
//! Each record is keyed by its key and the day (by the shard's clock) it was written, and
//! tables are partitioned by that day. A lookup takes the newest row of a key; a write goes to
//! today's row, merging with a concurrent writer's (`INSERT ... ON DUPLICATE KEY UPDATE` that
//! keeps the earliest first-seen, the latest last-seen, and a pass once made). So two gateway
//! nodes seeing one new triplet at the same instant leave one row, and old rows go when their
//! day's partition is dropped, with no row-by-row delete. Known records are rewritten at most
//! daily (see `LAST_SEEN_REFRESH`), so the common case of a known triplet is one replica read.
//!
//! Every time comes from the triplet's shard (`UNIX_TIMESTAMP()` in the same query as the
//! read), so gateway nodes with skewed clocks agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use tokio::sync::OnceCell;

use super::placement::Placement;
use super::{Store, StoreError, StoreFuture};
use crate::config::ShardSettings;
use crate::policy::{ClientRecord, Rules, TripletRecord, Verdict};
use crate::triplet::Triplet;

/// How long a replica may take before the primary is asked instead.
pub const REPLICA_TIMEOUT: Duration = Duration::from_millis(300);

/// Days of partitions made ahead of today, so a maintenance run that is late costs nothing.
const DAYS_AHEAD: i64 = 3;

/// The schema's versions, applied in order; the number of entries applied is kept in
/// `moat_greylist_schema`. Append, never edit.
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE IF NOT EXISTS greylist_triplets (
        triplet VARBINARY(1024) NOT NULL,
        day INT NOT NULL,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        passed TINYINT NOT NULL,
        PRIMARY KEY (triplet, day)
    ) ENGINE=InnoDB PARTITION BY RANGE (day) (PARTITION p_future VALUES LESS THAN MAXVALUE)",
    "CREATE TABLE IF NOT EXISTS greylist_clients (
        client VARBINARY(400) NOT NULL,
        day INT NOT NULL,
        passes INT NOT NULL,
        last_counted BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        PRIMARY KEY (client, day)
    ) ENGINE=InnoDB PARTITION BY RANGE (day) (PARTITION p_future VALUES LESS THAN MAXVALUE)",
]];

/// The partitioned tables.
const TABLES: [&str; 2] = ["greylist_triplets", "greylist_clients"];

const READ_TRIPLET: &str = "SELECT UNIX_TIMESTAMP(), t.first_seen, t.last_seen, t.passed
    FROM (SELECT 1) AS one LEFT JOIN (
        SELECT first_seen, last_seen, passed FROM greylist_triplets
        WHERE triplet = ? ORDER BY day DESC LIMIT 1) AS t ON TRUE";

const READ_CLIENT: &str = "SELECT passes, last_counted, last_seen FROM greylist_clients
    WHERE client = ? ORDER BY day DESC LIMIT 1";

/// The merge of two writers: a new round only when the stored one is past its retry window
/// and never passed; otherwise the earliest first attempt, and a pass once made stays.
const UPSERT_TRIPLET: &str = "INSERT INTO greylist_triplets
    (triplet, day, first_seen, last_seen, passed) VALUES (?, ?, ?, ?, ?)
    ON DUPLICATE KEY UPDATE
        first_seen = IF(passed = 0 AND VALUES(first_seen) > first_seen + ?,
                        VALUES(first_seen), LEAST(first_seen, VALUES(first_seen))),
        passed = GREATEST(passed, VALUES(passed)),
        last_seen = GREATEST(last_seen, VALUES(last_seen))";

const UPSERT_CLIENT: &str = "INSERT INTO greylist_clients
    (client, day, passes, last_counted, last_seen) VALUES (?, ?, ?, ?, ?)
    ON DUPLICATE KEY UPDATE
        passes = GREATEST(passes, VALUES(passes)),
        last_counted = GREATEST(last_counted, VALUES(last_counted)),
        last_seen = GREATEST(last_seen, VALUES(last_seen))";

/// A triplet lookup's row: the shard's clock, then the newest record's columns if any.
type TripletRow = (u64, Option<u64>, Option<u64>, Option<u8>);

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
        let (triplet_key, client_key) = (triplet.key(), triplet.client_key());
        let (triplet_shard, client_shard) = (self.shard(&triplet_key), self.shard(client_key));

        // A replica read settles most requests: known triplets, early retries.
        let (now, triplet_record) = triplet_shard.read_triplet(&triplet_key, true).await?;
        let client_record = if rules.auto_whitelist_after > 0 {
            client_shard.read_client(client_key, true).await?
        } else {
            None
        };
        let (verdict, client_update, triplet_update) =
            rules.decide(client_record, triplet_record, now);
        if client_update.is_none() && triplet_update.is_none() {
            return Ok(verdict);
        }

        // A write: decide again from the primaries, which a lagging replica cannot mislead.
        let (now, triplet_record) = triplet_shard.read_triplet(&triplet_key, false).await?;
        let client_record = if rules.auto_whitelist_after > 0 {
            client_shard.read_client(client_key, false).await?
        } else {
            None
        };
        let (verdict, client_update, triplet_update) =
            rules.decide(client_record, triplet_record, now);
        let day = day_of(now);
        if let Some(record) = triplet_update {
            triplet_shard
                .upsert_triplet(&triplet_key, day, record, rules)
                .await?;
        }
        if let Some(record) = client_update {
            client_shard.upsert_client(client_key, day, record).await?;
        }
        Ok(verdict)
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

fn day_of(unix_seconds: u64) -> i64 {
    (unix_seconds / 86_400) as i64
}

impl Shard {
    fn error(&self, source: mysql_async::Error) -> StoreError {
        StoreError::Mysql {
            shard: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// A connection to the primary, with the schema in place.
    async fn primary(&self) -> Result<Conn, StoreError> {
        let mut conn = self.primary.get_conn().await.map_err(|e| self.error(e))?;
        self.schema
            .get_or_try_init(|| async { migrate(&mut conn).await })
            .await
            .map_err(|e| self.error(e))?;
        Ok(conn)
    }

    /// A connection for a read: a replica if there is one and it answers in time, else the
    /// primary.
    async fn reader(&self, from_replica: bool) -> Result<Conn, StoreError> {
        if from_replica && !self.replicas.is_empty() && self.schema.initialized() {
            let index = self.next_replica.fetch_add(1, Ordering::Relaxed) % self.replicas.len();
            let attempt = tokio::time::timeout(REPLICA_TIMEOUT, self.replicas[index].get_conn());
            match attempt.await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(error)) => {
                    let shard = &self.name;
                    tracing::debug!(%shard, replica = index, %error, "replica failed; use primary");
                }
                Err(_) => {
                    let shard = &self.name;
                    tracing::debug!(%shard, replica = index, "replica too slow; use primary");
                }
            }
        }
        self.primary().await
    }

    async fn read_triplet(
        &self,
        key: &[u8],
        from_replica: bool,
    ) -> Result<(u64, Option<TripletRecord>), StoreError> {
        let mut conn = self.reader(from_replica).await?;
        let row: Option<TripletRow> = conn
            .exec_first(READ_TRIPLET, (key,))
            .await
            .map_err(|e| self.error(e))?;
        let Some((now, first_seen, last_seen, passed)) = row else {
            return Err(self.data_error("UNIX_TIMESTAMP() returned no row"));
        };
        let record = match (first_seen, last_seen, passed) {
            (Some(first_seen), Some(last_seen), Some(passed)) => Some(TripletRecord {
                first_seen,
                last_seen,
                passed: passed != 0,
            }),
            _ => None,
        };
        Ok((now, record))
    }

    async fn read_client(
        &self,
        key: &[u8],
        from_replica: bool,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let mut conn = self.reader(from_replica).await?;
        let row: Option<(u32, u64, u64)> = conn
            .exec_first(READ_CLIENT, (key,))
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.map(|(passes, last_counted, last_seen)| ClientRecord {
            passes,
            last_counted,
            last_seen,
        }))
    }

    async fn upsert_triplet(
        &self,
        key: &[u8],
        day: i64,
        record: TripletRecord,
        rules: &Rules,
    ) -> Result<(), StoreError> {
        let mut conn = self.primary().await?;
        let params = (
            key,
            day,
            record.first_seen,
            record.last_seen,
            u8::from(record.passed),
            rules.retry_window,
        );
        conn.exec_drop(UPSERT_TRIPLET, params)
            .await
            .map_err(|e| self.error(e))
    }

    async fn upsert_client(
        &self,
        key: &[u8],
        day: i64,
        record: ClientRecord,
    ) -> Result<(), StoreError> {
        let mut conn = self.primary().await?;
        let params = (
            key,
            day,
            record.passes,
            record.last_counted,
            record.last_seen,
        );
        conn.exec_drop(UPSERT_CLIENT, params)
            .await
            .map_err(|e| self.error(e))
    }

    fn data_error(&self, detail: &str) -> StoreError {
        StoreError::MysqlData {
            shard: self.name.clone(),
            detail: detail.to_owned(),
        }
    }

    /// Makes the coming days' partitions and drops those older than the rules keep.
    async fn expire(&self, rules: &Rules) -> Result<u64, StoreError> {
        let mut conn = self.primary().await?;
        // Partitions change under a lock, so gateway nodes expiring at once take turns.
        let locked: Option<Option<i64>> = conn
            .query_first("SELECT GET_LOCK('moat_greylist_ddl', 0)")
            .await
            .map_err(|e| self.error(e))?;
        if locked.flatten() != Some(1) {
            tracing::debug!(shard = %self.name, "another node is expiring this shard");
            return Ok(0);
        }
        let result = self.expire_locked(&mut conn, rules).await;
        let _ = conn
            .query_drop("DO RELEASE_LOCK('moat_greylist_ddl')")
            .await;
        result
    }

    async fn expire_locked(&self, conn: &mut Conn, rules: &Rules) -> Result<u64, StoreError> {
        ensure_partitions(conn).await.map_err(|e| self.error(e))?;
        let today = today(conn).await.map_err(|e| self.error(e))?;
        // A partition may go once every row in it is past the longest time a record is kept.
        let keep_days = (rules.max_age.max(rules.retry_window) / 86_400) as i64 + 1;
        let mut removed = 0;
        for table in TABLES {
            let old: Vec<(String, u64)> = partitions(conn, table)
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

/// Applies the migrations this shard has not had and makes the coming days' partitions,
/// under the lock that expiry takes too, so nodes starting together do not race.
async fn migrate(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop("CREATE TABLE IF NOT EXISTS moat_greylist_schema (version INT NOT NULL)")
        .await?;
    let _: Option<Option<i64>> = conn
        .query_first("SELECT GET_LOCK('moat_greylist_ddl', 30)")
        .await?;
    let result = async {
        let applied: Option<Option<i64>> = conn
            .query_first("SELECT MAX(version) FROM moat_greylist_schema")
            .await?;
        let applied = applied.flatten().unwrap_or(0).max(0) as usize;
        for (index, statements) in MIGRATIONS.iter().enumerate().skip(applied) {
            for statement in *statements {
                conn.query_drop(*statement).await?;
            }
            conn.exec_drop(
                "INSERT INTO moat_greylist_schema (version) VALUES (?)",
                (index + 1,),
            )
            .await?;
            tracing::info!(version = index + 1, "greylist schema migrated");
        }
        ensure_partitions(conn).await
    }
    .await;
    let _ = conn
        .query_drop("DO RELEASE_LOCK('moat_greylist_ddl')")
        .await;
    result
}

/// One partition: its name, the day it ends before (`None` for the catch-all) and its
/// estimated row count.
struct Partition {
    name: String,
    below: Option<i64>,
    rows: u64,
}

async fn partitions(conn: &mut Conn, table: &str) -> Result<Vec<Partition>, mysql_async::Error> {
    let rows: Vec<(String, Option<String>, Option<u64>)> = conn
        .exec(
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION, TABLE_ROWS
             FROM information_schema.PARTITIONS
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND PARTITION_NAME IS NOT NULL",
            (table,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, description, rows)| Partition {
            name,
            below: description.and_then(|d| d.parse().ok()),
            rows: rows.unwrap_or(0),
        })
        .collect())
}

async fn today(conn: &mut Conn) -> Result<i64, mysql_async::Error> {
    let now: Option<u64> = conn.query_first("SELECT UNIX_TIMESTAMP()").await?;
    Ok(day_of(now.unwrap_or(0)))
}

/// Splits daily partitions, from yesterday to a few days ahead, off the catch-all partition.
async fn ensure_partitions(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    let today = today(conn).await?;
    for table in TABLES {
        let existing = partitions(conn, table).await?;
        let last = existing.iter().filter_map(|p| p.below).max();
        let first_new = last.unwrap_or(today - 1);
        let days: Vec<i64> = (first_new..=today + DAYS_AHEAD).collect();
        if days.is_empty() {
            continue;
        }
        let mut parts: Vec<String> = days
            .iter()
            .map(|day| format!("PARTITION d{day} VALUES LESS THAN ({})", day + 1))
            .collect();
        parts.push("PARTITION p_future VALUES LESS THAN MAXVALUE".to_owned());
        let sql = format!(
            "ALTER TABLE {table} REORGANIZE PARTITION p_future INTO ({})",
            parts.join(", ")
        );
        conn.query_drop(sql).await?;
    }
    Ok(())
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
