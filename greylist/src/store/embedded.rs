//! The embedded store: triplet and client records in one redb file, written by one thread.
//!
//! Reads run on the caller's thread in a read transaction: a known triplet, the common case,
//! needs no write at all (its last-seen time is refreshed at most daily). Attempts that change a
//! record go to the writer thread, which takes every attempt waiting, decides each again inside
//! one write transaction (so two attempts of one triplet are serialised and leave one record),
//! and commits them together.
//!
//! By default every batch is committed durably before its attempts are answered, so a decision
//! survives kill -9 and a power cut; batching (one commit for every attempt waiting) keeps that
//! to one fsync per batch rather than per decision. A `sync_interval` above zero trades that for
//! speed: commits without fsync in between, and redb rolls back to the last durable commit after
//! a crash, so a crash loses at most that interval (costing those senders one more deferral).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use tokio::sync::oneshot;

use super::{Store, StoreError, StoreFuture};
use crate::clock::Clock;
use crate::policy::{ClientRecord, Rules, TripletRecord, Verdict};
use crate::triplet::Triplet;

/// The default longest time between durable commits: zero, every batch durable, because the
/// issue's promise is that greylist state survives kill -9.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::ZERO;

/// The file name in the data directory.
pub const FILE_NAME: &str = "greylist.redb";

/// Triplet key to (first seen, last seen, passed).
const TRIPLETS: TableDefinition<&[u8], (u64, u64, bool)> = TableDefinition::new("triplets");

/// Client network key to (passes counted, last counted, last seen).
const CLIENTS: TableDefinition<&[u8], (u32, u64, u64)> = TableDefinition::new("clients");

/// Attempts decided in one write transaction at most, so one batch cannot hold replies back
/// for long.
const MAX_BATCH: usize = 1_024;

/// Records examined per expiry transaction, so expiry never stalls the writer for long.
const EXPIRY_CHUNK: usize = 10_000;

/// The embedded store.
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    clock: Arc<dyn Clock>,
    jobs: Mutex<Option<Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Work for the writer thread.
enum Job {
    Decide {
        triplet_key: Vec<u8>,
        client_key: Vec<u8>,
        rules: Rules,
        reply: oneshot::Sender<Result<Verdict, StoreError>>,
    },
    ExpireChunk {
        table: ExpiryTable,
        from: Vec<u8>,
        rules: Rules,
        reply: oneshot::Sender<Result<ExpiryProgress, StoreError>>,
    },
}

#[derive(Debug, Clone, Copy)]
enum ExpiryTable {
    Triplets,
    Clients,
}

struct ExpiryProgress {
    removed: u64,
    next: Option<Vec<u8>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`, repairing it if the last process was killed, and
    /// starts its writer thread.
    ///
    /// # Errors
    /// [`StoreError::Embedded`] when the file cannot be opened or is not a redb database.
    pub fn open(
        path: &Path,
        clock: Arc<dyn Clock>,
        sync_interval: Duration,
    ) -> Result<EmbeddedStore, StoreError> {
        let error = |source: redb::Error| StoreError::Embedded {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_path_buf(),
            },
            other => error(other.into()),
        })?;

        // Create both tables now, so that readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| error(e.into()))?;
        txn.open_table(TRIPLETS).map_err(|e| error(e.into()))?;
        txn.open_table(CLIENTS).map_err(|e| error(e.into()))?;
        txn.commit().map_err(|e| error(e.into()))?;

        let db = Arc::new(db);
        let (jobs, queue) = mpsc::channel();
        let writer = Writer {
            db: Arc::clone(&db),
            path: path.to_path_buf(),
            clock: Arc::clone(&clock),
            sync_interval,
        };
        let handle = std::thread::Builder::new()
            .name("greylist-writer".to_owned())
            .spawn(move || writer.run(&queue))
            .map_err(|e| error(redb::Error::Io(e)))?;
        tracing::debug!(path = %path.display(), "greylist store open");
        Ok(EmbeddedStore {
            db,
            path: path.to_path_buf(),
            clock,
            jobs: Mutex::new(Some(jobs)),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Stops the writer after a last durable commit. Called on drop; calling it earlier makes
    /// later decisions fail with [`StoreError::WriterStopped`].
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut writer| writer.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    fn error(&self, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Embedded {
            path: self.path.clone(),
            source: Box::new(source.into()),
        }
    }

    /// Decides from a read transaction: the verdict if it needs no write, else `None`.
    fn decide_without_writing(
        &self,
        triplet_key: &[u8],
        client_key: &[u8],
        rules: &Rules,
    ) -> Result<Option<Verdict>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let clients = txn.open_table(CLIENTS).map_err(|e| self.error(e))?;
        let triplets = txn.open_table(TRIPLETS).map_err(|e| self.error(e))?;
        let client = clients.get(client_key).map_err(|e| self.error(e))?;
        let client = client.map(|guard| client_record(guard.value()));
        let triplet = triplets.get(triplet_key).map_err(|e| self.error(e))?;
        let triplet = triplet.map(|guard| triplet_record(guard.value()));

        let (verdict, client_update, triplet_update) =
            rules.decide(client, triplet, self.clock.now());
        let needs_write = client_update.is_some() || triplet_update.is_some();
        Ok((!needs_write).then_some(verdict))
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        let stopped = || StoreError::WriterStopped {
            path: self.path.clone(),
        };
        let jobs = self.jobs.lock().map_err(|_| stopped())?;
        let sender = jobs.as_ref().ok_or_else(stopped)?;
        sender.send(job).map_err(|_| stopped())
    }

    async fn expire_table(&self, table: ExpiryTable, rules: Rules) -> Result<u64, StoreError> {
        let mut from = Vec::new();
        let mut removed = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.send(Job::ExpireChunk {
                table,
                from,
                rules,
                reply,
            })?;
            let progress = answer.await.map_err(|_| StoreError::WriterStopped {
                path: self.path.clone(),
            })??;
            removed += progress.removed;
            let Some(next) = progress.next else {
                return Ok(removed);
            };
            from = next;
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for EmbeddedStore {
    fn shard_names(&self) -> Vec<String> {
        vec!["embedded".to_owned()]
    }

    fn shard_of(&self, _triplet: &Triplet) -> usize {
        0
    }

    fn decide<'a>(&'a self, triplet: &'a Triplet, rules: &'a Rules) -> StoreFuture<'a, Verdict> {
        Box::pin(async move {
            let (triplet_key, client_key) = (triplet.key(), triplet.client_key().to_vec());
            // A read transaction is a few microseconds on a cached file: cheaper to run here
            // than to hand to a blocking thread.
            if let Some(verdict) = self.decide_without_writing(&triplet_key, &client_key, rules)? {
                return Ok(verdict);
            }

            let (reply, answer) = oneshot::channel();
            self.send(Job::Decide {
                triplet_key,
                client_key,
                rules: *rules,
                reply,
            })?;
            answer.await.map_err(|_| StoreError::WriterStopped {
                path: self.path.clone(),
            })?
        })
    }

    fn expire<'a>(&'a self, rules: &'a Rules) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let triplets = self.expire_table(ExpiryTable::Triplets, *rules).await?;
            let clients = self.expire_table(ExpiryTable::Clients, *rules).await?;
            Ok(triplets + clients)
        })
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    clock: Arc<dyn Clock>,
    sync_interval: Duration,
}

impl Writer {
    /// Takes jobs in batches until every sender is gone, then commits durably and returns.
    fn run(self, queue: &Receiver<Job>) {
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        loop {
            // While commits are waiting for their fsync, wait for work only until it is due.
            let first = if unsynced {
                let due = self.sync_interval.saturating_sub(last_sync.elapsed());
                match queue.recv_timeout(due) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match queue.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                }
            };

            let mut batch: Vec<Job> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                let Ok(job) = queue.try_recv() else { break };
                batch.push(job);
            }
            let durable = last_sync.elapsed() >= self.sync_interval;
            if batch.is_empty() && !durable {
                continue;
            }
            self.commit_batch(batch, durable);
            if durable {
                last_sync = Instant::now();
                unsynced = false;
            } else {
                unsynced = true;
            }
        }
        if unsynced {
            self.commit_batch(Vec::new(), true);
        }
        tracing::debug!(path = %self.path.display(), "greylist store closed");
    }

    /// Runs a batch in one transaction and answers each job once the commit is done.
    fn commit_batch(&self, batch: Vec<Job>, durable: bool) {
        let result = self.run_batch(batch, durable);
        let (answers, outcome) = match result {
            Ok(answers) => (answers, Ok(())),
            Err((answers, error)) => (answers, Err(error)),
        };
        for answer in answers {
            answer.send(&outcome, &self.path);
        }
    }

    fn run_batch(
        &self,
        batch: Vec<Job>,
        durable: bool,
    ) -> Result<Vec<Answer>, (Vec<Answer>, redb::Error)> {
        let mut answers = Vec::with_capacity(batch.len());
        let txn = match self.begin(durable) {
            Ok(txn) => txn,
            Err(error) => {
                answers.extend(batch.into_iter().map(Answer::failed));
                return Err((answers, error));
            }
        };
        for job in batch {
            answers.push(self.run_job(&txn, job));
        }
        match txn.commit() {
            Ok(()) => Ok(answers),
            Err(error) => Err((answers, error.into())),
        }
    }

    fn begin(&self, durable: bool) -> Result<WriteTransaction, redb::Error> {
        let mut txn = self.db.begin_write()?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)?;
        Ok(txn)
    }

    fn run_job(&self, txn: &WriteTransaction, job: Job) -> Answer {
        match job {
            Job::Decide {
                triplet_key,
                client_key,
                rules,
                reply,
            } => {
                let result = decide_in(txn, &triplet_key, &client_key, &rules, self.clock.now());
                Answer::Decided(reply, result)
            }
            Job::ExpireChunk {
                table,
                from,
                rules,
                reply,
            } => {
                let result = expire_chunk(txn, table, &from, &rules, self.clock.now());
                Answer::Expired(reply, result)
            }
        }
    }
}

/// A job's result, held until its transaction commits.
enum Answer {
    Decided(
        oneshot::Sender<Result<Verdict, StoreError>>,
        Result<Verdict, redb::Error>,
    ),
    Expired(
        oneshot::Sender<Result<ExpiryProgress, StoreError>>,
        Result<ExpiryProgress, redb::Error>,
    ),
}

impl Answer {
    fn failed(job: Job) -> Answer {
        let error = || redb::Error::Corrupted("transaction could not begin".to_owned());
        match job {
            Job::Decide { reply, .. } => Answer::Decided(reply, Err(error())),
            Job::ExpireChunk { reply, .. } => Answer::Expired(reply, Err(error())),
        }
    }

    /// Sends the job's result, or the commit's error if the commit failed. A caller that gave
    /// up (its budget ran out) has dropped its receiver; that is not an error here.
    fn send(self, commit: &Result<(), redb::Error>, path: &Path) {
        let error = |source: redb::Error| StoreError::Embedded {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let commit_error = || match commit {
            Ok(()) => None,
            Err(e) => Some(redb::Error::Corrupted(format!("commit failed: {e}"))),
        };
        match self {
            Answer::Decided(reply, result) => {
                let result = match commit_error() {
                    Some(e) => Err(error(e)),
                    None => result.map_err(error),
                };
                let _ = reply.send(result);
            }
            Answer::Expired(reply, result) => {
                let result = match commit_error() {
                    Some(e) => Err(error(e)),
                    None => result.map_err(error),
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// The rule applied inside the write transaction, with the records as they are now.
fn decide_in(
    txn: &WriteTransaction,
    triplet_key: &[u8],
    client_key: &[u8],
    rules: &Rules,
    now: u64,
) -> Result<Verdict, redb::Error> {
    let mut clients = txn.open_table(CLIENTS)?;
    let mut triplets = txn.open_table(TRIPLETS)?;
    let client = clients
        .get(client_key)?
        .map(|guard| client_record(guard.value()));
    let triplet = triplets
        .get(triplet_key)?
        .map(|guard| triplet_record(guard.value()));

    let (verdict, client_update, triplet_update) = rules.decide(client, triplet, now);
    if let Some(record) = client_update {
        clients.insert(
            client_key,
            (record.passes, record.last_counted, record.last_seen),
        )?;
    }
    if let Some(record) = triplet_update {
        triplets.insert(
            triplet_key,
            (record.first_seen, record.last_seen, record.passed),
        )?;
    }
    Ok(verdict)
}

/// Removes expired records among the next [`EXPIRY_CHUNK`] from `from` on.
fn expire_chunk(
    txn: &WriteTransaction,
    table: ExpiryTable,
    from: &[u8],
    rules: &Rules,
    now: u64,
) -> Result<ExpiryProgress, redb::Error> {
    match table {
        ExpiryTable::Triplets => {
            let mut triplets = txn.open_table(TRIPLETS)?;
            let is_expired = |value| rules.triplet_expired(&triplet_record(value), now);
            remove_expired(&mut triplets, from, is_expired)
        }
        ExpiryTable::Clients => {
            let mut clients = txn.open_table(CLIENTS)?;
            let is_expired = |value| rules.client_expired(&client_record(value), now);
            remove_expired(&mut clients, from, is_expired)
        }
    }
}

fn remove_expired<V>(
    table: &mut redb::Table<'_, &'static [u8], V>,
    from: &[u8],
    is_expired: impl Fn(V::SelfType<'_>) -> bool,
) -> Result<ExpiryProgress, redb::Error>
where
    V: redb::Value + 'static,
{
    let mut doomed = Vec::new();
    let mut next = None;
    for (scanned, entry) in table.range(from..)?.enumerate() {
        let (key, value) = entry?;
        if scanned == EXPIRY_CHUNK {
            next = Some(key.value().to_vec());
            break;
        }
        if is_expired(value.value()) {
            doomed.push(key.value().to_vec());
        }
    }
    for key in &doomed {
        table.remove(key.as_slice())?;
    }
    Ok(ExpiryProgress {
        removed: doomed.len() as u64,
        next,
    })
}

fn triplet_record((first_seen, last_seen, passed): (u64, u64, bool)) -> TripletRecord {
    TripletRecord {
        first_seen,
        last_seen,
        passed,
    }
}

fn client_record((passes, last_counted, last_seen): (u32, u64, u64)) -> ClientRecord {
    ClientRecord {
        passes,
        last_counted,
        last_seen,
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;
    use crate::clock::ManualClock;
    use crate::triplet::{ClientGrouping, TripletRequest};

    const T0: u64 = 1_700_000_000;

    fn temp_path(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "moat-greylist-unit-{label}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        dir.join(FILE_NAME)
    }

    fn triplet(sender: &str) -> Triplet {
        let ip = "192.0.2.10".parse().expect("ip");
        let request = TripletRequest::new(ip, sender, "bob@rcpt.example");
        Triplet::from_request(&request, &ClientGrouping::default())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn remembers_across_reopening() {
        let path = temp_path("reopen");
        let clock = ManualClock::starting_at(T0);
        let rules = Rules::default();
        let runtime = runtime();
        {
            let store = EmbeddedStore::open(&path, Arc::new(clock.clone()), DEFAULT_SYNC_INTERVAL)
                .expect("open");
            let verdict = runtime.block_on(store.decide(&triplet("a@x.example"), &rules));
            assert_eq!(
                verdict.expect("decide"),
                Verdict::Defer { retry_after: 300 }
            );
        }
        clock.advance(300);
        let store =
            EmbeddedStore::open(&path, Arc::new(clock), DEFAULT_SYNC_INTERVAL).expect("reopen");
        let verdict = runtime.block_on(store.decide(&triplet("a@x.example"), &rules));
        assert_eq!(
            verdict.expect("decide"),
            Verdict::PassedOnRetry { delayed: 300 }
        );
    }

    #[test]
    fn concurrent_first_attempts_leave_one_record() {
        let path = temp_path("concurrent");
        let clock = ManualClock::starting_at(T0);
        let store = Arc::new(
            EmbeddedStore::open(&path, Arc::new(clock.clone()), DEFAULT_SYNC_INTERVAL)
                .expect("open"),
        );
        let rules = Rules::default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a runtime");
        let verdicts = runtime.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..50 {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    store.decide(&triplet("a@x.example"), &rules).await
                }));
            }
            let mut verdicts = Vec::new();
            for task in tasks {
                verdicts.push(task.await.expect("join").expect("decide"));
            }
            verdicts
        });
        assert!(
            verdicts
                .iter()
                .all(|v| *v == Verdict::Defer { retry_after: 300 })
        );
        let txn = store.db.begin_read().expect("read");
        assert_eq!(
            txn.open_table(TRIPLETS).expect("table").len().expect("len"),
            1
        );
    }

    #[test]
    fn expiry_removes_only_expired_records_in_chunks() {
        let path = temp_path("expiry");
        let clock = ManualClock::starting_at(T0);
        // Ten thousand records one by one: without fsync per commit, as this is about expiry.
        let lazy_sync = Duration::from_secs(3600);
        let store = EmbeddedStore::open(&path, Arc::new(clock.clone()), lazy_sync).expect("open");
        let rules = Rules::default();
        let runtime = runtime();
        for i in 0..(EXPIRY_CHUNK + 5) {
            let sender = format!("old{i}x@old.example");
            runtime
                .block_on(store.decide(&triplet(&sender), &rules))
                .expect("decide");
        }
        clock.advance(rules.retry_window + 1);
        runtime
            .block_on(store.decide(&triplet("new@new.example"), &rules))
            .expect("decide");

        let removed = runtime.block_on(store.expire(&rules)).expect("expire");
        assert_eq!(removed, EXPIRY_CHUNK as u64 + 5);
        let txn = store.db.begin_read().expect("read");
        assert_eq!(
            txn.open_table(TRIPLETS).expect("table").len().expect("len"),
            1
        );
    }
}
