//! Property tests over random DAGs with random worker deaths and joins: every wanted key is
//! delivered, results are delivered once (per loss), nothing wanted is released, no task runs
//! twice at once without a loss, and `validate()` holds after every step.

use proptest::prelude::*;
use taskhost_scheduler_core::sim::*;
use taskhost_scheduler_core::*;

/// One random scenario.
#[derive(Clone, Copy)]
struct Scenario {
    seed: u64,
    n: usize,
    workers: usize,
    kills: usize,
    joins: usize,
    fail_rate: f64,
    two_clients: bool,
    releases: bool,
}

fn check_run(sc: Scenario) -> Result<u64, TestCaseError> {
    let Scenario {
        seed,
        n,
        workers,
        kills,
        joins,
        fail_rate,
        two_clients,
        releases,
    } = sc;
    let mut rng = SimRng::new(seed);
    let graph = random_dag(&mut rng, n, 3, fail_rate);
    let specs = (0..workers)
        .map(|_| WorkerSpec {
            slots: 1 + rng.below(3) as u32,
            memory: 1 << 40,
            bandwidth: 10.0 + rng.below(100) as f64,
        })
        .collect();
    // Frequent balancing so that steals race with completions and deaths.
    let core = Config {
        steal_interval: Micros(200),
        ..Config::default()
    };
    let cfg = SimConfig {
        workers: specs,
        core,
        latency: Micros(50),
        jitter: Micros(50),
        seed,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg);
    sim.submit_at(Micros(0), ClientId(1), &graph);
    if two_clients {
        // A second client submits part of the same graph later: tasks are shared.
        let mut part = graph.clone();
        part.tasks.truncate(n / 2 + 1);
        part.wants = part
            .tasks
            .iter()
            .rev()
            .take(3)
            .map(|t| t.spec.key)
            .collect();
        sim.submit_at(Micros(rng.below(5_000)), ClientId(2), &part);
    }
    if releases {
        // The client lets go of some keys (releases or cancels), then asks for the whole graph
        // again: released work stops, forgotten tasks are recreated, kept ones reused.
        let some: Vec<TaskKey> = graph
            .wants
            .iter()
            .filter(|_| rng.chance(0.5))
            .copied()
            .collect();
        let at = Micros(rng.below(10_000));
        sim.release_at(at, ClientId(1), some, rng.chance(0.5));
        sim.submit_at(at.plus(Micros(rng.below(10_000))), ClientId(1), &graph);
    }
    let mut last_kill = Micros(0);
    for _ in 0..kills {
        let at = Micros(rng.below(20_000));
        last_kill = last_kill.max(at);
        sim.kill_at(at, rng.below((workers + joins) as u64) as usize);
    }
    for _ in 0..joins {
        sim.join_at(
            Micros(rng.below(20_000)),
            WorkerSpec {
                slots: 2,
                ..WorkerSpec::default()
            },
        );
    }
    // Someone is alive at the end.
    sim.join_at(last_kill.plus(Micros(1)), WorkerSpec::default());
    let report = match sim.drive() {
        Ok(r) => r.clone(),
        Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
    };
    prop_assert!(
        sim.undelivered().is_empty(),
        "undelivered {:?}",
        sim.undelivered()
    );
    prop_assert_eq!(report.wanted_released, 0);
    prop_assert!(sim.core.is_quiet());
    let failing: std::collections::BTreeSet<TaskKey> = graph
        .tasks
        .iter()
        .filter(|t| t.fails)
        .map(|t| t.spec.key)
        .collect();
    for (k, origin) in &report.erred {
        // An error names its origin: a failing task, or a suspect when workers died.
        prop_assert!(
            failing.contains(origin) || report.kills > 0,
            "{k:?} erred from {origin:?}"
        );
    }
    for (k, times) in &report.done {
        prop_assert!(*times >= 1);
        if report.kills == 0 {
            prop_assert_eq!(*times, 1, "{:?} delivered {} times", k, times);
        } else {
            prop_assert!(
                *times <= 1 + report.kills,
                "{:?} delivered {} times",
                k,
                times
            );
        }
    }
    if report.kills == 0 && !releases {
        prop_assert_eq!(report.concurrent_runs, 0);
        if failing.is_empty() {
            prop_assert!(report.erred.is_empty());
        }
    }
    Ok(sim.core.stats().steals)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_without_failures(seed in any::<u64>(), n in 1usize..50, workers in 1usize..5) {
        check_run(Scenario { seed, n, workers, kills: 0, joins: 0, fail_rate: 0.0, two_clients: false, releases: false })?;
    }

    #[test]
    fn random_dags_with_deaths_and_joins(
        seed in any::<u64>(), n in 1usize..50, workers in 1usize..5, kills in 0usize..4, joins in 0usize..3,
    ) {
        check_run(Scenario { seed, n, workers, kills, joins, fail_rate: 0.0, two_clients: false, releases: false })?;
    }

    #[test]
    fn random_dags_with_task_errors_and_two_clients(
        seed in any::<u64>(), n in 2usize..40, workers in 1usize..4, kills in 0usize..2,
    ) {
        check_run(Scenario { seed, n, workers, kills, joins: 1, fail_rate: 0.05, two_clients: true, releases: false })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_with_releases_cancels_and_resubmission(
        seed in any::<u64>(), n in 1usize..40, workers in 1usize..4, kills in 0usize..2,
    ) {
        check_run(Scenario { seed, n, workers, kills, joins: 1, fail_rate: 0.02, two_clients: true, releases: true })?;
    }
}

#[test]
fn properties_exercise_stealing() {
    let mut steals = 0;
    for seed in 0..40 {
        steals += check_run(Scenario {
            seed,
            n: 60,
            workers: 3,
            kills: 1,
            joins: 1,
            fail_rate: 0.0,
            two_clients: false,
            releases: false,
        })
        .unwrap();
    }
    assert!(steals > 0);
}
