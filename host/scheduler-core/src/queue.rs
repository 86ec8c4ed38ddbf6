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
    /// Sorted batches, by slot; `None` once drained (slots are reused).
    batches: Vec<Option<VecDeque<Entry>>>,
    free_batches: Vec<usize>,
    /// The head entry of every live batch, best first.
    heads: BinaryHeap<Reverse<(Entry, usize)>>,
    collecting: Option<Vec<Entry>>,
    len: usize,
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
            return;
        }
        v.sort_unstable();
        let head = v[0];
        let batch: VecDeque<Entry> = v.into();
        let slot = match self.free_batches.pop() {
            Some(slot) => {
                self.batches[slot] = Some(batch);
                slot
            }
            None => {
                self.batches.push(Some(batch));
                self.batches.len() - 1
            }
        };
        self.heads.push(Reverse((head, slot)));
    }

    pub(crate) fn push(&mut self, e: Entry) {
        self.len += 1;
        match &mut self.collecting {
            Some(c) => c.push(e),
            None => self.heap.push(Reverse(e)),
        }
    }

    /// The best entry (possibly stale). O(log n).
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let from_heap = match (self.heap.peek(), self.heads.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(Reverse(h)), Some(Reverse((b, _)))) => h <= b,
        };
        self.len -= 1;
        if from_heap {
            return self.heap.pop().map(|Reverse(e)| e);
        }
        let Reverse((e, slot)) = self.heads.pop()?;
        let batch = self.batches[slot].as_mut()?;
        batch.pop_front();
        match batch.front() {
            Some(&next) => self.heads.push(Reverse((next, slot))),
            None => {
                self.batches[slot] = None;
                self.free_batches.push(slot);
            }
        }
        Some(e)
    }

    /// Entries held, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops every entry (when none is live any more).
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.batches.clear();
        self.free_batches.clear();
        self.heads.clear();
        if let Some(c) = &mut self.collecting {
            c.clear();
        }
        self.len = 0;
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
        // Many batches: pops stay in order, each in O(log n).
        for b in 0..50u32 {
            q.begin_batch();
            for i in 0..64u32 {
                q.push((p(1000 + i * 50 + b), 0, 0));
            }
            q.end_batch();
        }
        let mut last = 0;
        let mut n = 0;
        while let Some(e) = q.pop() {
            assert!(e.0.order >= last);
            last = e.0.order;
            n += 1;
        }
        assert_eq!(n, 97 + 50 * 64);
        assert!(q.is_empty());
    }
}
