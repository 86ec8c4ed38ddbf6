//! Scheduler-core benchmark: graph submission and end-to-end scheduling of large graphs with
//! zero-duration tasks on 8 virtual workers, in CPU time and bytes per task. Prints a table.
//!
//! `RUST_BACKTRACE=0 cargo bench -p taskhost-scheduler-core --bench scheduler_core`
//! (add `-- quick` to stop at 100k tasks).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use taskhost_scheduler_core::sim::{SimGraph, independent_plus_reduction, stencil};
use taskhost_scheduler_core::*;

/// Counts live and peak allocated bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator and only adds counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU time of this thread in nanoseconds, so that other processes on the machine do not
/// inflate the figures.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const WORKERS: u64 = 8;
const SLOTS: u32 = 4;

fn core_with_workers() -> Core {
    let cfg = Config {
        report_forgotten: false,
        ..Config::default()
    };
    let mut core = Core::new(cfg);
    for w in 0..WORKERS {
        core.handle(
            Micros(0),
            Input::WorkerJoined {
                worker: WorkerId(w),
                slots: SLOTS,
                memory_limit: 1 << 40,
                address: format!("w{w}").into(),
                resources: vec![],
            },
        )
        .expect("join");
    }
    core
}

struct Row {
    what: String,
    tasks: usize,
    submit_us_per_task: f64,
    submit_bytes_per_task: f64,
    e2e_us_per_task: f64,
    peak_bytes_per_task: f64,
    allocs_per_task: f64,
}

/// Submits `graph` and drives it to completion with workers that finish every task at once.
fn measure(what: &str, make: impl FnOnce() -> SimGraph) -> Row {
    let mut core = core_with_workers();
    // Everything allocated from here on and still live is the core's (the specs are consumed).
    let base = LIVE.load(Ordering::Relaxed);
    let graph = make();
    let tasks = graph.tasks.len();
    let wants = graph.wants;
    let specs: Vec<TaskSpec> = graph.tasks.into_iter().map(|t| t.spec).collect();
    // Submission: the specs are consumed by the core.
    let start = cpu_ns();
    core.handle(
        Micros(1),
        Input::SubmitGraph {
            client: ClientId(1),
            tasks: specs,
            wants,
        },
    )
    .expect("submit");
    let submit = cpu_ns() - start;
    let after_submit = LIVE.load(Ordering::Relaxed);
    PEAK.store(after_submit, Ordering::Relaxed);
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    // Scheduling to completion: every RunTask is answered by TaskFinished in the next round.
    let start = cpu_ns();
    let mut now = 1u64;
    let mut pending: Vec<(WorkerId, TaskKey)> = Vec::new();
    let mut done = 0usize;
    let mut rounds = 0u64;
    loop {
        while let Some(out) = core.poll_output() {
            match out {
                Output::RunTask(run) => pending.push((run.worker, run.key)),
                Output::TaskDone { .. } => done += 1,
                _ => {}
            }
        }
        if pending.is_empty() {
            break;
        }
        now += 1;
        for (worker, key) in pending.drain(..) {
            let _ = core.handle(
                Micros(now),
                Input::TaskFinished {
                    worker,
                    key,
                    nbytes: 8,
                    duration: Micros(0),
                },
            );
        }
        rounds += 1;
        if rounds > 10 * tasks as u64 + 100 {
            panic!("no progress");
        }
    }
    let e2e = cpu_ns() - start + submit;
    assert_eq!(done, 1, "{what}: the wanted key was not delivered");
    let peak = PEAK.load(Ordering::Relaxed);
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
    let row = Row {
        what: what.to_string(),
        tasks,
        submit_us_per_task: submit as f64 / 1e3 / tasks as f64,
        submit_bytes_per_task: after_submit.saturating_sub(base) as f64 / tasks as f64,
        e2e_us_per_task: e2e as f64 / 1e3 / tasks as f64,
        peak_bytes_per_task: peak.saturating_sub(base) as f64 / tasks as f64,
        allocs_per_task: allocs as f64 / tasks as f64,
    };
    drop(core);
    row
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let mut rows = Vec::new();
    let sizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    for &n in sizes {
        // n independent tasks whose results a fan-in-8 tree sums (~n/7 more tasks).
        rows.push(measure("independent + tree reduction", || {
            independent_plus_reduction(n, Micros(0), 8)
        }));
    }
    for &(w, s) in if quick {
        &[(100usize, 100usize)][..]
    } else {
        &[(100, 100), (1000, 100)][..]
    } {
        rows.push(measure(&format!("stencil {w} x {s}"), || {
            stencil(w, s, Micros(0), 8)
        }));
    }
    println!(
        "| graph | tasks | submit us/task | submit bytes/task | end-to-end us/task | peak bytes/task | allocs/task (scheduling) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.3} | {:.0} | {:.3} | {:.0} | {:.1} |",
            r.what,
            r.tasks,
            r.submit_us_per_task,
            r.submit_bytes_per_task,
            r.e2e_us_per_task,
            r.peak_bytes_per_task,
            r.allocs_per_task
        );
    }
}
