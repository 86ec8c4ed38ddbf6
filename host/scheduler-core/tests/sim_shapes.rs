//! Every graph shape runs to completion in the simulator with all invariants holding.

use taskhost_scheduler_core::sim::*;
use taskhost_scheduler_core::*;

fn run(graph: &SimGraph, cfg: SimConfig) -> SimReport {
    let mut sim = Sim::new(cfg);
    sim.submit_at(Micros(10), ClientId(1), graph);
    let report = sim.drive().expect("simulation").clone();
    assert!(
        sim.undelivered().is_empty(),
        "undelivered: {:?}",
        sim.undelivered()
    );
    assert!(report.erred.is_empty(), "erred: {:?}", report.erred);
    for (k, n) in &report.done {
        assert_eq!(*n, 1, "{k:?} delivered {n} times");
    }
    assert_eq!(report.concurrent_runs, 0);
    assert_eq!(report.wanted_released, 0);
    assert!(sim.core.is_quiet());
    report
}

#[test]
fn shapes_complete() {
    let d = Micros(1000);
    let graphs = [
        tree_reduction(64, 2, d, 1000),
        independent_plus_reduction(200, d, 8),
        map_reduce(40, 4, d, 100_000),
        stencil(10, 5, d, 10_000),
        transpose_sum(5, d, 50_000),
        fan_out_fan_in(3, 10, d, 1_000_000),
    ];
    for g in &graphs {
        let r = run(g, SimConfig::default());
        assert!(r.makespan.0 > 0);
    }
}

#[test]
fn only_wanted_results_stay() {
    let g = tree_reduction(32, 2, Micros(100), 10);
    let mut sim = Sim::new(SimConfig::default());
    sim.submit_at(Micros(0), ClientId(1), &g);
    sim.drive().unwrap();
    // The wanted root is in memory; its lineage is kept, released, for recomputation.
    assert_eq!(sim.core.num_tasks(), 63);
    assert_eq!(sim.core.phase(&g.wants[0]), Some(Phase::Memory));
    assert_eq!(sim.core.phase(&g.tasks[0].spec.key), Some(Phase::Released));
    assert_eq!(sim.worker_memory().iter().sum::<u64>(), 10);
    // Once the client lets go, everything is released and forgotten.
    sim.core
        .handle(
            Micros(1_000_000),
            Input::Release {
                client: ClientId(1),
                keys: g.wants.clone(),
            },
        )
        .unwrap();
    sim.core.validate().unwrap();
    assert_eq!(sim.core.num_tasks(), 0);
}
