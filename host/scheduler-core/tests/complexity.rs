//! Wide fan-ins and fan-outs, many small submissions: the work stays linear.

mod common;

use std::time::Instant;

use common::*;
use taskhost_scheduler_core::*;

/// Completes every task the core hands out until nothing is left; returns the runs.
fn run_all(core: &mut Core) -> Vec<RunTask> {
    let mut all = Vec::new();
    for _ in 0..1_000_000 {
        let runs: Vec<RunTask> = std::iter::from_fn(|| core.poll_output())
            .filter_map(|o| match o {
                Output::RunTask(r) => Some(*r),
                _ => None,
            })
            .collect();
        if runs.is_empty() {
            break;
        }
        for r in runs {
            let input = Input::TaskFinished {
                worker: r.worker,
                key: r.key,
                nbytes: 8,
                duration: Micros(1),
            };
            core.handle(core.now(), input).unwrap();
            all.push(r);
        }
    }
    all
}

#[test]
fn wide_fan_in_and_fan_out_stay_linear() {
    let started = Instant::now();
    let mut core = Core::new(Config::default());
    for w in 1..=4 {
        join(&mut core, w, 2);
    }
    // 20,000 roots summed by one task; one root read by 20,000 tasks.
    let roots: Vec<TaskSpec> = (0..20_000).map(|i| task("leaf", i, &[])).collect();
    let keys: Vec<TaskKey> = roots.iter().map(|t| t.key).collect();
    let sum = task("sum", 0, &keys);
    let shared = task("shared", 0, &[]);
    let readers: Vec<TaskSpec> = (0..20_000)
        .map(|i| task("read", i, &[shared.key]))
        .collect();
    let mut specs = roots;
    specs.push(sum.clone());
    specs.push(shared);
    specs.extend(readers.iter().cloned());
    let mut wants = vec![sum.key];
    wants.extend(readers.iter().map(|t| t.key));
    submit(&mut core, 1, specs, wants);
    let runs = run_all(&mut core);
    core.validate().unwrap();
    assert_eq!(runs.len(), 40_002);
    let sum_run = runs.iter().find(|r| r.key == sum.key).unwrap();
    assert_eq!(sum_run.inputs.len(), 20_000);
    assert_eq!(sum_run.args.len(), 20_001);
    // Linear work takes well under a second even unoptimised; quadratic work would take minutes.
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn many_small_submissions_queue_in_order() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    // 300 submissions of 100 roots each (sorted batches), then a worker drains them.
    let mut first_keys = Vec::new();
    for g in 0..300u64 {
        let ts: Vec<TaskSpec> = (0..100).map(|i| task("r", g * 1000 + i, &[])).collect();
        first_keys.push(ts[0].key);
        let wants = ts.iter().map(|t| t.key).collect();
        core.handle(
            core.now(),
            Input::SubmitGraph {
                client: ClientId(1),
                tasks: ts,
                wants,
            },
        )
        .unwrap();
    }
    core.validate().unwrap();
    let runs = run_all(&mut core);
    assert_eq!(runs.len(), 30_000);
    // Earlier submissions run first.
    let pos = |k: &TaskKey| runs.iter().position(|r| r.key == *k).unwrap();
    assert!(first_keys.windows(2).all(|w| pos(&w[0]) < pos(&w[1])));
}
