//! Placement: which worker runs a ready task, and handing queued root tasks to workers.

use crate::config::Placement;
use crate::core::Core;
use crate::ids::{Tid, Wid};
use crate::state::{Arg, TaskState};

/// Most candidate workers considered for one placement.
const MAX_CANDIDATES: usize = 16;
/// How much the queue of a candidate weighs in placing an early task (against transfers).
const EARLY_QUEUE_WEIGHT: f64 = 0.5;
/// Idle workers added to the holders of the inputs as candidates.
const IDLE_CANDIDATES: usize = 2;

impl Core {
    /// Chooses a worker for a ready task, or None if no running worker may run it.
    pub(crate) fn decide_worker(&mut self, t: Tid) -> Option<Wid> {
        if self.running.is_empty() {
            return None;
        }
        match self.cfg.placement {
            Placement::EarliestStart => self.earliest_start(t),
            Placement::Random { .. } => {
                let allowed = self.allowed_running(t);
                if allowed.is_empty() {
                    return None;
                }
                let i = (self.next_random() % allowed.len() as u64) as usize;
                Some(allowed[i])
            }
            Placement::RoundRobin => {
                let allowed = self.allowed_running(t);
                if allowed.is_empty() {
                    return None;
                }
                self.rr = self.rr.wrapping_add(1);
                Some(allowed[self.rr % allowed.len()])
            }
        }
    }

    /// Running workers that satisfy the task's restrictions (a scan: baselines only).
    fn allowed_running(&self, t: Tid) -> Vec<Wid> {
        let r = self.tasks[t as usize].restrictions();
        self.running
            .members()
            .iter()
            .copied()
            .filter(|&w| r.is_none_or(|r| self.workers[w as usize].satisfies(r)))
            .collect()
    }

    /// Minimises estimated start time over the holders of the inputs plus a few idle workers.
    fn earliest_start(&mut self, t: Tid) -> Option<Wid> {
        let mut cands = std::mem::take(&mut self.scratch);
        cands.clear();
        let task = &self.tasks[t as usize];
        if let Some(r) = task.restrictions() {
            if !r.workers.is_empty() {
                for id in &r.workers {
                    if let Some(&w) = self.worker_index.get(id)
                        && self.running.contains(w)
                        && self.workers[w as usize].satisfies(r)
                    {
                        cands.push(w);
                    }
                }
            } else {
                // Resource restrictions: a scan over running workers (their number, not tasks).
                cands.extend(
                    self.running
                        .members()
                        .iter()
                        .copied()
                        .filter(|&w| self.workers[w as usize].satisfies(r)),
                );
            }
        } else {
            'deps: for a in task.args.iter() {
                let Arg::Dep(d) = *a else { continue };
                match &self.tasks[d as usize].state {
                    TaskState::Memory { holders, .. } => {
                        for h in holders.iter() {
                            if cands.len() >= MAX_CANDIDATES {
                                break 'deps;
                            }
                            if self.running.contains(h) && !cands.contains(&h) {
                                cands.push(h);
                            }
                        }
                    }
                    // An input being computed (early dispatch): where it will be.
                    &TaskState::Processing { worker: h, .. } => {
                        if cands.len() >= MAX_CANDIDATES {
                            break 'deps;
                        }
                        if self.running.contains(h) && !cands.contains(&h) {
                            cands.push(h);
                        }
                    }
                    _ => {}
                }
            }
            let idle = self.idle.members();
            // An early task goes where its inputs are computed (below); idle workers are
            // candidates for ready tasks only.
            let early = task
                .deps()
                .any(|d| matches!(self.tasks[d as usize].state, TaskState::Processing { .. }));
            if !idle.is_empty() && (!early || cands.is_empty()) {
                for k in 0..IDLE_CANDIDATES.min(idle.len()) {
                    let w = idle[(self.rr + k) % idle.len()];
                    if !cands.contains(&w) {
                        cands.push(w);
                    }
                }
            }
            if cands.is_empty() {
                let run = self.running.members();
                for k in 0..4.min(run.len()) {
                    cands.push(run[(self.rr + k) % run.len()]);
                }
            }
            self.rr = self.rr.wrapping_add(1);
        }
        // Equal estimates go to the less loaded candidate, not to the first one (the holder of
        // the first argument): with both queues shorter than the inputs' wait, an early task's
        // estimate is its transfers alone, and a stencil's last column then followed its left
        // neighbour onto the busier worker.
        let mut best: Option<(f64, u64, Wid)> = None;
        for &w in &cands {
            let cost = self.start_time(t, w);
            let wk = &self.workers[w as usize];
            let load = wk.occupancy / u64::from(wk.slots.max(1));
            if best.is_none_or(|(c, l, _)| cost < c || (cost == c && load < l)) {
                best = Some((cost, load, w));
            }
        }
        self.scratch = cands;
        best.map(|(_, _, w)| w)
    }

    /// Estimated start time of `t` on `w`, in microseconds: queued work per slot plus the
    /// transfer time of the inputs `w` lacks, each a peer round trip (`peer_latency`) plus
    /// its bytes over the bandwidth (for small chunks the round trip is most of it).
    ///
    /// An input still being computed (early dispatch) is ready after its own estimated
    /// duration at the earliest.
    pub(crate) fn start_time(&self, t: Tid, w: Wid) -> f64 {
        let wk = &self.workers[w as usize];
        let queue = wk.occupancy as f64 / f64::from(wk.slots);
        let mut ready = 0.0f64;
        for a in self.tasks[t as usize].args.iter() {
            if let Arg::Dep(d) = *a
                && let TaskState::Processing { est, .. } = self.tasks[d as usize].state
            {
                ready = ready.max(f64::from(est));
            }
        }
        let transfers = self.fetch_time(t, w);
        if ready > 0.0 {
            // Early: the task waits for its inputs wherever it goes, and the queue ahead of
            // it is mostly work it waits for anyway; stay with the inputs unless that queue
            // is much longer.
            transfers + (queue - ready).max(0.0) * EARLY_QUEUE_WEIGHT
        } else {
            queue + transfers
        }
    }

    /// Estimated time for `w` to fetch the inputs of `t` it lacks, in microseconds: a peer
    /// round trip (`peer_latency`) for each, plus their bytes over the bandwidth.
    pub(crate) fn fetch_time(&self, t: Tid, w: Wid) -> f64 {
        let mut round_trips = 0u32;
        for a in self.tasks[t as usize].args.iter() {
            let Arg::Dep(d) = *a else { continue };
            round_trips += u32::from(match &self.tasks[d as usize].state {
                &TaskState::Processing { worker, .. } => worker != w,
                TaskState::Memory { holders, .. } => !holders.contains(w),
                _ => false,
            });
        }
        f64::from(round_trips) * self.cfg.peer_latency.0 as f64
            + self.missing_bytes(t, w) as f64 / self.bandwidth
    }

    /// Bytes of `t`'s inputs that `w` does not hold (for an input still being computed
    /// elsewhere, its function's measured output size).
    pub(crate) fn missing_bytes(&self, t: Tid, w: Wid) -> u64 {
        let mut bytes = 0;
        for a in self.tasks[t as usize].args.iter() {
            let Arg::Dep(d) = *a else { continue };
            let dep = &self.tasks[d as usize];
            match &dep.state {
                TaskState::Memory { nbytes, holders } if !holders.contains(w) => bytes += nbytes,
                TaskState::Processing { worker, .. } if *worker != w => {
                    bytes += self.fns[dep.func as usize].nbytes.unwrap_or(0.0) as u64;
                }
                _ => {}
            }
        }
        bytes
    }

    /// Hands queued root tasks, best priority first, to workers below their root-task cap.
    pub(crate) fn fill_queue(&mut self) {
        while self.queued > 0 && !self.underfull.is_empty() {
            let Some((_, t, generation)) = self.queue.pop() else {
                break;
            };
            let task = &self.tasks[t as usize];
            if task.generation != generation || !matches!(task.state, TaskState::Queued) {
                continue;
            }
            let members = self.underfull.members();
            let mut best = members[0];
            for &w in members.iter().take(4) {
                if self.workers[w as usize].processing.len()
                    < self.workers[best as usize].processing.len()
                {
                    best = w;
                }
            }
            self.assign(t, best);
        }
        if self.queued == 0 && !self.queue.is_empty() {
            self.queue.clear();
        }
    }
}
