//! Group commit for the store's writes (on PostgreSQL the durable hot path
//! in `postgres/hot.rs`, the relaxed outcomes and progress in
//! `postgres/writes.rs`): the writes of many transactions go out in one
//! statement instead of one each. A writer waits for its own batch, so it
//! still knows its row is written (and fenced) when it returns. Batches
//! form on their own: while a flush runs, new writes queue up and go out
//! together in the next one.
//!
//! Only writes go through it: a write's cost is the commit (one WAL flush
//! per statement), which batching shares; a read costs no flush, so reads
//! are plain queries.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{StoreError, StoreResult};

/// Largest batch of the store's writers; bounded so one statement stays
/// small.
const MAX_BATCH: usize = 128;
/// Flushes in flight per kind of write in the store: one, so the next batch
/// forms while the current one waits for its commit; batches grow with
/// load and the database does one statement and one WAL flush for many
/// transactions (measured: about twice the TCC throughput of 4 in flight).
const IN_FLIGHT: usize = 1;

type Reply<R> = oneshot::Sender<StoreResult<R>>;

/// Queue of writes of one kind, flushed in batches by a background task.
pub(super) struct GroupWriter<T, R> {
    tx: mpsc::UnboundedSender<(T, Reply<R>)>,
}

impl<T, R> GroupWriter<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// Starts the flushing task. `flush` gets a batch in which `key` is
    /// unique (two writes to one row never share a statement) and returns
    /// one result per item, in order. At most `in_flight` flushes run at
    /// once; a batch holds at most `max_batch` items.
    pub(super) fn start<K, F, Fut>(
        max_batch: usize,
        in_flight: usize,
        key: fn(&T) -> K,
        flush: F,
    ) -> Self
    where
        K: Eq + Hash + Send + 'static,
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StoreResult<Vec<R>>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(T, Reply<R>)>();
        let flush = Arc::new(flush);
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            let mut carry: Option<(T, Reply<R>)> = None;
            loop {
                let first = match carry.take() {
                    Some(item) => item,
                    None => match rx.recv().await {
                        Some(item) => item,
                        // Every sender is gone: the store was dropped.
                        None => return,
                    },
                };
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                // Collect what queued up while we waited for a permit.
                let mut keys = HashSet::new();
                keys.insert(key(&first.0));
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(item) => {
                            if keys.insert(key(&item.0)) {
                                batch.push(item);
                            } else {
                                carry = Some(item);
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let flush = Arc::clone(&flush);
                tokio::spawn(async move {
                    let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
                    let n = items.len();
                    match flush(items).await {
                        Ok(results) if results.len() == n => {
                            for (reply, r) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(r));
                            }
                        }
                        Ok(results) => {
                            let e = format!("batch of {n} returned {} results", results.len());
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Database(e.clone())));
                            }
                        }
                        // Every write of the batch fails as the statement did, so
                        // a conflict stays a conflict and an outage an outage.
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    /// The store's writers: `flush` runs one statement for a batch on
    /// `pool`, with the batch size and flushes in flight above.
    pub(super) fn on_pool<P, K, F, Fut>(pool: P, key: fn(&T) -> K, flush: F) -> Self
    where
        P: Clone + Send + Sync + 'static,
        K: Eq + Hash + Send + 'static,
        F: Fn(P, Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StoreResult<Vec<R>>> + Send + 'static,
    {
        Self::start(MAX_BATCH, IN_FLIGHT, key, move |items| {
            flush(pool.clone(), items)
        })
    }

    /// Queues one write and waits until its batch is written.
    pub(super) async fn write(&self, item: T) -> StoreResult<R> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| StoreError::Unavailable("store is shutting down".into()))?;
        done.await
            .map_err(|_| StoreError::Unavailable("batch writer stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_writes_share_batches_and_get_their_own_results() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&sizes);
        let w = Arc::new(GroupWriter::start(
            64,
            1,
            |x: &u32| *x,
            move |items: Vec<u32>| {
                let sizes = Arc::clone(&s2);
                async move {
                    sizes.lock().unwrap().push(items.len());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(items.into_iter().map(|x| x * 2).collect())
                }
            },
        ));
        let tasks: Vec<_> = (0..100u32)
            .map(|i| {
                let w = Arc::clone(&w);
                tokio::spawn(async move { w.write(i).await.unwrap() == i * 2 })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.len() < 100, "writes were grouped: {sizes:?}");
    }

    #[tokio::test]
    async fn duplicate_keys_never_share_a_batch() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let w = Arc::new(GroupWriter::start(
            64,
            1,
            |x: &(u32, u32)| x.0,
            move |items: Vec<(u32, u32)>| {
                let seen = Arc::clone(&s2);
                async move {
                    let keys: HashSet<u32> = items.iter().map(|x| x.0).collect();
                    assert_eq!(keys.len(), items.len());
                    seen.lock().unwrap().extend(items.iter().copied());
                    Ok(vec![(); items.len()])
                }
            },
        ));
        let tasks: Vec<_> = (0..40u32)
            .map(|i| {
                let w = Arc::clone(&w);
                tokio::spawn(async move { w.write((i % 3, i)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(seen.lock().unwrap().len(), 40);
    }

    #[tokio::test]
    async fn a_failed_flush_fails_every_write_of_the_batch() {
        let w = GroupWriter::start(
            8,
            1,
            |x: &u32| *x,
            |_items: Vec<u32>| async { Err::<Vec<()>, _>(StoreError::Unavailable("down".into())) },
        );
        assert!(matches!(w.write(1).await, Err(StoreError::Unavailable(_))));
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_the_kind_of_error() {
        let w = GroupWriter::start(
            8,
            1,
            |x: &u32| *x,
            |_items: Vec<u32>| async {
                Err::<Vec<()>, _>(StoreError::Corrupt("status \"x\"".into()))
            },
        );
        assert!(matches!(w.write(1).await, Err(StoreError::Corrupt(m)) if m == "status \"x\""));
    }
}
