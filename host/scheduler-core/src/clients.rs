//! Inputs from clients: submissions, wants, releases, cancellations, departures.

use std::sync::Arc;

use taskhost_proto::TaskKey;

use crate::core::{Core, Work};
use crate::ids::{ClientId, Tid};
use crate::io::{CoreError, Output};
use crate::spec::{ArgSpec, Priority, TaskSpec};
use crate::state::{Arg, Extra, FnInfo, Kind, Task, TaskRef, TaskState};

impl Core {
    pub(crate) fn submit(
        &mut self,
        client: ClientId,
        specs: Vec<TaskSpec>,
        wants: Vec<TaskKey>,
    ) -> Result<(), CoreError> {
        self.submissions = self.submissions.wrapping_add(1);
        let generation = self.submissions;
        let mut created: Vec<Tid> = Vec::new();
        let fresh = specs.len().saturating_sub(self.free.len());
        self.tasks.reserve(fresh);
        let tasks = &self.tasks;
        self.index
            .reserve(specs.len(), |&x| Self::hash_key(&tasks[x as usize].key));
        let mut sources: Vec<usize> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            // One probe finds an existing task or claims the slot the new one will take.
            let next = self.free.last().copied().unwrap_or(self.tasks.len() as Tid);
            let tasks = &self.tasks;
            let entry = self.index.entry(
                Self::hash_key(&spec.key),
                |&x| tasks[x as usize].key == spec.key,
                |&x| Self::hash_key(&tasks[x as usize].key),
            );
            match entry {
                hashbrown::hash_table::Entry::Occupied(_) => {
                    self.stats.tasks_reused += 1;
                    continue;
                }
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(next);
                }
            }
            let t = self.create_task(spec, generation);
            debug_assert_eq!(t, next);
            created.push(t);
            sources.push(i);
        }
        // Resolve arguments; a missing dependency rejects the whole graph.
        for (n, &t) in created.iter().enumerate() {
            let spec = &specs[sources[n]];
            let mut args = Vec::with_capacity(spec.args.len());
            for a in &spec.args {
                args.push(match a {
                    ArgSpec::Literal(h) => Arg::Lit(*h),
                    ArgSpec::Task(k) => match self.lookup(k) {
                        Some(d) => Arg::Dep(d),
                        None => {
                            let err = CoreError::MissingDependency {
                                task: spec.key,
                                missing: *k,
                            };
                            self.rollback(&created);
                            return Err(err);
                        }
                    },
                });
            }
            self.tasks[t as usize].args = args.into_boxed_slice();
        }
        if let Some(k) = wants.iter().find(|k| self.lookup(k).is_none()) {
            let err = CoreError::UnknownKey(*k);
            self.rollback(&created);
            return Err(err);
        }
        if let Err(key) = self.static_order(&created, generation) {
            self.rollback(&created);
            return Err(CoreError::Cycle(key));
        }
        // Link dependents.
        for &t in &created {
            let r = TaskRef {
                tid: t,
                generation: self.tasks[t as usize].generation,
            };
            for i in 0..self.tasks[t as usize].args.len() {
                if let Arg::Dep(d) = self.tasks[t as usize].args[i] {
                    let dep = &mut self.tasks[d as usize];
                    if dep.dependents.is_empty() {
                        // Most tasks have one dependent: no spare capacity.
                        dep.dependents.reserve_exact(1);
                    }
                    dep.dependents.push(r);
                    dep.live_dependents += 1;
                    // Keep stale entries from piling up on long-lived tasks.
                    if dep.dependents.len() > 2 * dep.live_dependents as usize + 8 {
                        self.compact_dependents(d);
                    }
                }
            }
        }
        self.stats.tasks_created += created.len() as u64;
        self.add_wants(client, &wants);
        // Created but unwanted tasks are forgotten right away.
        for &t in &created {
            self.work.push(Work::CheckForget(t));
        }
        Ok(())
    }

    /// Fills the next free slot (the caller already indexed it).
    fn create_task(&mut self, spec: &TaskSpec, generation: u32) -> Tid {
        let func = self.intern(spec);
        let extra = (!spec.restrictions.is_empty() || spec.annotations.is_some()).then(|| {
            Box::new(Extra {
                restrictions: spec.restrictions.clone(),
                annotations: spec.annotations.clone(),
            })
        });
        let task = Task {
            key: spec.key,
            generation: 0,
            func,
            state: TaskState::Released,
            priority: Priority {
                user: spec.priority,
                generation,
                order: 0,
            },
            args: Box::new([]),
            dependents: Vec::new(),
            live_dependents: 0,
            waiters: 0,
            wanted: 0,
            deaths: 0,
            retries_left: spec.retries,
            extra,
        };
        let t = match self.free.pop() {
            Some(t) => {
                let old_generation = self.tasks[t as usize].generation;
                self.tasks[t as usize] = Task {
                    generation: old_generation,
                    ..task
                };
                t
            }
            None => {
                self.tasks.push(task);
                (self.tasks.len() - 1) as Tid
            }
        };
        self.live_tasks += 1;
        self.phases[Kind::Released as usize] += 1;
        t
    }

    fn intern(&mut self, spec: &TaskSpec) -> u32 {
        // Consecutive tasks usually call the same function through the same `Arc`.
        if let Some((m, name, f)) = &self.last_fn
            && *m == spec.module
            && Arc::ptr_eq(name, &spec.function)
        {
            return *f;
        }
        let f = self.intern_slow(spec);
        self.last_fn = Some((spec.module, spec.function.clone(), f));
        f
    }

    fn intern_slow(&mut self, spec: &TaskSpec) -> u32 {
        let names = self.fn_index.entry(spec.module).or_default();
        if let Some(&f) = names.get(&*spec.function) {
            return f;
        }
        let f = self.fns.len() as u32;
        self.fns.push(FnInfo {
            module: spec.module,
            name: spec.function.clone(),
            duration: None,
            nbytes: None,
        });
        names.insert(Box::from(&*spec.function), f);
        f
    }

    /// Undoes the creation of tasks of a rejected submission (not yet linked to anything).
    fn rollback(&mut self, created: &[Tid]) {
        for &t in created.iter().rev() {
            let hash = Self::hash_key(&self.tasks[t as usize].key);
            if let Ok(e) = self.index.find_entry(hash, |&x| x == t) {
                e.remove();
            }
            let task = &mut self.tasks[t as usize];
            task.state = TaskState::Forgotten;
            task.generation = task.generation.wrapping_add(1);
            task.args = Box::new([]);
            task.extra = None;
            self.free.push(t);
            self.live_tasks -= 1;
            self.phases[Kind::Released as usize] -= 1;
        }
    }

    fn compact_dependents(&mut self, d: Tid) {
        let mut deps = std::mem::take(&mut self.tasks[d as usize].dependents);
        deps.retain(|r| self.tasks[r.tid as usize].generation == r.generation);
        self.tasks[d as usize].dependents = deps;
    }

    pub(crate) fn want(&mut self, client: ClientId, keys: Vec<TaskKey>) -> Result<(), CoreError> {
        if let Some(k) = keys.iter().find(|k| self.lookup(k).is_none()) {
            return Err(CoreError::UnknownKey(*k));
        }
        self.add_wants(client, &keys);
        Ok(())
    }

    fn add_wants(&mut self, client: ClientId, keys: &[TaskKey]) {
        for key in keys {
            let Some(t) = self.lookup(key) else { continue };
            let c = self.clients.entry(client).or_default();
            if c.wants.contains_key(&t) {
                continue;
            }
            c.wants.insert(t, false);
            self.wanters.entry(t).or_default().push(client);
            self.tasks[t as usize].wanted += 1;
            match self.tasks[t as usize].state.kind() {
                Kind::Memory | Kind::Erred => self.deliver_now(t),
                Kind::Released => self.work.push(Work::Settle(t)),
                _ => {}
            }
        }
    }

    pub(crate) fn release(
        &mut self,
        client: ClientId,
        keys: &[TaskKey],
        cancel: bool,
    ) -> Result<(), CoreError> {
        if !self.clients.contains_key(&client) {
            return Err(CoreError::UnknownClient(client));
        }
        for key in keys {
            let Some(t) = self.lookup(key) else { continue };
            self.drop_want(client, t, cancel);
        }
        Ok(())
    }

    fn drop_want(&mut self, client: ClientId, t: Tid, cancel: bool) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let Some(delivered) = c.wants.remove(&t) else {
            return;
        };
        if let Some(list) = self.wanters.get_mut(&t) {
            list.retain(|&x| x != client);
            if list.is_empty() {
                self.wanters.remove(&t);
            }
        }
        let task = &mut self.tasks[t as usize];
        task.wanted -= 1;
        if cancel && !delivered {
            self.outputs.push_back(Output::TaskCancelled {
                client,
                key: task.key,
            });
        }
        self.work.push(Work::CheckRelease(t));
    }

    pub(crate) fn client_left(&mut self, client: ClientId) -> Result<(), CoreError> {
        let Some(c) = self.clients.get(&client) else {
            return Err(CoreError::UnknownClient(client));
        };
        let mut wanted: Vec<Tid> = c.wants.keys().copied().collect();
        wanted.sort_unstable();
        for t in wanted {
            self.drop_want(client, t, false);
        }
        self.clients.remove(&client);
        Ok(())
    }

    /// The function name of a task, for tests.
    #[allow(dead_code)]
    pub(crate) fn function_of(&self, t: Tid) -> Arc<str> {
        self.fns[self.tasks[t as usize].func as usize].name.clone()
    }
}
