//! One graph that mixes languages on a local cluster: a C task's output feeds a Python task and
//! a JavaScript task, whose outputs a Rust task sums; the error and trap cases of every language
//! reach the client with the right cause.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use taskhost_client::{Client, ClientOptions, FailureKind, Graph, LocalCluster, Module};
use tokio::time::timeout;

/// Bound of every wait here: the first call of a Python or JavaScript module compiles it (seconds).
const LIMIT: Duration = Duration::from_secs(180);

async fn register(client: &Client, path: &str) -> Result<Module> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    Ok(timeout(LIMIT, client.module(bytes)).await??)
}

// One worker, and no describing of modules by the client: each module is compiled once, by the
// worker (Python and JavaScript take seconds each). The runtime tests cover `functions()` and the
// artifact cache; the client's own tests cover placement over several workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_mixing_c_python_js_and_rust_tasks() -> Result<()> {
    let started = Instant::now();
    let builder = LocalCluster::builder()
        .workers(1)
        .slots(2)
        .client_options(ClientOptions::new().describe_modules(false));
    let cluster = timeout(LIMIT, builder.start()).await??;
    let client = timeout(LIMIT, cluster.client()).await??;
    let rust = register(&client, taskhost_guest_artifacts::EXAMPLE_GUEST).await?;
    let c = register(&client, taskhost_polyglot_guests::C_GUEST).await?;
    let python = register(&client, taskhost_polyglot_guests::PYTHON_GUEST).await?;
    let js = register(&client, taskhost_polyglot_guests::JS_GUEST).await?;

    let g = Graph::new();
    // C computes, Python and JavaScript consume its output, Rust sums theirs.
    let from_c = g.call::<f64>(&c, "add", (1.5f64, 2.25f64))?;
    let from_python = g.call::<f64>(&python, "add", (&from_c, 10.0f64))?;
    let from_js = g.call::<f64>(&js, "add", (&from_c, 0.25f64))?;
    let total = g.call::<f64>(&rust, "add", (&from_python, &from_js))?;
    // Lists and integers cross languages the same way.
    let counted = g.call::<i64>(&python, "inc", (41i64,))?;
    let counted = g.call::<i64>(&js, "inc", (&counted,))?;
    let counted = g.call::<i64>(&c, "inc", (&counted,))?;
    let summed = g.call::<f64>(&js, "sum", (vec![0.5f64, 0.25, 0.125],))?;

    assert_eq!(
        timeout(LIMIT, client.compute(&total)).await??,
        (3.75 + 10.0) + (3.75 + 0.25)
    );
    eprintln!(
        "the mixed graph computed after {:?} (each module compiled once)",
        started.elapsed()
    );
    assert_eq!(timeout(LIMIT, client.compute(&counted)).await??, 44);
    assert_eq!(timeout(LIMIT, client.compute(&summed)).await??, 0.875);

    // Every language's guest error and trap reach the client with their cause.
    for (language, module) in [("c", &c), ("python", &python), ("js", &js)] {
        let failing = g.call::<u64>(module, "fail", ("no luck",))?;
        let err = timeout(LIMIT, client.compute(&failing))
            .await?
            .expect_err("fail fails");
        let failure = err
            .task_failure()
            .with_context(|| format!("{language}: {err}"))?;
        assert_eq!(failure.kind, FailureKind::Failed, "{language}: {err}");
        assert!(failure.message.contains("no luck"), "{language}: {failure}");

        let trapping = g.call::<u64>(module, "panic", ("boom",))?;
        let err = timeout(LIMIT, client.compute(&trapping))
            .await?
            .expect_err("panic traps");
        assert_eq!(
            err.failure_kind(),
            Some(FailureKind::Trap),
            "{language}: {err}"
        );

        let bad = g.call::<f64>(module, "add", ("not a number", 1.0f64))?;
        let err = timeout(LIMIT, client.compute(&bad))
            .await?
            .expect_err("bad input");
        assert_eq!(
            err.failure_kind(),
            Some(FailureKind::InvalidInput),
            "{language}: {err}"
        );

        // A Rust task depending on a failed task of another language fails with that cause.
        let dependent = g.call::<f64>(
            &rust,
            "add",
            (&g.call::<f64>(module, "fail", ("upstream",))?, 1.0f64),
        )?;
        let err = timeout(LIMIT, client.compute(&dependent))
            .await?
            .expect_err("dependents fail");
        let failure = err
            .task_failure()
            .with_context(|| format!("{language}: {err}"))?;
        assert!(
            failure.message.contains("upstream"),
            "{language}: {failure}"
        );

        // The client does not check names here: the worker reports the unknown function.
        let unknown = g.call::<u64>(module, "no_such_function", ())?;
        let err = timeout(LIMIT, client.compute(&unknown))
            .await?
            .expect_err("unknown function");
        assert_eq!(
            err.failure_kind(),
            Some(FailureKind::UnknownFunction),
            "{language}: {err}"
        );
    }
    eprintln!("every case checked after {:?}", started.elapsed());
    Ok(())
}
