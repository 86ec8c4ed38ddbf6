//! The one place where task states change, and the reactions that follow a change.

use crate::collections::Holders;
use crate::core::{Core, Work};
use crate::ids::{NO_WORKER, Tid, Wid};
use crate::io::{InputLocation, Output, RunTask};
use crate::spec::ArgSpec;
use crate::state::{Arg, Kind, TaskState};

impl Core {
    /// Moves task `t` to `new`, doing the bookkeeping of leaving the old state and entering the
    /// new one. Every state change goes through here.
    pub(crate) fn transition(&mut self, t: Tid, new: TaskState) {
        let old = std::mem::replace(&mut self.tasks[t as usize].state, TaskState::Released);
        let (from, to) = (old.kind(), new.kind());
        let legal = match from {
            Kind::Released => to != Kind::Released,
            Kind::Waiting => !matches!(to, Kind::Waiting | Kind::Forgotten),
            Kind::Queued => matches!(
                to,
                Kind::Released | Kind::Processing | Kind::Memory | Kind::Erred
            ),
            Kind::NoWorker => !matches!(to, Kind::NoWorker | Kind::Forgotten | Kind::Queued),
            Kind::Processing => {
                matches!(
                    to,
                    Kind::Released | Kind::Processing | Kind::Memory | Kind::Erred
                )
            }
            Kind::Memory => to == Kind::Released,
            Kind::Erred => matches!(to, Kind::Released | Kind::Forgotten),
            Kind::Forgotten => false,
        };
        if !legal {
            let key = self.tasks[t as usize].key;
            self.violations
                .push(format!("illegal transition {from:?} -> {to:?} of {key:?}"));
            self.tasks[t as usize].state = old;
            return;
        }
        self.phases[from as usize] -= 1;
        if to != Kind::Forgotten {
            self.phases[to as usize] += 1;
        }
        self.exit_state(t, old);
        if from.is_active() != to.is_active() {
            let up = to.is_active();
            for i in 0..self.tasks[t as usize].args.len() {
                if let Arg::Dep(d) = self.tasks[t as usize].args[i] {
                    let dep = &mut self.tasks[d as usize];
                    if up {
                        dep.waiters += 1;
                    } else {
                        dep.waiters -= 1;
                        self.work.push(Work::CheckRelease(d));
                    }
                }
            }
        }
        self.enter_state(t, new);
        if from == Kind::Processing && to != Kind::Memory {
            // Dependents dispatched early were told this task would be computed where it
            // was: place them again once it is placed again.
            self.unassign_early_dependents(t);
        }
    }

    /// Queues the re-placement of `t`'s dependents that were dispatched early.
    fn unassign_early_dependents(&mut self, t: Tid) {
        for r in &self.tasks[t as usize].dependents {
            let dep = &self.tasks[r.tid as usize];
            if dep.generation == r.generation
                && matches!(dep.state, TaskState::Processing { pending: 1.., .. })
            {
                self.work.push(Work::Unassign(r.tid));
            }
        }
    }

    /// Queues an early-dispatch check of `t`'s waiting dependents (`t` is now assigned with
    /// all of its inputs in memory, or in memory itself).
    pub(crate) fn check_early_dependents(&mut self, t: Tid) {
        if !self.cfg.early_dispatch {
            return;
        }
        for r in &self.tasks[t as usize].dependents {
            let dep = &self.tasks[r.tid as usize];
            if dep.generation == r.generation && matches!(dep.state, TaskState::Waiting { .. }) {
                self.work.push(Work::Early(r.tid));
            }
        }
    }

    /// Dispatches a waiting task early if each of its inputs is in memory or assigned to a
    /// worker with all of its own inputs in memory (and its function's output size is
    /// measured and its estimated duration below `early_dispatch_below`).
    pub(crate) fn try_early(&mut self, t: Tid) {
        if !self.cfg.early_dispatch {
            return;
        }
        let task = &self.tasks[t as usize];
        let TaskState::Waiting { waiting_on } = task.state else {
            return;
        };
        // Inputs being computed must have a measured output size: placement weighs what
        // each candidate worker would have to fetch.
        // ... and be short: the round trip saved matters only next to short tasks, and a
        // placement decided later knows more.
        let short = self.cfg.early_dispatch_below.0;
        let eligible = task.deps().all(|d| {
            let dep = &self.tasks[d as usize];
            match dep.state {
                TaskState::Memory { .. } => true,
                TaskState::Processing {
                    pending: 0, est, ..
                } => u64::from(est) < short && self.fns[dep.func as usize].nbytes.is_some(),
                _ => false,
            }
        });
        if !eligible {
            return;
        }
        let Some(w) = self.decide_worker(t) else {
            return;
        };
        let est = self.estimate(t);
        self.stats.early_runs += 1;
        self.transition(
            t,
            TaskState::Processing {
                worker: w,
                pos: 0,
                est,
                steal_to: NO_WORKER,
                pending: waiting_on,
            },
        );
    }

    /// Takes back an early-dispatched task whose input will not be computed where its
    /// worker was told: cancels it there and places it again.
    pub(crate) fn unassign(&mut self, t: Tid) {
        if let TaskState::Processing {
            worker,
            pending: 1..,
            ..
        } = self.tasks[t as usize].state
        {
            let key = self.tasks[t as usize].key;
            self.emit_cancel(worker, key);
            self.transition(t, TaskState::Released);
        }
    }

    fn exit_state(&mut self, t: Tid, old: TaskState) {
        match old {
            TaskState::Released | TaskState::Waiting { .. } | TaskState::Erred { .. } => {}
            TaskState::Queued => self.queued -= 1,
            TaskState::NoWorker => {
                self.no_worker.remove(&t);
            }
            TaskState::Processing {
                worker,
                pos,
                est,
                steal_to,
                ..
            } => {
                let wk = &mut self.workers[worker as usize];
                wk.processing.swap_remove(pos as usize);
                wk.occupancy -= u64::from(est);
                if let Some(&moved) = wk.processing.get(pos as usize)
                    && let TaskState::Processing { pos: p, .. } =
                        &mut self.tasks[moved as usize].state
                {
                    *p = pos;
                }
                if steal_to != NO_WORKER {
                    self.workers[steal_to as usize].incoming_steals -= 1;
                    if let Some(i) = self.steals.iter().position(|&s| s == t) {
                        self.steals.swap_remove(i);
                    }
                    self.refresh_worker(steal_to);
                }
                self.refresh_worker(worker);
            }
            TaskState::Memory { nbytes, holders } => {
                let key = self.tasks[t as usize].key;
                for w in holders.iter() {
                    let wk = &mut self.workers[w as usize];
                    if wk.has_what.remove(&t) {
                        wk.nbytes -= nbytes;
                    }
                    if wk.alive {
                        self.outputs
                            .push_back(Output::ReleaseChunk { worker: wk.id, key });
                    }
                }
                // Dependents counted this chunk as present: count it missing again.
                let dependents = std::mem::take(&mut self.tasks[t as usize].dependents);
                for r in &dependents {
                    let dep = &mut self.tasks[r.tid as usize];
                    if dep.generation != r.generation {
                        continue;
                    }
                    match &mut dep.state {
                        TaskState::Waiting { waiting_on } => *waiting_on += 1,
                        TaskState::Processing { pending, .. } => *pending += 1,
                        TaskState::NoWorker => self.work.push(Work::Recheck(r.tid)),
                        _ => {}
                    }
                }
                self.tasks[t as usize].dependents = dependents;
                self.undeliver(t);
            }
            TaskState::Forgotten => {}
        }
    }

    fn enter_state(&mut self, t: Tid, new: TaskState) {
        match new {
            TaskState::Released => {
                self.tasks[t as usize].state = TaskState::Released;
                self.work.push(Work::Settle(t));
            }
            TaskState::Waiting { .. } => self.tasks[t as usize].state = new,
            TaskState::Queued => {
                let task = &mut self.tasks[t as usize];
                task.state = TaskState::Queued;
                self.queue.push((task.priority, t, task.generation));
                self.queued += 1;
            }
            TaskState::NoWorker => {
                self.tasks[t as usize].state = TaskState::NoWorker;
                self.no_worker.insert(t);
            }
            TaskState::Processing {
                worker,
                est,
                steal_to,
                pending,
                ..
            } => {
                let wk = &mut self.workers[worker as usize];
                let pos = wk.processing.len() as u32;
                wk.processing.push(t);
                wk.occupancy += u64::from(est);
                self.tasks[t as usize].state = TaskState::Processing {
                    worker,
                    pos,
                    est,
                    steal_to,
                    pending,
                };
                self.refresh_worker(worker);
                self.stats.runs += 1;
                self.emit_run(t, worker);
                if pending == 0 {
                    self.check_early_dependents(t);
                }
            }
            TaskState::Memory {
                nbytes,
                ref holders,
            } => {
                for w in holders.iter() {
                    let wk = &mut self.workers[w as usize];
                    if wk.has_what.insert(t) {
                        wk.nbytes += nbytes;
                    }
                }
                self.tasks[t as usize].state = new;
                self.stats.completed += 1;
                let dependents = std::mem::take(&mut self.tasks[t as usize].dependents);
                for r in &dependents {
                    let dep = &mut self.tasks[r.tid as usize];
                    if dep.generation != r.generation {
                        continue;
                    }
                    match &mut dep.state {
                        TaskState::Waiting { waiting_on } => {
                            *waiting_on -= 1;
                            self.work.push(if *waiting_on == 0 {
                                Work::Ready(r.tid)
                            } else {
                                Work::Early(r.tid)
                            });
                        }
                        TaskState::Processing { pending, .. } if *pending > 0 => {
                            *pending -= 1;
                            if *pending == 0 {
                                self.work.push(Work::EarlyDependents(r.tid));
                            }
                        }
                        _ => {}
                    }
                }
                self.tasks[t as usize].dependents = dependents;
                self.deliver(t);
                self.work.push(Work::CheckRelease(t));
            }
            TaskState::Erred { ref error } => {
                let error = error.clone();
                self.tasks[t as usize].state = new;
                self.stats.erred += 1;
                let dependents = std::mem::take(&mut self.tasks[t as usize].dependents);
                for r in &dependents {
                    let dep = &self.tasks[r.tid as usize];
                    if dep.generation == r.generation && dep.state.kind().is_active() {
                        self.work.push(Work::Propagate(r.tid, error.clone()));
                    }
                }
                self.tasks[t as usize].dependents = dependents;
                self.deliver(t);
                self.work.push(Work::CheckForget(t));
            }
            TaskState::Forgotten => self.forget(t),
        }
    }

    fn forget(&mut self, t: Tid) {
        let hash = Self::hash_key(&self.tasks[t as usize].key);
        if let Ok(entry) = self.index.find_entry(hash, |&x| x == t) {
            entry.remove();
        }
        let task = &mut self.tasks[t as usize];
        task.state = TaskState::Forgotten;
        task.generation = task.generation.wrapping_add(1);
        task.dependents = Vec::new();
        task.extra = None;
        let key = task.key;
        let args = std::mem::take(&mut task.args);
        for a in args.iter() {
            if let Arg::Dep(d) = *a {
                self.tasks[d as usize].live_dependents -= 1;
                self.work.push(Work::CheckForget(d));
            }
        }
        self.free.push(t);
        self.live_tasks -= 1;
        self.stats.forgotten += 1;
        if self.cfg.report_forgotten {
            let literals = args
                .iter()
                .filter_map(|a| match a {
                    Arg::Lit(h) => Some(*h),
                    Arg::Dep(_) => None,
                })
                .collect();
            self.outputs
                .push_back(Output::TaskForgotten { key, literals });
        }
    }

    /// A released task: compute it if someone needs it, otherwise forget it if possible.
    pub(crate) fn settle(&mut self, t: Tid) {
        let task = &self.tasks[t as usize];
        if task.state.kind() != Kind::Released {
            return;
        }
        if task.needed() {
            self.activate(t);
        } else {
            self.check_forget(t);
        }
    }

    /// Starts computing a needed released task: waits for its inputs, or places it if ready.
    pub(crate) fn activate(&mut self, t: Tid) {
        let mut missing = 0u32;
        let mut error = None;
        for d in self.tasks[t as usize].deps() {
            match &self.tasks[d as usize].state {
                TaskState::Memory { .. } => {}
                TaskState::Erred { error: e } => error = Some(e.clone()),
                _ => missing += 1,
            }
        }
        if let Some(error) = error {
            self.transition(t, TaskState::Erred { error });
        } else if missing == 0 {
            self.make_ready(t);
        } else {
            self.transition(
                t,
                TaskState::Waiting {
                    waiting_on: missing,
                },
            );
            for i in 0..self.tasks[t as usize].args.len() {
                if let Arg::Dep(d) = self.tasks[t as usize].args[i]
                    && self.tasks[d as usize].state.kind() == Kind::Released
                {
                    self.work.push(Work::Settle(d));
                }
            }
            if self.cfg.early_dispatch {
                self.work.push(Work::Early(t));
            }
        }
    }

    /// Places a task whose inputs are all in memory (or queues it, for root tasks).
    pub(crate) fn make_ready(&mut self, t: Tid) {
        let task = &self.tasks[t as usize];
        if task.is_root() && task.restrictions().is_none() {
            self.transition(t, TaskState::Queued);
            return;
        }
        match self.decide_worker(t) {
            Some(w) => self.assign(t, w),
            None => self.transition(t, TaskState::NoWorker),
        }
    }

    pub(crate) fn assign(&mut self, t: Tid, w: Wid) {
        let est = self.estimate(t);
        self.transition(
            t,
            TaskState::Processing {
                worker: w,
                pos: 0,
                est,
                steal_to: NO_WORKER,
                pending: 0,
            },
        );
    }

    /// Estimated duration of a task, in microseconds.
    pub(crate) fn estimate(&self, t: Tid) -> u32 {
        let f = &self.fns[self.tasks[t as usize].func as usize];
        let us = f.duration.unwrap_or(self.cfg.default_duration.0 as f64);
        us.clamp(0.0, f64::from(u32::MAX)) as u32
    }

    /// Releases a task nobody needs any more.
    pub(crate) fn check_release(&mut self, t: Tid) {
        let task = &self.tasks[t as usize];
        if task.needed() {
            return;
        }
        match task.state {
            TaskState::Waiting { .. } | TaskState::Queued | TaskState::NoWorker => {
                self.transition(t, TaskState::Released)
            }
            TaskState::Processing { worker, .. } => {
                let key = task.key;
                self.emit_cancel(worker, key);
                self.transition(t, TaskState::Released);
            }
            TaskState::Memory { .. } => self.transition(t, TaskState::Released),
            TaskState::Released | TaskState::Erred { .. } => self.check_forget(t),
            TaskState::Forgotten => {}
        }
    }

    /// Forgets a released or erred task that nobody needs and no live task depends on.
    pub(crate) fn check_forget(&mut self, t: Tid) {
        let task = &self.tasks[t as usize];
        if matches!(task.state.kind(), Kind::Released | Kind::Erred)
            && !task.needed()
            && task.live_dependents == 0
        {
            self.transition(t, TaskState::Forgotten);
        }
    }

    /// Updates a worker's membership in the running, idle, underfull and saturated sets.
    pub(crate) fn refresh_worker(&mut self, w: Wid) {
        let wk = &self.workers[w as usize];
        let running = wk.alive && !wk.paused;
        let n = wk.processing.len() + wk.incoming_steals as usize;
        let slots = wk.slots as usize;
        let idle = running && n < slots;
        let underfull = running && wk.wants_roots(self.cfg.root_saturation, self.cfg.root_backlog);
        let saturated = wk.alive && (wk.processing.len() > slots || (wk.paused && n > 0));
        self.running.set(w, running);
        self.idle.set(w, idle);
        self.underfull.set(w, underfull);
        self.saturated.set(w, saturated);
    }

    fn emit_run(&mut self, t: Tid, w: Wid) {
        let task = &self.tasks[t as usize];
        let mut args = Vec::with_capacity(task.args.len());
        let mut inputs: Vec<InputLocation> = Vec::new();
        // Distinct inputs: a linear check for few arguments, a set for wide fan-ins.
        let wide = task.args.len() > 16;
        let mut seen = std::mem::take(&mut self.scratch_set);
        seen.clear();
        for a in task.args.iter() {
            match *a {
                Arg::Lit(h) => args.push(ArgSpec::Literal(h)),
                Arg::Dep(d) => {
                    let dep = &self.tasks[d as usize];
                    args.push(ArgSpec::Task(dep.key));
                    let repeated = if wide {
                        !seen.insert(d)
                    } else {
                        inputs.iter().any(|i| i.key == dep.key)
                    };
                    if repeated {
                        continue;
                    }
                    let (nbytes, holders, pending) = match &dep.state {
                        TaskState::Memory { nbytes, holders } => (
                            *nbytes,
                            holders
                                .iter()
                                .map(|h| self.workers[h as usize].id)
                                .collect(),
                            false,
                        ),
                        TaskState::Processing { worker, .. } => {
                            let guess = self.fns[dep.func as usize].nbytes.unwrap_or(0.0);
                            (guess as u64, vec![self.workers[*worker as usize].id], true)
                        }
                        _ => (0, Vec::new(), false),
                    };
                    inputs.push(InputLocation {
                        key: dep.key,
                        nbytes,
                        holders,
                        pending,
                    });
                }
            }
        }
        self.scratch_set = seen;
        let task = &self.tasks[t as usize];
        let f = &self.fns[task.func as usize];
        let run = RunTask {
            worker: self.workers[w as usize].id,
            key: task.key,
            module: f.module,
            function: f.name.clone(),
            args,
            inputs,
            priority: task.priority,
            annotations: task.extra.as_ref().and_then(|e| e.annotations.clone()),
        };
        self.outputs.push_back(Output::RunTask(Box::new(run)));
    }

    /// Tells the clients that want `t` about its result (memory or error), once each.
    fn deliver(&mut self, t: Tid) {
        if self.tasks[t as usize].wanted == 0 {
            return;
        }
        let Some(clients) = self.wanters.get(&t) else {
            return;
        };
        let task = &self.tasks[t as usize];
        for c in clients {
            let Some(client) = self.clients.get_mut(c) else {
                continue;
            };
            let Some(delivered) = client.wants.get_mut(&t) else {
                continue;
            };
            if *delivered {
                continue;
            }
            *delivered = true;
            let out = match &task.state {
                TaskState::Memory { nbytes, holders } => Output::TaskDone {
                    client: *c,
                    key: task.key,
                    nbytes: *nbytes,
                    holders: holders
                        .iter()
                        .map(|h| self.workers[h as usize].id)
                        .collect(),
                },
                TaskState::Erred { error } => Output::TaskErred {
                    client: *c,
                    key: task.key,
                    error: error.clone(),
                },
                _ => continue,
            };
            self.outputs.push_back(out);
        }
    }

    /// Marks `t` undelivered for its clients (its chunk was lost; they hear again once
    /// recomputed).
    fn undeliver(&mut self, t: Tid) {
        if self.tasks[t as usize].wanted == 0 {
            return;
        }
        if let Some(clients) = self.wanters.get(&t) {
            for c in clients {
                if let Some(d) = self.clients.get_mut(c).and_then(|cl| cl.wants.get_mut(&t)) {
                    *d = false;
                }
            }
        }
    }

    /// Delivers an existing result to one client that just asked for it.
    pub(crate) fn deliver_now(&mut self, t: Tid) {
        self.deliver(t);
    }

    /// Adds a holder to a chunk already in memory.
    pub(crate) fn add_holder(&mut self, t: Tid, w: Wid) {
        if let TaskState::Memory { nbytes, holders } = &mut self.tasks[t as usize].state
            && holders.add(w)
        {
            let wk = &mut self.workers[w as usize];
            if wk.has_what.insert(t) {
                wk.nbytes += *nbytes;
            }
        }
    }

    /// A chunk in memory on `holders` only on `w`.
    pub(crate) fn memory_on(nbytes: u64, w: Wid) -> TaskState {
        TaskState::Memory {
            nbytes,
            holders: Holders::one(w),
        }
    }
}
