//! One test per policy, showing its effect.

mod common;

use common::*;
use taskhost_scheduler_core::sim::*;
use taskhost_scheduler_core::*;

#[test]
fn order_is_depth_first_so_memory_stays_low() {
    // A tree reduction of 64 leaves on one single-slot worker: depth-first order combines
    // pairs as soon as possible, so few chunks are held at once.
    let g = tree_reduction(64, 2, Micros(100), 1000);
    let cfg = SimConfig {
        workers: vec![WorkerSpec {
            slots: 1,
            ..WorkerSpec::default()
        }],
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg);
    sim.submit_at(Micros(0), ClientId(1), &g);
    let r = sim.drive().unwrap();
    // About log2(64) + the chunks in flight, where breadth-first order would hold all 64.
    assert!(
        r.peak_worker_memory <= 10 * 1000,
        "peak {}",
        r.peak_worker_memory
    );
}

#[test]
fn user_priority_runs_first_then_submission_order() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    let a: Vec<_> = (0..5).map(|i| task("a", i, &[])).collect();
    let b: Vec<_> = (0..5).map(|i| task("b", i, &[])).collect();
    let c: Vec<_> = (0..5)
        .map(|i| {
            let mut t = task("c", i, &[]);
            t.priority = 5;
            t
        })
        .collect();
    let wants = |v: &Vec<TaskSpec>| v.iter().map(|t| t.key).collect::<Vec<_>>();
    submit(&mut core, 1, a.clone(), wants(&a));
    submit(&mut core, 1, b.clone(), wants(&b));
    submit(&mut core, 1, c.clone(), wants(&c));
    // Run everything one by one and record the order.
    let mut order = Vec::new();
    for step in 0..100 {
        let outs = drain(&mut core);
        let rs = runs(&outs);
        if rs.is_empty() && step > 0 {
            break;
        }
        for (w, k) in rs {
            order.push(k);
            finish(&mut core, w, k, 1, 1);
        }
    }
    // The first two a-tasks were handed out at once (slots x 1.1 = 2); then c (priority 5),
    // then the rest of a, then b.
    let pos = |k: &TaskKey| order.iter().position(|x| x == k).unwrap();
    assert!(pos(&c[0].key) < pos(&a[4].key));
    assert!(c.iter().all(|t| pos(&t.key) < pos(&b[0].key)));
    assert!(a.iter().all(|t| pos(&t.key) < pos(&b[0].key)));
}

#[test]
fn root_tasks_are_queued_beyond_slots_times_1_1() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 2);
    join(&mut core, 2, 4);
    let ts: Vec<_> = (0..1000).map(|i| task("root", i, &[])).collect();
    let wants = ts.iter().map(|t| t.key).collect();
    submit(&mut core, 1, ts.clone(), wants);
    let rs = runs(&drain(&mut core));
    // ceil(2 * 1.1) + ceil(4 * 1.1) = 3 + 5.
    assert_eq!(rs.iter().filter(|(w, _)| *w == WorkerId(1)).count(), 3);
    assert_eq!(rs.iter().filter(|(w, _)| *w == WorkerId(2)).count(), 5);
    assert_eq!(
        ts.iter()
            .filter(|t| core.phase(&t.key) == Some(Phase::Queued))
            .count(),
        992
    );
    // Finishing one hands out exactly one more, to the same worker.
    let (w, k) = rs[0];
    finish(&mut core, w, k, 1, 10);
    let more = runs(&drain(&mut core));
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].0, w);
}

/// One 2-slot worker that has run one `short` task of `micros`, then `n` more submitted:
/// how many of them it is sent at once.
fn roots_sent_for_backlog(micros: u64, n: u64, root_backlog: Micros) -> usize {
    let mut core = Core::new(Config {
        root_backlog,
        ..Config::default()
    });
    join(&mut core, 1, 2);
    let first = task("short", 0, &[]);
    submit(&mut core, 1, vec![first.clone()], vec![first.key]);
    drain(&mut core);
    finish(&mut core, WorkerId(1), first.key, 8, micros);
    drain(&mut core);
    let ts: Vec<_> = (1..=n).map(|i| task("short", i, &[])).collect();
    let wants = ts.iter().map(|t| t.key).collect();
    submit(&mut core, 1, ts, wants);
    let sent = runs(&drain(&mut core)).len();
    core.validate().expect("consistent");
    sent
}

#[test]
fn short_root_tasks_fill_a_backlog_that_covers_the_round_trip() {
    // 100 us tasks: 1 ms of work per slot (the default backlog), not ceil(2 * 1.1) = 3, which
    // would leave slots idle while a report and the next task travel.
    assert_eq!(roots_sent_for_backlog(100, 1000, Micros(1000)), 20);
    assert_eq!(roots_sent_for_backlog(100, 1000, Micros(0)), 3);
    // Very short tasks: at most 64 per slot.
    assert_eq!(roots_sent_for_backlog(1, 1000, Micros(1000)), 128);
    // Long tasks: the count cap alone.
    assert_eq!(roots_sent_for_backlog(5000, 1000, Micros(1000)), 3);
    // Fewer tasks than the backlog: all of them.
    assert_eq!(roots_sent_for_backlog(100, 5, Micros(1000)), 5);
}

#[test]
fn a_root_backlog_keeps_workers_busy_across_the_round_trip_in_the_simulator() {
    // 400 independent tasks of 100 us on two one-slot workers, 100 us one-way latency: with
    // two tasks per worker at a time, a slot waits for each report to travel and the next task
    // to come back; with 1 ms of backlog it does not.
    let makespan = |root_backlog: Micros| {
        let config = Config {
            root_backlog,
            ..Config::default()
        };
        let mut sim = Sim::new(two_one_slot_workers(config, Micros(100)));
        let mut graph = GraphBuilder::new(1);
        let keys: Vec<_> = (0..400)
            .map(|_| graph.task("map", &[], Micros(100), 8))
            .collect();
        graph.want(&keys);
        sim.submit_at(Micros(0), ClientId(1), &graph.finish());
        let report = sim.drive().expect("simulation").clone();
        assert!(report.erred.is_empty());
        report.makespan.0
    };
    let (without, with) = (makespan(Micros(0)), makespan(Micros(1000)));
    eprintln!("without a backlog {without} us, with {with} us (ideal ~20000)");
    assert!(with * 100 < without * 80, "{with} us vs {without} us");
    assert!(with < 26_000, "{with} us");
}

#[test]
fn placement_goes_to_the_holder_of_large_inputs() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    join(&mut core, 2, 1);
    let big = task("big", 0, &[]);
    let small = task("small", 1, &[]);
    let user = task("use", 2, &[big.key, small.key]);
    submit(
        &mut core,
        1,
        vec![big.clone(), small.clone(), user.clone()],
        vec![user.key],
    );
    let rs = runs(&drain(&mut core));
    assert_eq!(rs.len(), 2);
    let holder_of = |k: TaskKey| rs.iter().find(|(_, x)| *x == k).unwrap().0;
    finish(&mut core, holder_of(big.key), big.key, 100_000_000, 10);
    finish(&mut core, holder_of(small.key), small.key, 10, 10);
    let rs = runs(&drain(&mut core));
    assert_eq!(rs, vec![(holder_of(big.key), user.key)]);
    // The RunTask says where the other input lives.
    core.validate().unwrap();
}

#[test]
fn placement_never_scans_idle_workers_when_a_holder_is_free() {
    // With 100 idle workers, a dependent still lands on its input's holder.
    let mut core = Core::new(Config::default());
    for i in 1..=100 {
        join(&mut core, i, 1);
    }
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    submit(&mut core, 1, vec![a.clone(), b.clone()], vec![b.key]);
    let rs = runs(&drain(&mut core));
    finish(&mut core, rs[0].0, a.key, 10_000_000, 10);
    assert_eq!(runs(&drain(&mut core)), vec![(rs[0].0, b.key)]);
}

#[test]
fn durations_are_ewma_per_function() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 4);
    let ts: Vec<_> = (0..2).map(|i| task("f", i, &[])).collect();
    submit(&mut core, 1, ts.clone(), ts.iter().map(|t| t.key).collect());
    finish(&mut core, WorkerId(1), ts[0].key, 1, 100);
    assert_eq!(core.duration_estimate(&module(), "f"), Some(100.0));
    finish(&mut core, WorkerId(1), ts[1].key, 1, 300);
    assert_eq!(core.duration_estimate(&module(), "f"), Some(200.0));
    assert_eq!(core.duration_estimate(&module(), "g"), None);
    core.handle(
        core.now(),
        Input::TransferMeasured {
            bytes: 1000,
            duration: Micros(1),
        },
    )
    .unwrap();
    assert!(core.bandwidth_estimate() > 100.0);
}

#[test]
fn stealing_moves_queued_work_to_a_new_worker_with_a_handshake() {
    // One worker gets 40 long dependents of a tiny root; a second worker joins later.
    let mut b = GraphBuilder::new(9);
    let root = b.task("root", &[], Micros(10), 8);
    let ks: Vec<_> = (0..40)
        .map(|_| b.task("long", &[root], Micros(10_000), 8))
        .collect();
    b.want(&ks);
    let g = b.finish();
    let one = WorkerSpec {
        slots: 2,
        ..WorkerSpec::default()
    };
    let run = |steal: bool| {
        let core = Config {
            work_stealing: steal,
            ..Config::default()
        };
        let mut sim = Sim::new(SimConfig {
            workers: vec![one],
            core,
            ..SimConfig::default()
        });
        sim.submit_at(Micros(0), ClientId(1), &g);
        sim.join_at(Micros(5_000), one);
        let r = sim.drive().unwrap().clone();
        assert!(sim.undelivered().is_empty());
        assert_eq!(r.concurrent_runs, 0, "a task ran twice");
        (r, sim.core.stats().clone())
    };
    let (with, stats) = run(true);
    let (without, _) = run(false);
    assert!(stats.steals > 0 && stats.steal_requests >= stats.steals);
    assert!(
        with.makespan.0 * 10 < without.makespan.0 * 7,
        "{} vs {}",
        with.makespan,
        without.makespan
    );
}

#[test]
fn steal_refused_keeps_the_task_and_accepted_moves_it() {
    let mut core = Core::new(Config {
        steal_interval: Micros(1),
        ..Config::default()
    });
    join(&mut core, 1, 1);
    let root = task("root", 0, &[]);
    let deps: Vec<_> = (1..6).map(|i| task("d", i, &[root.key])).collect();
    let mut all = vec![root.clone()];
    all.extend(deps.iter().cloned());
    submit(&mut core, 1, all, deps.iter().map(|t| t.key).collect());
    drain(&mut core);
    finish(&mut core, WorkerId(1), root.key, 8, 10);
    assert_eq!(runs(&drain(&mut core)).len(), 5);
    join(&mut core, 2, 1);
    let t = core.poll_timeout().expect("balancing armed");
    core.handle_timeout(t);
    core.validate().unwrap();
    let steals: Vec<TaskKey> = drain(&mut core)
        .into_iter()
        .filter_map(|o| match o {
            Output::StealRequest { worker, key } => {
                assert_eq!(worker, WorkerId(1));
                Some(key)
            }
            _ => None,
        })
        .collect();
    // Half the difference in load: 2 of the 4 tasks waiting on worker 1.
    assert_eq!(steals.len(), 2);
    // Refused (already started): nothing moves.
    core.handle(
        core.now(),
        Input::StealAnswer {
            worker: WorkerId(1),
            key: steals[0],
            stolen: false,
        },
    )
    .unwrap();
    core.validate().unwrap();
    assert!(runs(&drain(&mut core)).is_empty());
    // Accepted: the task runs on the thief.
    let key = steals[1];
    core.handle(
        core.now(),
        Input::StealAnswer {
            worker: WorkerId(1),
            key,
            stolen: true,
        },
    )
    .unwrap();
    core.validate().unwrap();
    assert_eq!(runs(&drain(&mut core)), vec![(WorkerId(2), key)]);
    // A late answer is stale, not a panic.
    let again = core.handle(
        core.now(),
        Input::StealAnswer {
            worker: WorkerId(1),
            key,
            stolen: true,
        },
    );
    assert!(matches!(again, Err(CoreError::Stale { .. })));
}

#[test]
fn paused_workers_get_no_new_tasks() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    join(&mut core, 2, 1);
    core.handle(
        core.now(),
        Input::WorkerMemory {
            worker: WorkerId(1),
            used: 900,
        },
    )
    .unwrap();
    let outs = drain(&mut core);
    assert!(outs.contains(&Output::WorkerPaused {
        worker: WorkerId(1),
        paused: true
    }));
    let ts: Vec<_> = (0..10).map(|i| task("r", i, &[])).collect();
    submit(&mut core, 1, ts.clone(), ts.iter().map(|t| t.key).collect());
    assert!(
        runs(&drain(&mut core))
            .iter()
            .all(|(w, _)| *w == WorkerId(2))
    );
    core.handle(
        core.now(),
        Input::WorkerMemory {
            worker: WorkerId(1),
            used: 100,
        },
    )
    .unwrap();
    let outs = drain(&mut core);
    assert!(outs.contains(&Output::WorkerPaused {
        worker: WorkerId(1),
        paused: false
    }));
    assert!(runs(&outs).iter().any(|(w, _)| *w == WorkerId(1)));
    core.validate().unwrap();
}

#[test]
fn chunks_are_released_when_nobody_needs_them() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 2);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    submit(&mut core, 1, vec![a.clone(), b.clone()], vec![b.key]);
    drain(&mut core);
    finish(&mut core, WorkerId(1), a.key, 10, 1);
    drain(&mut core);
    finish(&mut core, WorkerId(1), b.key, 10, 1);
    let outs = drain(&mut core);
    assert!(outs.contains(&Output::ReleaseChunk {
        worker: WorkerId(1),
        key: a.key
    }));
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::ReleaseChunk { key, .. } if *key == b.key))
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::TaskDone { key, .. } if *key == b.key))
    );
}

#[test]
fn workers_over_their_memory_threshold_are_paused_and_resumed_in_the_simulator() {
    // Many 1 MB outputs summed in groups; one worker has room for only a few chunks, so it
    // pauses, the others take the work, and it resumes once its chunks are consumed.
    let g = map_reduce(64, 8, Micros(1000), 1 << 20);
    let small = WorkerSpec {
        slots: 2,
        memory: 4 << 20,
        bandwidth: 1000.0,
    };
    let big = WorkerSpec {
        slots: 2,
        memory: 1 << 40,
        bandwidth: 1000.0,
    };
    let mut sim = Sim::new(SimConfig {
        workers: vec![small, big, big],
        ..SimConfig::default()
    });
    sim.submit_at(Micros(0), ClientId(1), &g);
    let r = sim.drive().unwrap().clone();
    assert!(sim.undelivered().is_empty());
    assert!(r.pauses > 0, "the small worker never paused");
    assert!(
        sim.core.is_paused(WorkerId(1)) == Some(false),
        "the small worker stayed paused"
    );
}

/// Places `b`, the dependent of a tiny chunk on worker 1, while worker 1 is still busy with
/// a task estimated at `busy_us` and worker 2 is idle; returns where `b` went.
fn placement_next_to_a_busy_holder(busy_us: u64) -> WorkerId {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    // Measure the busy function first.
    let q0 = task("q", 0, &[]);
    submit(&mut core, 1, vec![q0.clone()], vec![q0.key]);
    assert_eq!(runs(&drain(&mut core)), vec![(WorkerId(1), q0.key)]);
    finish(&mut core, WorkerId(1), q0.key, 8, busy_us);
    let a = task("a", 1, &[]);
    let q1 = task("q", 2, &[]);
    let b = task("b", 3, &[a.key]);
    submit(
        &mut core,
        1,
        vec![a.clone(), q1.clone(), b.clone()],
        vec![b.key, q1.key],
    );
    let rs = runs(&drain(&mut core));
    assert!(rs.contains(&(WorkerId(1), a.key)) && rs.contains(&(WorkerId(1), q1.key)));
    join(&mut core, 2, 1);
    finish(&mut core, WorkerId(1), a.key, 8, 50);
    let rs = runs(&drain(&mut core));
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(rs[0].1, b.key);
    rs[0].0
}

#[test]
fn a_small_input_keeps_its_dependent_unless_the_holders_queue_outlasts_a_fetch() {
    // Fetching 8 bytes from a peer costs a round trip (`peer_latency`, 100 us), not 8 bytes'
    // worth of bandwidth: the dependent waits 50 us for the holder rather than move.
    assert_eq!(placement_next_to_a_busy_holder(50), WorkerId(1));
    // Behind 1 ms of work it moves to the idle worker.
    assert_eq!(placement_next_to_a_busy_holder(1_000), WorkerId(2));
}
