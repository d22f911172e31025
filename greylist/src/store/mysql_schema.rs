//! The MySQL shards' schema: versioned migrations, and the daily partitions that records are
//! written into and expired by.
//!
//! Every shard holds the same two tables, partitioned by the day (by the shard's clock) a row
//! was written. Partitions are made a few days ahead and dropped whole once every row in them
//! is past the longest time a record is kept, so expiry deletes no row one by one.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// Days of partitions made ahead of today, so a maintenance run that is late costs nothing.
const DAYS_AHEAD: i64 = 3;

/// The name of the lock under which partitions and migrations change, so that gateway nodes
/// starting or expiring at once take turns.
pub(super) const DDL_LOCK: &str = "moat_greylist_ddl";

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
pub(super) const TABLES: [&str; 2] = ["greylist_triplets", "greylist_clients"];

/// The day number of a time in seconds since the epoch: the partition key.
pub(super) fn day_of(unix_seconds: u64) -> i64 {
    (unix_seconds / 86_400) as i64
}

/// Applies the migrations this shard has not had and makes the coming days' partitions,
/// under the lock that expiry takes too, so nodes starting together do not race.
pub(super) async fn migrate(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop("CREATE TABLE IF NOT EXISTS moat_greylist_schema (version INT NOT NULL)")
        .await?;
    let _: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, 30)", (DDL_LOCK,))
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
    let _ = conn.exec_drop("DO RELEASE_LOCK(?)", (DDL_LOCK,)).await;
    result
}

/// One partition: its name, the day it ends before (`None` for the catch-all) and its
/// estimated row count.
pub(super) struct Partition {
    pub(super) name: String,
    pub(super) below: Option<i64>,
    pub(super) rows: u64,
}

/// The partitions of one table.
pub(super) async fn partitions(
    conn: &mut Conn,
    table: &str,
) -> Result<Vec<Partition>, mysql_async::Error> {
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

/// Today by the shard's clock.
pub(super) async fn today(conn: &mut Conn) -> Result<i64, mysql_async::Error> {
    let now: Option<u64> = conn.query_first("SELECT UNIX_TIMESTAMP()").await?;
    Ok(day_of(now.unwrap_or(0)))
}

/// Splits daily partitions, from yesterday to a few days ahead, off the catch-all partition.
pub(super) async fn ensure_partitions(conn: &mut Conn) -> Result<(), mysql_async::Error> {
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
