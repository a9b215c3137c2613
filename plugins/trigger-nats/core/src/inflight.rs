//! Drain bookkeeping: how many handlers are running, and waiting for none.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Counts running handlers; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    inner: Arc<(AtomicUsize, Notify)>,
}

/// Held while a handler runs; dropping it marks the handler done.
#[derive(Debug)]
pub struct Guard(InFlight);

impl InFlight {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks one handler as started.
    pub fn start(&self) -> Guard {
        self.inner.0.fetch_add(1, Ordering::SeqCst);
        Guard(self.clone())
    }

    /// Handlers running now.
    pub fn count(&self) -> usize {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Resolves when no handler is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.inner.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.1.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_guard() {
        let f = InFlight::new();
        f.idle().await; // zero: immediate
        let a = f.start();
        let b = f.start();
        assert_eq!(f.count(), 2);
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one still running");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .ok()
            .and_then(Result::ok)
            .expect("idle after last guard");
        assert_eq!(f.count(), 0);
    }
}
