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
                // Points of nearest and spread with the same inputs are the same task.
                if !matches!(shape, Shape::Spread { .. } | Shape::Nearest { .. }) {
                    assert_eq!(r.tasks, spec.tasks(), "{}", shape.name());
                }
            }
        }
        let m = t.metg(Shape::Stencil1d, 2, 200, 0.002, 8, 1).await?;
        assert!(!m.points.is_empty());
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
    assert!(Shape::parse("fft", 2).is_err());
}
