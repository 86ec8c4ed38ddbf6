//! The scheduler-side queue of ready root tasks, best priority first.
//!
//! Large submissions arrive as one sorted batch (a sort is much cheaper than a million heap
//! operations with cache misses); stragglers go to a heap. Entries may be stale (the task left
//! the queued state): the caller checks on pop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::ids::Tid;
use crate::spec::Priority;

/// A queued task: its priority, slot and slot generation.
pub(crate) type Entry = (Priority, Tid, u32);

/// Batches smaller than this go to the heap.
const MIN_BATCH: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct RootQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    batches: Vec<VecDeque<Entry>>,
    collecting: Option<Vec<Entry>>,
}

impl RootQueue {
    /// Starts collecting pushes into one batch.
    pub(crate) fn begin_batch(&mut self) {
        self.collecting = Some(Vec::new());
    }

    /// Sorts the collected batch into the queue.
    pub(crate) fn end_batch(&mut self) {
        let Some(mut v) = self.collecting.take() else {
            return;
        };
        if v.len() < MIN_BATCH {
            self.heap.extend(v.into_iter().map(Reverse));
        } else {
            v.sort_unstable();
            self.batches.push(v.into());
        }
    }

    pub(crate) fn push(&mut self, e: Entry) {
        match &mut self.collecting {
            Some(c) => c.push(e),
            None => self.heap.push(Reverse(e)),
        }
    }

    /// The best entry (possibly stale).
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let mut best: Option<(Entry, Option<usize>)> =
            self.heap.peek().map(|Reverse(e)| (*e, None));
        for (i, b) in self.batches.iter().enumerate() {
            if let Some(&e) = b.front()
                && best.is_none_or(|(x, _)| e < x)
            {
                best = Some((e, Some(i)));
            }
        }
        let (e, from) = best?;
        match from {
            None => {
                self.heap.pop();
            }
            Some(i) => {
                self.batches[i].pop_front();
                if self.batches[i].is_empty() {
                    self.batches.swap_remove(i);
                }
            }
        }
        Some(e)
    }

    /// Entries held, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
            + self.batches.iter().map(VecDeque::len).sum::<usize>()
            + self.collecting.as_ref().map_or(0, Vec::len)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry (when none is live any more).
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.batches.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(order: u32) -> Priority {
        Priority {
            user: 0,
            generation: 0,
            order,
        }
    }

    #[test]
    fn pops_in_priority_order_across_batches_and_heap() {
        let mut q = RootQueue::default();
        q.begin_batch();
        for i in (0..100).rev() {
            q.push((p(i * 2), i, 0));
        }
        q.end_batch();
        q.push((p(1), 1000, 0));
        q.push((p(3), 1001, 0));
        let orders: Vec<u32> = std::iter::from_fn(|| q.pop())
            .map(|e| e.0.order)
            .take(5)
            .collect();
        assert_eq!(orders, vec![0, 1, 2, 3, 4]);
        assert_eq!(q.len(), 97);
    }
}
