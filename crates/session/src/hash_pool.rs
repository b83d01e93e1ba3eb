//! [`HashPool`]: the only place password hashes (argon2id, 19 MiB of memory each) are
//! computed. A fixed set of threads (`session.password_hash_concurrency`, default one per
//! core) takes jobs from a bounded queue (`session.password_hash_queue`); when the queue is
//! full a caller gets [`SessionError::Busy`] at once instead of a thread and 19 MiB more.
//! Dedicated threads also keep the allocator's arenas (and so the memory kept after a burst)
//! to one per hashing thread.

use crate::error::{Result, SessionError};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Bounded password hashing. Cheap to share behind an `Arc`.
pub struct HashPool {
    jobs: SyncSender<Job>,
    threads: usize,
    queue: usize,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.threads)
            .field("queue", &self.queue)
            .finish()
    }
}

impl HashPool {
    /// `threads` hashing threads (0 = one per CPU core) and up to `queue` waiting jobs.
    pub fn new(threads: usize, queue: usize) -> Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("rakor-hash-{i}"))
                .spawn(move || worker(&rx))
                .map_err(|e| {
                    SessionError::Storage(format!("cannot start a hashing thread: {e}"))
                })?;
        }
        Ok(Self {
            jobs: tx,
            threads,
            queue,
        })
    }

    /// Hashing threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` on a hashing thread; `Busy` at once if `threads` jobs run and `queue` wait.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(SessionError::Busy {
                    retry_after_secs: 2,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(SessionError::Storage("the hashing threads stopped".into()))
            }
        }
        rx.await
            .map_err(|_| SessionError::Storage("a hashing job failed".into()))
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only while taking a job, not while running it.
        let job = {
            let guard = rx.lock().unwrap_or_else(|e| e.into_inner());
            guard.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return, // the pool was dropped
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn at_most_threads_run_and_the_queue_overflows_to_busy() {
        let pool = Arc::new(HashPool::new(2, 3).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut accepted = Vec::new();
        let mut busy = 0;
        // 2 run, 3 wait: the 6th..10th are refused at once.
        for _ in 0..10 {
            let (running, peak, release_rx, started_tx) = (
                Arc::clone(&running),
                Arc::clone(&peak),
                Arc::clone(&release_rx),
                started_tx.clone(),
            );
            let pool = Arc::clone(&pool);
            let fut = async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let _ = started_tx.send(());
                    let _ = release_rx.lock().unwrap().recv();
                    running.fetch_sub(1, Ordering::SeqCst);
                    7
                })
                .await
            };
            let mut fut = Box::pin(fut);
            // Poll once so that the job is submitted (or refused) in order.
            match futures_poll_once(&mut fut).await {
                Some(Err(SessionError::Busy { .. })) => busy += 1,
                Some(other) => panic!("finished early: {other:?}"),
                None => accepted.push(tokio::spawn(fut)),
            }
            if accepted.len() == 2 && busy == 0 {
                // Both threads have taken a job before the queue fills.
                started_rx.recv().await;
                started_rx.recv().await;
            }
        }
        assert_eq!((accepted.len(), busy), (5, 5));
        for _ in 0..5 {
            release_tx.send(()).unwrap();
        }
        for h in accepted {
            assert_eq!(h.await.unwrap().unwrap(), 7);
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "never more than 2 at once");
        // Afterwards the pool takes work again.
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
    }

    /// Poll a future once: `Some(output)` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *f).poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }
}
