//! Tunables of the scheduling policies.

use crate::ids::Micros;

/// How ready tasks with dependencies are placed on workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Minimise estimated start time over input holders and idle workers (the real policy).
    EarliestStart,
    /// Uniformly random worker (a baseline for quality comparisons; no stealing).
    Random {
        /// Seed of the placement generator.
        seed: u64,
    },
    /// Next worker in turn (a baseline for quality comparisons; no stealing).
    RoundRobin,
}

/// Tunables. [`Config::default`] gives the production values.
#[derive(Clone, Debug)]
pub struct Config {
    /// Placement policy.
    pub placement: Placement,
    /// Ready root tasks handed to a worker: `ceil(slots * factor)`, the rest queued.
    pub root_saturation: f64,
    /// ... or more, while the worker holds less than this much estimated work per slot:
    /// enough short tasks to keep its slots busy during a round trip to the scheduler (at most
    /// 64 per slot). Zero turns it off.
    pub root_backlog: Micros,
    /// Duration assumed for a function never seen.
    pub default_duration: Micros,
    /// Bandwidth assumed before any transfer is measured, in bytes per microsecond.
    pub default_bandwidth: f64,
    /// Weight of a new sample in the moving averages (0..=1).
    pub ewma_alpha: f64,
    /// Whether idle workers steal queued tasks from saturated ones.
    pub work_stealing: bool,
    /// How often stealing is considered while some worker is idle and another saturated.
    pub steal_interval: Micros,
    /// Steal a task only when its estimated duration exceeds this many times its transfer cost.
    pub steal_cost_ratio: f64,
    /// A task whose workers died this many times while it ran is marked erred as suspect.
    pub allowed_failures: u8,
    /// Pause a worker whose reported memory exceeds this fraction of its limit.
    pub pause_fraction: f64,
    /// Resume a paused worker once its memory is below this fraction.
    pub resume_fraction: f64,
    /// Dispatch a task before its inputs are computed when each of them is in memory or
    /// assigned to a worker with all of its own inputs in memory (one level of lookahead).
    /// Its worker then starts it as soon as the inputs exist, fetching remote ones straight
    /// from the peers computing them, so a chain of short tasks does not pay a scheduler
    /// round trip per step.
    pub early_dispatch: bool,
    /// Early dispatch waits only for inputs whose estimated duration is below this: for longer
    /// tasks the round trip it saves is small, and a placement decided once the inputs exist
    /// knows more (measured: early placement lost up to 12% efficiency on 2 ms stencil steps).
    pub early_dispatch_below: Micros,
    /// Cost of fetching an input that is still being computed from the peer computing it,
    /// besides its bytes (a request, a wait and an answer): weighs placing an early task
    /// beside its inputs.
    pub peer_latency: Micros,
    /// Emit [`crate::Output::TaskForgotten`] so the daemon can free literal payloads.
    pub report_forgotten: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            placement: Placement::EarliestStart,
            root_saturation: 1.1,
            root_backlog: Micros(1000),
            default_duration: Micros(10_000),
            default_bandwidth: 100.0,
            ewma_alpha: 0.5,
            work_stealing: true,
            steal_interval: Micros(10_000),
            steal_cost_ratio: 2.0,
            allowed_failures: 3,
            pause_fraction: 0.8,
            resume_fraction: 0.7,
            early_dispatch: true,
            early_dispatch_below: Micros(1000),
            peer_latency: Micros(100),
            report_forgotten: true,
        }
    }
}
