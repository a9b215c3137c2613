//! The retrier's ticks on the one writer/retrier harness
//! (`tasks_apply::testing::Harness`; feature `testing`, and this crate's own
//! tests).

use tasks_apply::testing::Harness;
use tasks_kv::AtomicKv;

use crate::{Retrier, TickReport};

/// Retrier ticks through a [`Harness`]'s writer.
pub trait Tick {
    /// One retrier tick over `tasks`.
    fn tick_on<T: AtomicKv>(&self, tasks: &T) -> TickReport;

    /// One retrier tick.
    fn tick(&self) -> TickReport;
}

impl Tick for Harness {
    fn tick_on<T: AtomicKv>(&self, tasks: &T) -> TickReport {
        self.with_writer(tasks, |w| {
            Retrier {
                writer: w,
                budget_millis: 10_000,
                reconcile: true,
                replay: true,
                claim_millis: crate::CLAIM_MILLIS,
            }
            .tick()
        })
        .expect("the local store works, so a tick completes")
    }

    fn tick(&self) -> TickReport {
        self.tick_on(&self.tasks)
    }
}
