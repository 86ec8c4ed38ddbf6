//! `validate()`: checks every invariant of the core's state. O(tasks + workers); the simulator
//! calls it after every step.

use crate::collections::FxHashMap;
use crate::core::Core;
use crate::ids::{NO_WORKER, Tid};
use crate::state::{Kind, TaskState};

/// Invariants that did not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} invariant(s) violated, first: {}", problems.len(), problems.first().map(String::as_str).unwrap_or(""))]
pub struct ValidationError {
    /// One line per violation (at most 20).
    pub problems: Vec<String>,
}

impl Core {
    /// Checks all invariants: reference counts, who holds what, slot and queue accounting, the
    /// worker indexes. Returns every violation found (up to 20).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut p: Vec<String> = self.violations.iter().take(5).cloned().collect();
        macro_rules! check {
            ($cond:expr, $($fmt:tt)*) => {
                if !$cond && p.len() < 20 {
                    p.push(format!($($fmt)*));
                }
            };
        }
        // Reference counts recomputed from scratch.
        let n = self.tasks.len();
        let mut waiters = vec![0u32; n];
        let mut live_deps = vec![0u32; n];
        let mut live = 0usize;
        let mut queued = 0usize;
        let mut phases = [0u64; 8];
        let mut steals = 0usize;
        for (i, task) in self.tasks.iter().enumerate() {
            let kind = task.state.kind();
            if kind == Kind::Forgotten {
                continue;
            }
            live += 1;
            phases[kind as usize] += 1;
            check!(
                self.lookup(&task.key) == Some(i as Tid),
                "task {i} {:?} not indexed",
                task.key
            );
            for d in task.deps() {
                check!(
                    self.tasks[d as usize].state.kind() != Kind::Forgotten,
                    "task {i} depends on forgotten {d}"
                );
                live_deps[d as usize] += 1;
                if kind.is_active() {
                    waiters[d as usize] += 1;
                }
            }
            let deps_missing = task
                .deps()
                .filter(|&d| self.tasks[d as usize].state.kind() != Kind::Memory)
                .count();
            let deps_erred = task
                .deps()
                .any(|d| self.tasks[d as usize].state.kind() == Kind::Erred);
            if kind.is_active() {
                check!(task.needed(), "active task {i} {kind:?} is not needed");
                check!(!deps_erred, "active task {i} has an erred dependency");
            }
            match &task.state {
                TaskState::Released | TaskState::Erred { .. } | TaskState::Forgotten => {}
                TaskState::Waiting { waiting_on } => {
                    check!(
                        *waiting_on as usize == deps_missing,
                        "task {i} waits on {waiting_on}, {deps_missing} missing"
                    );
                    check!(*waiting_on > 0, "task {i} waits on nothing");
                }
                TaskState::Queued => {
                    queued += 1;
                    check!(
                        task.is_root() && task.restrictions().is_none(),
                        "queued task {i} is not a plain root"
                    );
                }
                TaskState::NoWorker => {
                    check!(deps_missing == 0, "no-worker task {i} misses inputs");
                    check!(
                        self.no_worker.contains(&(i as Tid)),
                        "no-worker task {i} not indexed"
                    );
                }
                TaskState::Processing {
                    worker,
                    pos,
                    steal_to,
                    pending,
                    ..
                } => {
                    check!(
                        *pending as usize == deps_missing,
                        "task {i} processing with {pending} pending, {deps_missing} missing"
                    );
                    let wk = &self.workers[*worker as usize];
                    check!(wk.alive, "task {i} processing on dead worker {worker}");
                    check!(
                        wk.processing.get(*pos as usize) == Some(&(i as Tid)),
                        "task {i} not at its position on worker {worker}"
                    );
                    if *steal_to != NO_WORKER {
                        steals += 1;
                        check!(
                            self.steals.contains(&(i as Tid)),
                            "steal of task {i} not listed"
                        );
                        check!(
                            self.workers[*steal_to as usize].alive,
                            "task {i} being stolen by dead worker"
                        );
                    }
                }
                TaskState::Memory { nbytes: _, holders } => {
                    for h in holders.iter() {
                        let wk = &self.workers[h as usize];
                        check!(wk.alive, "chunk {i} held by dead worker {h}");
                        check!(
                            wk.has_what.contains(&(i as Tid)),
                            "worker {h} does not list chunk {i}"
                        );
                    }
                    check!(task.needed(), "chunk {i} in memory but nobody needs it");
                }
            }
            let wanters = self.wanters.get(&(i as Tid)).map_or(0, Vec::len);
            check!(
                wanters == task.wanted as usize,
                "task {i} wanted {} but {wanters} wanters",
                task.wanted
            );
        }
        for (i, task) in self.tasks.iter().enumerate() {
            if task.state.kind() == Kind::Forgotten {
                continue;
            }
            check!(
                task.waiters == waiters[i],
                "task {i} waiters {} != {}",
                task.waiters,
                waiters[i]
            );
            check!(
                task.live_dependents == live_deps[i],
                "task {i} live dependents {} != {}",
                task.live_dependents,
                live_deps[i]
            );
            let listed = task
                .dependents
                .iter()
                .filter(|r| {
                    self.tasks[r.tid as usize].generation == r.generation
                        && self.tasks[r.tid as usize].state.kind() != Kind::Forgotten
                })
                .count();
            check!(
                listed as u32 == live_deps[i],
                "task {i} lists {listed} dependents, {} live",
                live_deps[i]
            );
        }
        check!(
            live == self.live_tasks,
            "live tasks {live} != {}",
            self.live_tasks
        );
        check!(
            self.index.len() == live,
            "index has {} entries for {live} tasks",
            self.index.len()
        );
        check!(queued == self.queued, "queued {queued} != {}", self.queued);
        check!(
            phases == self.phases,
            "tasks per phase {phases:?} != {:?}",
            self.phases
        );
        check!(
            steals == self.steals.len(),
            "steals {steals} != {}",
            self.steals.len()
        );
        check!(
            self.queued <= self.queue.len(),
            "queue shorter than queued count"
        );
        for &t in &self.no_worker {
            check!(
                self.tasks[t as usize].state.kind() == Kind::NoWorker,
                "no-worker index lists {t}"
            );
        }
        // Workers.
        let mut incoming: FxHashMap<u32, u32> = FxHashMap::default();
        for &t in &self.steals {
            if let TaskState::Processing { steal_to, .. } = self.tasks[t as usize].state {
                *incoming.entry(steal_to).or_default() += 1;
            }
        }
        for (w, wk) in self.workers.iter().enumerate() {
            let w32 = w as u32;
            if !wk.alive {
                check!(
                    wk.processing.is_empty() && wk.has_what.is_empty(),
                    "dead worker {w} still has tasks or chunks"
                );
                check!(
                    !self.running.contains(w32)
                        && !self.idle.contains(w32)
                        && !self.saturated.contains(w32),
                    "dead worker {w} in an index"
                );
                continue;
            }
            let mut occupancy = 0u64;
            for (pos, &t) in wk.processing.iter().enumerate() {
                match self.tasks[t as usize].state {
                    TaskState::Processing {
                        worker,
                        pos: p,
                        est,
                        ..
                    } => {
                        check!(
                            worker == w32 && p as usize == pos,
                            "worker {w} lists task {t} at a wrong place"
                        );
                        occupancy += u64::from(est);
                    }
                    _ => check!(false, "worker {w} lists task {t} which is not processing"),
                }
            }
            check!(
                occupancy == wk.occupancy,
                "worker {w} occupancy {} != {occupancy}",
                wk.occupancy
            );
            let mut nbytes = 0;
            for &t in &wk.has_what {
                match &self.tasks[t as usize].state {
                    TaskState::Memory { nbytes: b, holders } => {
                        check!(
                            holders.contains(w32),
                            "worker {w} lists chunk {t} it does not hold"
                        );
                        nbytes += b;
                    }
                    _ => check!(false, "worker {w} lists chunk {t} which is not in memory"),
                }
            }
            check!(
                nbytes == wk.nbytes,
                "worker {w} bytes {} != {nbytes}",
                wk.nbytes
            );
            check!(
                incoming.get(&w32).copied().unwrap_or(0) == wk.incoming_steals,
                "worker {w} incoming steals mismatch"
            );
            let running = !wk.paused;
            let load = wk.processing.len() + wk.incoming_steals as usize;
            check!(
                self.running.contains(w32) == running,
                "worker {w} running index"
            );
            check!(
                self.idle.contains(w32) == (running && load < wk.slots as usize),
                "worker {w} idle index"
            );
            let wants_roots = wk.wants_roots(self.cfg.root_saturation, self.cfg.root_backlog);
            check!(
                self.underfull.contains(w32) == (running && wants_roots),
                "worker {w} underfull index"
            );
            // Root tasks are only handed out below the cap and the backlog.
            if running && self.queued > 0 {
                check!(
                    !wants_roots,
                    "worker {w} has room while root tasks are queued"
                );
            }
        }
        // Clients.
        for (c, client) in &self.clients {
            for &t in client.wants.keys() {
                let ok = self.wanters.get(&t).is_some_and(|l| l.contains(c));
                check!(ok, "client {c:?} wants {t} but is not listed");
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { problems: p })
        }
    }
}
