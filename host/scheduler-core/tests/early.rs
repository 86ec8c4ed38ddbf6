//! Early dispatch: a task whose inputs are assigned (not yet computed) goes to its worker at
//! once, and is taken back when an input will not be computed where the worker was told.

mod common;

use common::*;
use taskhost_scheduler_core::sim::*;
use taskhost_scheduler_core::*;

/// Runs one task of each function in `names` on `worker`, so that their output sizes are
/// measured (early dispatch waits for that).
fn measure(core: &mut Core, worker: u64, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let t = task(name, 1000 + i as u64, &[]);
        submit(core, 99, vec![t.clone()], vec![t.key]);
        drain(core);
        finish(core, WorkerId(worker), t.key, 8, 10);
        drain(core);
    }
}

/// One worker, `a` and its dependent `b` submitted, both sent (`b` early).
fn early_pair() -> (Core, TaskSpec, TaskSpec) {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    measure(&mut core, 1, &["a", "b"]);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    submit(&mut core, 1, vec![a.clone(), b.clone()], vec![b.key]);
    assert_eq!(run_tasks(&drain(&mut core)).len(), 2);
    (core, a, b)
}

/// Two one-slot workers, 50 us one-way latency with jitter.
fn two_workers(early_dispatch: bool, seed: u64) -> SimConfig {
    let config = Config {
        early_dispatch,
        ..Config::default()
    };
    SimConfig {
        seed,
        ..two_one_slot_workers(config, Micros(50))
    }
}

fn run_tasks(outs: &[Output]) -> Vec<&RunTask> {
    outs.iter()
        .filter_map(|o| match o {
            Output::RunTask(r) => Some(&**r),
            _ => None,
        })
        .collect()
}

fn cancels(outs: &[Output]) -> Vec<(WorkerId, TaskKey)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::CancelTask { worker, key } => Some((*worker, *key)),
            _ => None,
        })
        .collect()
}

#[test]
fn nothing_is_dispatched_early_before_output_sizes_are_known() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    submit(&mut core, 1, vec![a.clone(), b.clone()], vec![b.key]);
    assert_eq!(runs(&drain(&mut core)), vec![(WorkerId(1), a.key)]);
    assert_eq!(core.stats().early_runs, 0);
}

#[test]
fn a_chain_is_dispatched_one_step_ahead() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    measure(&mut core, 1, &["a", "b"]);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    let c = task("c", 2, &[b.key]);
    submit(
        &mut core,
        1,
        vec![a.clone(), b.clone(), c.clone()],
        vec![c.key],
    );
    let outs = drain(&mut core);
    let rs = run_tasks(&outs);
    // `a` runs; `b` goes along, told that `a` is being computed on worker 1; `c` waits,
    // since `b` itself waits for an input (one level of lookahead).
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].key, a.key);
    assert_eq!(rs[1].key, b.key);
    assert_eq!(rs[1].inputs.len(), 1);
    assert!(rs[1].inputs[0].pending);
    assert_eq!(rs[1].inputs[0].holders, vec![WorkerId(1)]);
    assert_eq!(core.phase(&b.key), Some(Phase::Processing));
    assert_eq!(core.phase(&c.key), Some(Phase::Waiting));
    assert_eq!(core.stats().early_runs, 1);
    // Once `a` is in memory, `b` is settled and `c` goes ahead.
    finish(&mut core, WorkerId(1), a.key, 8, 10);
    let outs = drain(&mut core);
    let rs = run_tasks(&outs);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].key, c.key);
    assert!(rs[0].inputs[0].pending);
    finish(&mut core, WorkerId(1), b.key, 8, 10);
    assert!(run_tasks(&drain(&mut core)).is_empty());
    finish(&mut core, WorkerId(1), c.key, 8, 10);
    assert_eq!(core.phase(&c.key), Some(Phase::Memory));
    assert!(core.is_quiet());
}

#[test]
fn an_early_task_is_taken_back_when_its_input_moves() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    join(&mut core, 2, 1);
    measure(&mut core, 1, &["a"]);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    submit(&mut core, 1, vec![a.clone(), b.clone()], vec![b.key]);
    let outs = drain(&mut core);
    let rs = run_tasks(&outs);
    assert_eq!(rs.len(), 2);
    let producer = rs[0].worker;
    assert_eq!(rs[1].inputs[0].holders, vec![producer]);
    let consumer = rs[1].worker;
    // The worker computing `a` dies: `b` is cancelled where it waited and sent again with
    // `a`'s new place.
    core.handle(
        core.now(),
        Input::WorkerLeft {
            worker: producer,
            died: true,
        },
    )
    .unwrap();
    core.validate().unwrap();
    let outs = drain(&mut core);
    let survivor = if producer == WorkerId(1) {
        WorkerId(2)
    } else {
        WorkerId(1)
    };
    if consumer != producer {
        assert_eq!(cancels(&outs), vec![(consumer, b.key)]);
    }
    let rs: Vec<_> = run_tasks(&outs)
        .into_iter()
        .filter(|r| r.key == a.key || r.key == b.key)
        .collect();
    assert_eq!(rs.len(), 2, "{outs:?}");
    assert_eq!((rs[0].key, rs[0].worker), (a.key, survivor));
    assert_eq!(rs[1].key, b.key);
    assert_eq!(rs[1].inputs[0].holders, vec![survivor]);
    finish(&mut core, survivor, a.key, 8, 10);
    finish(&mut core, rs[1].worker, b.key, 8, 10);
    assert_eq!(core.phase(&b.key), Some(Phase::Memory));
}

#[test]
fn an_early_task_fails_with_its_input() {
    let (mut core, a, b) = early_pair();
    core.handle(
        core.now(),
        Input::TaskErred {
            worker: WorkerId(1),
            key: a.key,
            message: "boom".into(),
        },
    )
    .unwrap();
    core.validate().unwrap();
    let outs = drain(&mut core);
    assert_eq!(cancels(&outs), vec![(WorkerId(1), b.key)]);
    assert_eq!(core.phase(&b.key), Some(Phase::Erred));
    // The worker's late word that `b` could not get its input changes nothing.
    let late = core.handle(
        core.now(),
        Input::Reschedule {
            worker: WorkerId(1),
            key: b.key,
        },
    );
    assert!(late.is_err());
    core.validate().unwrap();
}

#[test]
fn a_rescheduled_early_task_is_sent_again() {
    // The worker could not get the pending input (say the peer had not heard of it yet):
    // the task goes back to waiting and is dispatched again.
    let (mut core, _, b) = early_pair();
    core.handle(
        core.now(),
        Input::Reschedule {
            worker: WorkerId(1),
            key: b.key,
        },
    )
    .unwrap();
    core.validate().unwrap();
    let outs = drain(&mut core);
    let rs = run_tasks(&outs);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].key, b.key);
    assert!(rs[0].inputs[0].pending);
}

fn stencil_makespan(early: bool, seed: u64) -> (Micros, u64) {
    let mut sim = Sim::new(two_workers(early, seed));
    sim.submit_at(Micros(0), ClientId(1), &stencil(4, 30, Micros(100), 8));
    let report = sim.drive().expect("simulation").clone();
    assert!(sim.undelivered().is_empty());
    assert!(report.erred.is_empty());
    assert_eq!(report.concurrent_runs, 0);
    assert!(sim.core.is_quiet());
    (report.makespan, sim.core.stats().early_runs)
}

#[test]
fn early_dispatch_hides_the_scheduler_round_trip_of_a_stencil() {
    // Width 4 on 2 one-slot workers, 100 us tasks, 50 us one-way latency: without early
    // dispatch every step waits for a round trip through the scheduler; with it, only for
    // peer transfers.
    let (mut late_total, mut early_total) = (0, 0);
    for seed in 1..6 {
        let (late, late_runs) = stencil_makespan(false, seed);
        let (early, early_runs) = stencil_makespan(true, seed);
        eprintln!("seed {seed}: {late:?} -> {early:?} ({early_runs} early runs)");
        assert_eq!(late_runs, 0);
        assert!(early_runs > 60, "{early_runs} early runs");
        late_total += late.0;
        early_total += early.0;
    }
    assert!(
        early_total * 100 < late_total * 95,
        "early dispatch {early_total} us vs {late_total} us"
    );
}

#[test]
fn long_tasks_are_not_dispatched_early() {
    // 2 ms steps: the round trip is small beside them, and placing them once their inputs
    // exist balances the workers better.
    let mut sim = Sim::new(two_workers(true, 1));
    sim.submit_at(Micros(0), ClientId(1), &stencil(4, 10, Micros(2000), 8));
    sim.drive().expect("simulation");
    assert!(sim.undelivered().is_empty());
    assert_eq!(sim.core.stats().early_runs, 0);
}

#[test]
fn a_long_stencil_of_short_steps_stays_split_between_the_workers() {
    // 4 columns on 2 one-slot workers, 100 us steps: two columns each, kept there (each step
    // fetches one boundary chunk per worker), and close to the ideal 2 tasks per step.
    let mut sim = Sim::new(two_workers(true, 3));
    sim.submit_at(Micros(0), ClientId(1), &stencil(4, 300, Micros(100), 8));
    let report = sim.drive().expect("simulation").clone();
    assert!(sim.undelivered().is_empty());
    let runs = &report.runs_by_worker;
    eprintln!("{runs:?}, makespan {:?}", report.makespan);
    assert_eq!(runs.iter().sum::<u64>(), report.runs_started);
    let (least, most) = (runs.iter().min().unwrap(), runs.iter().max().unwrap());
    assert!(least * 100 >= most * 95, "runs per worker {runs:?}");
    let ideal = 300 * 2 * 100;
    assert!(
        report.makespan.0 * 100 < ideal * 115,
        "makespan {:?} against an ideal of {ideal} us",
        report.makespan
    );
}

#[test]
fn equal_estimates_place_an_early_task_on_the_less_loaded_worker() {
    // `use` needs `a` (300 us, on worker 1) and `b` (100 us, on worker 2, which also has `x`
    // of 100 us queued): either way one input crosses, and both queues end before the inputs
    // would, so the estimates tie; the less loaded worker (200 us against 300 us) wins, not
    // the holder of the first argument.
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    join(&mut core, 2, 1);
    let on = |mut t: TaskSpec, w: u64| {
        t.restrictions.workers = vec![WorkerId(w)];
        t
    };
    // Measure both functions first.
    let long0 = on(task("long", 0, &[]), 1);
    let short0 = on(task("short", 0, &[]), 2);
    submit(
        &mut core,
        1,
        vec![long0.clone(), short0.clone()],
        vec![long0.key, short0.key],
    );
    drain(&mut core);
    finish(&mut core, WorkerId(1), long0.key, 8, 300);
    finish(&mut core, WorkerId(2), short0.key, 8, 100);
    drain(&mut core);

    let a = on(task("long", 1, &[]), 1);
    let b = on(task("short", 1, &[]), 2);
    let x = on(task("short", 2, &[]), 2);
    let user = task("use", 0, &[a.key, b.key]);
    submit(
        &mut core,
        1,
        vec![a.clone(), b.clone(), x.clone(), user.clone()],
        vec![user.key, x.key],
    );
    let rs = runs(&drain(&mut core));
    assert!(rs.contains(&(WorkerId(2), user.key)), "{rs:?}");
}
