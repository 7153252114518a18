//! Fresh before delete: each repository re-reads "in use" right before its
//! deletions, because deleting takes minutes and a rollback or a new schedule
//! may start using an old digest meanwhile.
//!
//! Repositories run concurrently, so reads are shared: a repository takes a
//! ticket when its plan is done, and any read that *started* after that
//! ticket is fresh enough for it. One read is in flight at a time; those who
//! wait for it get its result instead of starting their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::lock::Mutex;

use super::{InUse, InUseReader, SourceFailure};

/// The outcome of one read, shared by every repository that waited for it.
pub type Reading = Arc<Result<InUse, SourceFailure>>;

pub struct Fresh<'a> {
    reader: &'a dyn InUseReader,
    clock: AtomicU64,
    last: Mutex<Option<(u64, Reading)>>,
    reads: AtomicU64,
}

impl<'a> Fresh<'a> {
    pub fn new(reader: &'a dyn InUseReader) -> Self {
        Fresh { reader, clock: AtomicU64::new(0), last: Mutex::new(None), reads: AtomicU64::new(0) }
    }

    /// A point in time: call it when a plan is done.
    pub fn ticket(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A read that started after `ticket`.
    pub async fn after(&self, ticket: u64) -> Reading {
        let mut last = self.last.lock().await;
        if let Some((started, reading)) = &*last {
            if *started > ticket {
                return reading.clone();
            }
        }
        let started = self.ticket();
        self.reads.fetch_add(1, Ordering::SeqCst);
        let reading: Reading = Arc::new(self.reader.read().await);
        *last = Some((started, reading.clone()));
        reading
    }

    /// How many reads were made (for the report).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    struct Counting(AtomicU64);

    #[async_trait]
    impl InUseReader for Counting {
        async fn read(&self) -> Result<InUse, SourceFailure> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let mut set = InUse::default();
            set.add_digest(format!("sha256:{n}"), super::super::User::new(super::super::Source::Task, "t", "r"));
            Ok(set)
        }
    }

    #[tokio::test]
    async fn a_read_is_shared_only_by_plans_done_before_it_started() {
        let reader = Counting(AtomicU64::new(0));
        let fresh = Fresh::new(&reader);
        let a = fresh.ticket();
        let b = fresh.ticket();
        let first = fresh.after(a).await;
        let again = fresh.after(b).await;
        assert!(Arc::ptr_eq(&first, &again), "b's plan was done before the read started");
        let c = fresh.ticket();
        let later = fresh.after(c).await;
        assert!(!Arc::ptr_eq(&first, &later), "c's plan was done after: it needs a newer read");
        assert_eq!(fresh.reads(), 2);
    }
}
