//! Failure handling: dead workers, lost chunks, suspects, errors, retries, restrictions, bad
//! input.

mod common;

use std::sync::Arc;

use common::*;
use taskhost_scheduler_core::*;

#[test]
fn dead_worker_tasks_are_rescheduled_and_lost_chunks_recomputed() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    join(&mut core, 2, 1);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[]);
    let c = task("c", 2, &[a.key, b.key]);
    submit(
        &mut core,
        1,
        vec![a.clone(), b.clone(), c.clone()],
        vec![c.key],
    );
    let rs = runs(&drain(&mut core));
    let wa = rs.iter().find(|(_, k)| *k == a.key).unwrap().0;
    finish(&mut core, wa, a.key, 10, 1);
    drain(&mut core);
    // The holder of `a` dies: `a` is needed by `c`, so it is recomputed; `b` (running there or
    // not) goes on.
    core.handle(
        core.now(),
        Input::WorkerLeft {
            worker: wa,
            died: true,
        },
    )
    .unwrap();
    core.validate().unwrap();
    let rs = runs(&drain(&mut core));
    assert!(rs.iter().any(|(w, k)| *k == a.key && *w != wa));
    assert_eq!(core.stats().chunks_lost, 1);
    // Messages from the dead worker are rejected, not a panic.
    let late = core.handle(
        core.now(),
        Input::TaskFinished {
            worker: wa,
            key: b.key,
            nbytes: 1,
            duration: Micros(1),
        },
    );
    assert_eq!(late, Err(CoreError::UnknownWorker(wa)));
}

#[test]
fn a_task_that_kills_three_workers_is_suspect() {
    let mut core = Core::new(Config::default());
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    submit(&mut core, 7, vec![a.clone(), b.clone()], vec![b.key]);
    for i in 1..=3 {
        join(&mut core, i, 1);
        let rs = runs(&drain(&mut core));
        assert_eq!(rs, vec![(WorkerId(i), a.key)]);
        core.handle(
            core.now(),
            Input::WorkerLeft {
                worker: WorkerId(i),
                died: true,
            },
        )
        .unwrap();
        core.validate().unwrap();
    }
    let outs = drain(&mut core);
    let err = outs
        .iter()
        .find_map(|o| match o {
            Output::TaskErred { client, key, error } if *client == ClientId(7) && *key == b.key => {
                Some(error.clone())
            }
            _ => None,
        })
        .expect("b erred");
    assert_eq!(
        *err,
        TaskFailure::Suspect {
            origin: a.key,
            deaths: 3
        }
    );
    // An orderly leave does not count.
    assert_eq!(core.phase(&b.key), Some(Phase::Erred));
}

#[test]
fn errors_propagate_with_the_original_cause_and_retries_help() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 2);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    let mut r = task("r", 2, &[]);
    r.retries = 1;
    submit(
        &mut core,
        1,
        vec![a.clone(), b.clone(), r.clone()],
        vec![b.key, r.key],
    );
    drain(&mut core);
    let fail = |core: &mut Core, k: TaskKey| {
        core.handle(
            core.now(),
            Input::TaskErred {
                worker: WorkerId(1),
                key: k,
                message: "boom".into(),
            },
        )
        .unwrap();
        core.validate().unwrap();
    };
    fail(&mut core, a.key);
    fail(&mut core, r.key);
    let outs = drain(&mut core);
    let erred: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::TaskErred { key, error, .. } => Some((*key, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(erred.len(), 1);
    assert_eq!(erred[0].0, b.key);
    assert_eq!(
        *erred[0].1,
        TaskFailure::Failed {
            origin: a.key,
            message: "boom".into()
        }
    );
    // `r` is retried once.
    assert_eq!(runs(&outs), vec![(WorkerId(1), r.key)]);
    finish(&mut core, WorkerId(1), r.key, 1, 1);
    assert!(
        drain(&mut core)
            .iter()
            .any(|o| matches!(o, Output::TaskDone { key, .. } if *key == r.key))
    );
}

#[test]
fn restrictions_and_annotations_survive_worker_loss() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    join(&mut core, 2, 1);
    let mut t = task("gpu", 0, &[]);
    t.restrictions.workers = vec![WorkerId(2)];
    t.annotations = Some(Arc::new(
        [("team".to_string(), "x".to_string())]
            .into_iter()
            .collect(),
    ));
    let mut g = task("res", 1, &[]);
    g.restrictions.resources = vec![("gpu".into(), 1)];
    submit(&mut core, 1, vec![t.clone(), g.clone()], vec![t.key, g.key]);
    let outs = drain(&mut core);
    let run = outs
        .iter()
        .find_map(|o| match o {
            Output::RunTask(r) if r.key == t.key => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(run.worker, WorkerId(2));
    assert_eq!(run.annotations.as_ref().unwrap()["team"], "x");
    assert_eq!(core.phase(&g.key), Some(Phase::NoWorker));
    core.handle(
        core.now(),
        Input::WorkerLeft {
            worker: WorkerId(2),
            died: true,
        },
    )
    .unwrap();
    core.validate().unwrap();
    assert_eq!(core.phase(&t.key), Some(Phase::NoWorker));
    // Worker 2 comes back (as a new connection with the same id), with a gpu.
    core.handle(
        core.now(),
        Input::WorkerJoined {
            worker: WorkerId(2),
            slots: 2,
            memory_limit: 1000,
            address: "w2".into(),
            resources: vec![("gpu".into(), 2)],
        },
    )
    .unwrap();
    core.validate().unwrap();
    let outs = drain(&mut core);
    let rs = runs(&outs);
    assert!(rs.contains(&(WorkerId(2), t.key)) && rs.contains(&(WorkerId(2), g.key)));
    let run = outs
        .iter()
        .find_map(|o| match o {
            Output::RunTask(r) if r.key == t.key => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(run.annotations.as_ref().unwrap()["team"], "x");
}

#[test]
fn identical_tasks_from_two_clients_are_computed_once() {
    let mut core = Core::new(no_early());
    join(&mut core, 1, 2);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    submit(&mut core, 1, vec![a.clone(), b.clone()], vec![b.key]);
    submit(&mut core, 2, vec![a.clone(), b.clone()], vec![b.key]);
    assert_eq!(core.stats().tasks_reused, 2);
    let rs = runs(&drain(&mut core));
    assert_eq!(rs.len(), 1);
    finish(&mut core, WorkerId(1), a.key, 1, 1);
    drain(&mut core);
    finish(&mut core, WorkerId(1), b.key, 1, 1);
    let done: Vec<_> = drain(&mut core)
        .into_iter()
        .filter_map(|o| match o {
            Output::TaskDone { client, .. } => Some(client),
            _ => None,
        })
        .collect();
    assert_eq!(done, vec![ClientId(1), ClientId(2)]);
    assert_eq!(core.stats().runs, 2);
    // A third client asking later gets it at once.
    core.handle(
        core.now(),
        Input::Want {
            client: ClientId(3),
            keys: vec![b.key],
        },
    )
    .unwrap();
    assert!(matches!(
        drain(&mut core)[..],
        [Output::TaskDone {
            client: ClientId(3),
            ..
        }]
    ));
}

#[test]
fn cancel_stops_unneeded_work_and_acknowledges() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    let a = task("a", 0, &[]);
    submit(&mut core, 1, vec![a.clone()], vec![a.key]);
    drain(&mut core);
    core.handle(
        core.now(),
        Input::Cancel {
            client: ClientId(1),
            keys: vec![a.key],
        },
    )
    .unwrap();
    core.validate().unwrap();
    let outs = drain(&mut core);
    assert!(outs.contains(&Output::CancelTask {
        worker: WorkerId(1),
        key: a.key
    }));
    assert!(outs.contains(&Output::TaskCancelled {
        client: ClientId(1),
        key: a.key
    }));
    // The daemon learns which literal handles it may free.
    assert!(outs.contains(&Output::TaskForgotten {
        key: a.key,
        literals: vec![LiteralHandle(0)]
    }));
    assert_eq!(core.phase(&a.key), None);
    // The late result is released, and reported stale.
    let late = core.handle(
        core.now(),
        Input::TaskFinished {
            worker: WorkerId(1),
            key: a.key,
            nbytes: 1,
            duration: Micros(1),
        },
    );
    assert!(late.is_err());
}

#[test]
fn bad_input_is_rejected_without_changes() {
    let mut core = Core::new(Config::default());
    join(&mut core, 1, 1);
    let dup = core.handle(
        core.now(),
        Input::WorkerJoined {
            worker: WorkerId(1),
            slots: 1,
            memory_limit: 1,
            address: "x".into(),
            resources: vec![],
        },
    );
    assert_eq!(dup, Err(CoreError::DuplicateWorker(WorkerId(1))));
    let ghost = task("ghost", 0, &[]);
    let a = task("a", 1, &[ghost.key]);
    let r = core.handle(
        core.now(),
        Input::SubmitGraph {
            client: ClientId(1),
            tasks: vec![a.clone()],
            wants: vec![a.key],
        },
    );
    assert_eq!(
        r,
        Err(CoreError::MissingDependency {
            task: a.key,
            missing: ghost.key
        })
    );
    assert_eq!(core.num_tasks(), 0);
    // A cycle (impossible with honest content keys, possible with forged ones).
    let k1 = TaskKey([1; 32]);
    let k2 = TaskKey([2; 32]);
    let t1 = TaskSpec::new(k1, module(), "f".into(), vec![ArgSpec::Task(k2)]);
    let t2 = TaskSpec::new(k2, module(), "f".into(), vec![ArgSpec::Task(k1)]);
    let r = core.handle(
        core.now(),
        Input::SubmitGraph {
            client: ClientId(1),
            tasks: vec![t1, t2],
            wants: vec![k1],
        },
    );
    assert!(matches!(r, Err(CoreError::Cycle(_))));
    assert_eq!(core.num_tasks(), 0);
    let unknown = core.handle(
        core.now(),
        Input::Want {
            client: ClientId(1),
            keys: vec![k1],
        },
    );
    assert_eq!(unknown, Err(CoreError::UnknownKey(k1)));
    let r = core.handle(
        core.now(),
        Input::Release {
            client: ClientId(9),
            keys: vec![k1],
        },
    );
    assert_eq!(r, Err(CoreError::UnknownClient(ClientId(9))));
    let r = core.handle(
        core.now(),
        Input::Reschedule {
            worker: WorkerId(1),
            key: k1,
        },
    );
    assert_eq!(r, Err(CoreError::UnknownKey(k1)));
    let r = core.handle(
        core.now(),
        Input::WorkerLeft {
            worker: WorkerId(5),
            died: true,
        },
    );
    assert_eq!(r, Err(CoreError::UnknownWorker(WorkerId(5))));
    core.validate().unwrap();
    assert!(drain(&mut core).is_empty());
}

#[test]
fn a_chunk_its_holder_lost_is_recomputed_for_its_dependents() {
    let mut core = Core::new(no_early());
    join(&mut core, 1, 1);
    let a = task("a", 0, &[]);
    let b = task("b", 1, &[a.key]);
    submit(&mut core, 1, vec![a.clone(), b.clone()], vec![b.key]);
    assert_eq!(runs(&drain(&mut core)), vec![(WorkerId(1), a.key)]);
    finish(&mut core, WorkerId(1), a.key, 10, 1);
    assert_eq!(runs(&drain(&mut core)), vec![(WorkerId(1), b.key)]);
    // The worker finds `a` gone when `b` starts: it says so and gives `b` back.
    let lost = Input::ChunkLost {
        worker: WorkerId(1),
        key: a.key,
    };
    core.handle(core.now(), lost.clone()).unwrap();
    core.handle(
        core.now(),
        Input::Reschedule {
            worker: WorkerId(1),
            key: b.key,
        },
    )
    .unwrap();
    core.validate().unwrap();
    assert_eq!(core.stats().chunks_lost, 1);
    assert_eq!(core.phase(&a.key), Some(Phase::Processing));
    assert_eq!(core.phase(&b.key), Some(Phase::Waiting));
    assert_eq!(runs(&drain(&mut core)), vec![(WorkerId(1), a.key)]);
    // A second report about the same chunk (now being recomputed) changes nothing.
    core.handle(core.now(), lost).unwrap();
    core.validate().unwrap();
    assert_eq!(core.stats().chunks_lost, 1);
    finish(&mut core, WorkerId(1), a.key, 10, 1);
    assert_eq!(runs(&drain(&mut core)), vec![(WorkerId(1), b.key)]);
    finish(&mut core, WorkerId(1), b.key, 10, 1);
    assert_eq!(core.phase(&b.key), Some(Phase::Memory));
    // Reports about unknown keys and from unknown workers are harmless.
    let stranger = task("z", 9, &[]);
    core.handle(
        core.now(),
        Input::ChunkLost {
            worker: WorkerId(1),
            key: stranger.key,
        },
    )
    .unwrap();
    assert_eq!(
        core.handle(
            core.now(),
            Input::ChunkLost {
                worker: WorkerId(5),
                key: a.key,
            },
        ),
        Err(CoreError::UnknownWorker(WorkerId(5)))
    );
    core.validate().unwrap();
}

/// The production config without early dispatch, for tests that follow one step at a time.
fn no_early() -> Config {
    Config {
        early_dispatch: false,
        ..Config::default()
    }
}
