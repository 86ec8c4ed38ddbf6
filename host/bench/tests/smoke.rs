//! Smoke test of the benchmark driver: every shape at tiny sizes on an embedded cluster of 2
//! workers x 1 slot, results checked against the recurrence (not timed), then a short METG
//! sweep and a few latency round trips.

use std::time::Duration;

use anyhow::Result;
use taskhost_bench::{Shape, Spec, Target, granularities};
use taskhost_client::LocalCluster;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_gives_correct_results() -> Result<()> {
    timeout(Duration::from_secs(60), async {
        let client = LocalCluster::builder().workers(2).slots(1).client().await?;
        let mut t = Target::new(client, 2, None).await?;
        let mut shapes = Shape::all();
        shapes.push(Shape::Nearest { radix: 8 });
        shapes.push(Shape::Spread { radix: 5 });
        for shape in shapes {
            for (width, micros, bytes) in [(5, 0, 8), (9, 20, 100)] {
                let spec = Spec {
                    shape,
                    width,
                    height: 3,
                    micros,
                    bytes,
                };
                // `run` checks every gathered value and its size.
                let r = t.run(&spec).await?;
                assert!(r.tasks > 0 && r.wall_s > 0.0, "{r:?}");
                // Points of nearest, spread and fft with the same inputs are the same task.
                if !matches!(
                    shape,
                    Shape::Spread { .. } | Shape::Nearest { .. } | Shape::Fft
                ) {
                    assert_eq!(r.tasks, spec.tasks(), "{}", shape.name());
                }
            }
        }
        // Busy tasks ran the lean guest's spin loop, calibrated on the cluster first.
        assert!(
            t.spins_per_us.is_some_and(|v| v > 0.0),
            "{:?}",
            t.spins_per_us
        );
        // The example guest's kernels (WASI clock) give the same values.
        t.wasi_guest = true;
        for micros in [0, 20] {
            let spec = Spec {
                shape: Shape::Stencil1d,
                width: 3,
                height: 3,
                micros,
                bytes: 16,
            };
            t.run(&spec).await?;
        }
        t.wasi_guest = false;
        let m = t.metg(Shape::Stencil1d, 2, 200, 0.002, 8, 1).await?;
        assert!(!m.points.is_empty());
        assert!(
            m.points
                .windows(2)
                .all(|w| w[0].spec.micros >= w[1].spec.micros),
            "points are listed largest duration first"
        );
        let l = t.latency(5, 1).await?;
        assert_eq!(l.iters, 5);
        assert!(l.median_us > 0.0);
        anyhow::Ok(())
    })
    .await?
}

#[test]
fn granularities_step_down_from_the_start() {
    assert_eq!(granularities(100), vec![100, 50, 20, 10, 5, 2, 1]);
    assert_eq!(granularities(30), vec![20, 10, 5, 2, 1]);
}

#[test]
fn task_counts_match_the_shapes() {
    let spec = |shape, width, height| Spec {
        shape,
        width,
        height,
        micros: 0,
        bytes: 8,
    };
    assert_eq!(spec(Shape::Tree, 8, 1).tasks(), 15);
    assert_eq!(spec(Shape::Tree, 8, 1).depth(), 4);
    assert_eq!(spec(Shape::Merge, 64, 1).tasks(), 64 + 8 + 1);
    assert_eq!(spec(Shape::Stencil1d, 4, 10).tasks(), 40);
    assert_eq!(spec(Shape::Fft, 8, 4).tasks(), 32);
    assert_eq!(Shape::parse("fft", 2).unwrap(), Shape::Fft);
    assert!(Shape::parse("fft2", 2).is_err());
}

/// Runs the Dask side at tiny sizes on both of its schedulers, so that the scripts cannot rot:
/// the script checks every result against the recurrence itself and exits non-zero on a
/// mismatch. The first run creates the virtualenv with Dask (`host/bench/dask/run.sh`).
#[test]
fn the_dask_scripts_give_correct_results() -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dask/run.sh");
    let dir = tempfile::tempdir()?;
    for sched in ["threads", "cluster"] {
        let out_path = dir.path().join(format!("{sched}.out"));
        let err_path = dir.path().join(format!("{sched}.err"));
        let mut child = std::process::Command::new("bash")
            .args([
                script,
                "suite",
                "--sched",
                sched,
                "--repeat",
                "1",
                "--trivial-tasks",
                "200",
                "--max-tasks",
                "300",
                "--scale",
                "0.05",
                "--iters",
                "5",
                "--start-us",
                "2000",
                "--target-s",
                "0.02",
                "--max-height",
                "20",
            ])
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()?;
        // Bounded: the virtualenv is created once (a minute or two); a run takes seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(540);
        while child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("the Dask suite ({sched}) did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = child.wait()?;
        let stderr = std::fs::read_to_string(&err_path)?;
        assert!(status.success(), "Dask suite ({sched}) failed:\n{stderr}");
        let last = std::fs::read_to_string(&out_path)?
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        let report: serde_json::Value = serde_json::from_str(&last)?;
        let runs = report["runs"].as_array().map(Vec::len).unwrap_or(0);
        assert!(runs >= 8, "every shape ran ({sched}): {last}");
        assert!(report["summary"]["trivial_tasks_per_s"].as_u64() > Some(0));
    }
    Ok(())
}
