//! The real policies beat random and round-robin placement on data-heavy shapes.

use taskhost_scheduler_core::sim::{format_quality, quality_table};

#[test]
fn taskhost_beats_random_and_round_robin_on_data_heavy_shapes() {
    // Invariants are checked by the other simulator tests; this one measures.
    let rows = quality_table(1, 4, false);
    println!("{}", format_quality(&rows));
    for r in rows.iter().filter(|r| r.policy != "taskhost") {
        let ours = rows
            .iter()
            .find(|b| b.shape == r.shape && b.policy == "taskhost")
            .expect("taskhost row");
        assert!(
            ours.makespan <= r.makespan,
            "{}: {} slower than {}",
            r.shape,
            ours.policy,
            r.policy
        );
        assert!(
            ours.bytes_moved as f64 * 1.3 <= r.bytes_moved as f64,
            "{}: moved {} vs {} for {}",
            r.shape,
            ours.bytes_moved,
            r.bytes_moved,
            r.policy
        );
    }
    assert_eq!(rows.len(), 15, "every run completed");
}
