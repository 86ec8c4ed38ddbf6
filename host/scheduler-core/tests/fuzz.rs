//! Arbitrary input sequences, mostly nonsense (unknown keys, dead workers, answers nobody asked
//! for, graphs with missing dependencies): the core never panics and its invariants hold.

mod common;

use common::*;
use proptest::prelude::*;
use taskhost_scheduler_core::*;

#[derive(Clone, Debug)]
enum Op {
    Join(u8, u8),
    Leave(u8, bool),
    Submit(u8, Vec<u8>, Vec<u8>),
    SubmitPrefix(u8, u8, Vec<u8>),
    Want(u8, u8),
    Release(u8, u8, bool),
    ClientLeft(u8),
    Finished(u8, u8, u16),
    Erred(u8, u8),
    Reschedule(u8, u8),
    Steal(u8, u8, bool),
    Memory(u8, u16),
    Timeout,
    Answer,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..3).prop_map(|(w, s)| Op::Join(w, s)),
        (0u8..4, any::<bool>()).prop_map(|(w, d)| Op::Leave(w, d)),
        (
            0u8..3,
            prop::collection::vec(0u8..12, 0..8),
            prop::collection::vec(0u8..12, 0..3)
        )
            .prop_map(|(c, t, w)| Op::Submit(c, t, w)),
        (0u8..3, 0u8..12, prop::collection::vec(0u8..12, 0..3))
            .prop_map(|(c, n, w)| Op::SubmitPrefix(c, n, w)),
        (0u8..3, 0u8..12, prop::collection::vec(0u8..12, 0..3))
            .prop_map(|(c, n, w)| Op::SubmitPrefix(c, n, w)),
        (0u8..3, 0u8..12).prop_map(|(c, k)| Op::Want(c, k)),
        (0u8..3, 0u8..12, any::<bool>()).prop_map(|(c, k, x)| Op::Release(c, k, x)),
        (0u8..3).prop_map(Op::ClientLeft),
        (0u8..4, 0u8..12, any::<u16>()).prop_map(|(w, k, n)| Op::Finished(w, k, n)),
        (0u8..4, 0u8..12).prop_map(|(w, k)| Op::Erred(w, k)),
        (0u8..4, 0u8..12).prop_map(|(w, k)| Op::Reschedule(w, k)),
        (0u8..4, 0u8..12, any::<bool>()).prop_map(|(w, k, s)| Op::Steal(w, k, s)),
        (0u8..4, any::<u16>()).prop_map(|(w, m)| Op::Memory(w, m)),
        Just(Op::Timeout),
        Just(Op::Answer),
        Just(Op::Answer),
        Just(Op::Answer),
        Just(Op::Answer),
        Just(Op::Answer),
        (1u8..4, 1u8..3).prop_map(|(w, s)| Op::Join(w, s)),
    ]
}

/// Twelve tasks: a small DAG (each task i depends on i/2 and i/3 when smaller) with retries
/// and a restriction here and there.
fn universe() -> Vec<TaskSpec> {
    let mut specs: Vec<TaskSpec> = Vec::new();
    for i in 0..12u64 {
        let mut deps = Vec::new();
        if i > 0 {
            deps.push(specs[(i / 2) as usize].key);
        }
        if i > 2 {
            deps.push(specs[(i / 3) as usize].key);
        }
        let mut t = task("u", i, &deps);
        t.retries = (i % 3) as u8;
        if i == 7 {
            t.restrictions.workers = vec![WorkerId(2)];
        }
        specs.push(t);
    }
    specs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_inputs_never_break_the_core(ops in prop::collection::vec(op(), 1..120)) {
        let specs = universe();
        let key = |k: u8| specs[k as usize % specs.len()].key;
        let mut core = Core::new(Config { steal_interval: Micros(1), ..Config::default() });
        let mut now = 0u64;
        // Outputs waiting for an answer from a "worker".
        let mut pending: Vec<Output> = Vec::new();
        for op in ops {
            now += 7;
            let t = Micros(now);
            let input = match op {
                Op::Join(w, s) => Some(Input::WorkerJoined {
                    worker: WorkerId(u64::from(w)),
                    slots: u32::from(s),
                    memory_limit: 1000,
                    address: "a".into(),
                    resources: vec![],
                }),
                Op::Leave(w, died) => Some(Input::WorkerLeft { worker: WorkerId(u64::from(w)), died }),
                Op::Submit(c, tasks, wants) => Some(Input::SubmitGraph {
                    client: ClientId(u64::from(c)),
                    tasks: tasks.iter().map(|&i| specs[i as usize].clone()).collect(),
                    wants: wants.iter().map(|&i| key(i)).collect(),
                }),
                Op::SubmitPrefix(c, n, wants) => {
                    // Tasks 0..=n (each depends only on earlier ones), wanting some of them.
                    let n = n as usize % specs.len();
                    Some(Input::SubmitGraph {
                        client: ClientId(u64::from(c)),
                        tasks: specs[..=n].to_vec(),
                        wants: wants.iter().map(|&i| specs[i as usize % (n + 1)].key).collect(),
                    })
                }
                Op::Want(c, k) => Some(Input::Want { client: ClientId(u64::from(c)), keys: vec![key(k)] }),
                Op::Release(c, k, cancel) => {
                    let (client, keys) = (ClientId(u64::from(c)), vec![key(k)]);
                    Some(if cancel { Input::Cancel { client, keys } } else { Input::Release { client, keys } })
                }
                Op::ClientLeft(c) => Some(Input::ClientLeft { client: ClientId(u64::from(c)) }),
                Op::Finished(w, k, n) => Some(Input::TaskFinished {
                    worker: WorkerId(u64::from(w)),
                    key: key(k),
                    nbytes: u64::from(n),
                    duration: Micros(u64::from(n)),
                }),
                Op::Erred(w, k) => Some(Input::TaskErred { worker: WorkerId(u64::from(w)), key: key(k), message: "x".into() }),
                Op::Reschedule(w, k) => Some(Input::Reschedule { worker: WorkerId(u64::from(w)), key: key(k) }),
                Op::Steal(w, k, s) => Some(Input::StealAnswer { worker: WorkerId(u64::from(w)), key: key(k), stolen: s }),
                Op::Memory(w, m) => Some(Input::WorkerMemory { worker: WorkerId(u64::from(w)), used: u64::from(m) }),
                Op::Timeout => {
                    core.handle_timeout(t);
                    None
                }
                // A well-behaved worker answers the oldest pending request.
                Op::Answer => match pending.first().cloned() {
                    Some(out) => {
                        pending.remove(0);
                        match out {
Output::RunTask(r) => Some(match now % 11 {
                                0 => Input::TaskErred { worker: r.worker, key: r.key, message: "boom".into() },
                                1 => Input::Reschedule { worker: r.worker, key: r.key },
                                _ => Input::TaskFinished { worker: r.worker, key: r.key, nbytes: 10, duration: Micros(5_000) },
                            }),

                            Output::StealRequest { worker, key } => Some(Input::StealAnswer { worker, key, stolen: now.is_multiple_of(2) }),
                            _ => None,
                        }
                    }
                    None => None,
                },
            };
            if let Some(input) = input {
                let _ = core.handle(t, input);
            }
            while let Some(out) = core.poll_output() {
                if matches!(out, Output::RunTask(_) | Output::StealRequest { .. }) {
                    pending.push(out);
                }
            }
            if let Err(e) = core.validate() {
                return Err(TestCaseError::fail(format!("{e:?}")));
            }
        }
    }
}
