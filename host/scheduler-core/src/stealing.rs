//! Work stealing: idle workers take queued, not-started tasks from saturated ones, through a
//! confirm handshake with the victim so that no task runs twice by mistake.

use taskhost_proto::TaskKey;

use crate::config::Placement;
use crate::core::Core;
use crate::ids::{NO_WORKER, Wid, WorkerId};
use crate::io::{CoreError, Output};
use crate::state::TaskState;

/// Most thieves served per balancing round.
const MAX_THIEVES: usize = 64;
/// Most victims compared per thief.
const MAX_VICTIMS: usize = 16;
/// Most tasks of a victim examined per thief.
const MAX_EXAMINED: usize = 16;

impl Core {
    fn stealing_enabled(&self) -> bool {
        self.cfg.work_stealing && self.cfg.placement == Placement::EarliestStart
    }

    /// Arms the balancing timer when some worker is idle while another is saturated.
    pub(crate) fn schedule_balance(&mut self) {
        if self.next_balance.is_none()
            && self.stealing_enabled()
            && !self.idle.is_empty()
            && !self.saturated.is_empty()
        {
            self.next_balance = Some(self.now.plus(self.cfg.steal_interval));
        }
    }

    /// One balancing round: each idle worker asks the most loaded victim for tasks.
    pub(crate) fn balance(&mut self) {
        let thieves: Vec<Wid> = self
            .idle
            .members()
            .iter()
            .take(MAX_THIEVES)
            .copied()
            .collect();
        for thief in thieves {
            let Some(victim) = self.pick_victim(thief) else {
                continue;
            };
            let n = self.workers[victim as usize].processing.len();
            let slots = self.workers[victim as usize].slots as usize;
            let paused = self.workers[victim as usize].paused;
            // Take about half the difference in load per slot, so both end up equally busy.
            let mut room = {
                let wk = &self.workers[thief as usize];
                let load = wk.processing.len() + wk.incoming_steals as usize;
                let target = n * wk.slots as usize / slots.max(1);
                (target.saturating_sub(load) / 2).clamp(1, MAX_EXAMINED)
            };
            // Tasks beyond the victim's slots are (most likely) not started; a paused victim
            // starts nothing new, so all of its tasks are candidates.
            let mut excess = if paused { n } else { n.saturating_sub(slots) };
            let mut i = n;
            let mut examined = 0;
            while room > 0 && excess > 0 && i > 0 && examined < MAX_EXAMINED {
                i -= 1;
                examined += 1;
                let t = self.workers[victim as usize].processing[i];
                let task = &self.tasks[t as usize];
                let TaskState::Processing {
                    steal_to,
                    est,
                    pending,
                    ..
                } = task.state
                else {
                    continue;
                };
                // An early-dispatched task waits for inputs computed elsewhere: not stolen.
                if steal_to != NO_WORKER || pending > 0 {
                    continue;
                }
                if task
                    .restrictions()
                    .is_some_and(|r| !self.workers[thief as usize].satisfies(r))
                {
                    continue;
                }
                let transfer = self.missing_bytes(t, thief) as f64 / self.bandwidth;
                if f64::from(est) <= transfer * self.cfg.steal_cost_ratio {
                    continue;
                }
                if let TaskState::Processing { steal_to, .. } = &mut self.tasks[t as usize].state {
                    *steal_to = thief;
                }
                self.workers[thief as usize].incoming_steals += 1;
                self.steals.push(t);
                self.stats.steal_requests += 1;
                let key = self.tasks[t as usize].key;
                let worker = self.workers[victim as usize].id;
                self.outputs.push_back(Output::StealRequest { worker, key });
                room -= 1;
                excess -= 1;
            }
            self.refresh_worker(thief);
        }
    }

    fn pick_victim(&self, thief: Wid) -> Option<Wid> {
        let mut best: Option<(usize, Wid)> = None;
        for &v in self.saturated.members().iter().take(MAX_VICTIMS) {
            if v == thief {
                continue;
            }
            let wk = &self.workers[v as usize];
            let excess = if wk.paused {
                wk.processing.len()
            } else {
                wk.processing.len().saturating_sub(wk.slots as usize)
            };
            if excess > 0 && best.is_none_or(|(e, _)| excess > e) {
                best = Some((excess, v));
            }
        }
        best.map(|(_, v)| v)
    }

    /// The victim answered a steal request.
    pub(crate) fn steal_answer(
        &mut self,
        worker: WorkerId,
        key: TaskKey,
        stolen: bool,
    ) -> Result<(), CoreError> {
        let victim = self.live_worker(worker)?;
        let t = self.task_of(&key)?;
        let TaskState::Processing {
            worker: w,
            pos,
            est,
            steal_to,
            pending,
        } = self.tasks[t as usize].state
        else {
            return Err(CoreError::Stale {
                worker,
                key,
                reason: "task is not processing",
            });
        };
        if w != victim {
            return Err(CoreError::Stale {
                worker,
                key,
                reason: "task is not on this worker",
            });
        }
        if !stolen {
            if steal_to != NO_WORKER {
                self.workers[steal_to as usize].incoming_steals -= 1;
                if let Some(i) = self.steals.iter().position(|&s| s == t) {
                    self.steals.swap_remove(i);
                }
                if let TaskState::Processing { steal_to, .. } = &mut self.tasks[t as usize].state {
                    *steal_to = NO_WORKER;
                }
                self.refresh_worker(steal_to);
            }
            return Ok(());
        }
        self.stats.steals += 1;
        let thief_ok = steal_to != NO_WORKER
            && self.running.contains(steal_to)
            && self.tasks[t as usize]
                .restrictions()
                .is_none_or(|r| self.workers[steal_to as usize].satisfies(r));
        if thief_ok {
            let _ = pos;
            self.transition(
                t,
                TaskState::Processing {
                    worker: steal_to,
                    pos: 0,
                    est,
                    steal_to: NO_WORKER,
                    pending,
                },
            );
        } else {
            // The thief went away: place the task again.
            self.transition(t, TaskState::Released);
        }
        Ok(())
    }
}
