//! Helpers for driving a [`Core`] by hand in tests.
#![allow(dead_code)]

use taskhost_scheduler_core::sim::{SimConfig, WorkerSpec};
use taskhost_scheduler_core::*;

pub fn module() -> ModuleId {
    ModuleId::of(b"test module")
}

pub fn task(name: &str, n: u64, deps: &[TaskKey]) -> TaskSpec {
    let mut args: Vec<ArgSpec> = deps.iter().map(|k| ArgSpec::Task(*k)).collect();
    args.push(ArgSpec::Literal(LiteralHandle(n)));
    TaskSpec::derived(module(), name, args)
}

pub fn join(core: &mut Core, id: u64, slots: u32) {
    core.handle(
        core.now(),
        Input::WorkerJoined {
            worker: WorkerId(id),
            slots,
            memory_limit: 1000,
            address: format!("w{id}").into(),
            resources: vec![],
        },
    )
    .unwrap();
}

pub fn submit(core: &mut Core, client: u64, tasks: Vec<TaskSpec>, wants: Vec<TaskKey>) {
    core.handle(
        core.now(),
        Input::SubmitGraph {
            client: ClientId(client),
            tasks,
            wants,
        },
    )
    .unwrap();
    core.validate().unwrap();
}

pub fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

pub fn runs(outs: &[Output]) -> Vec<(WorkerId, TaskKey)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::RunTask(r) => Some((r.worker, r.key)),
            _ => None,
        })
        .collect()
}

pub fn finish(core: &mut Core, worker: WorkerId, key: TaskKey, nbytes: u64, duration: u64) {
    core.handle(
        core.now(),
        Input::TaskFinished {
            worker,
            key,
            nbytes,
            duration: Micros(duration),
        },
    )
    .unwrap();
    core.validate().unwrap();
}

/// Two one-slot workers with the core's `config`, `latency` one way, up to 20 us of jitter.
pub fn two_one_slot_workers(config: Config, latency: Micros) -> SimConfig {
    SimConfig {
        core: config,
        workers: vec![
            WorkerSpec {
                slots: 1,
                ..WorkerSpec::default()
            };
            2
        ],
        latency,
        jitter: Micros(20),
        ..SimConfig::default()
    }
}
