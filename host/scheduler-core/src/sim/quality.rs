//! Scheduling quality: makespan and bytes moved of the real policies against random and
//! round-robin placement, over graph shapes that stress placement.

use crate::sim::{
    Sim, SimConfig, SimGraph, WorkerSpec, fan_out_fan_in, map_reduce, stencil, transpose_sum,
    tree_reduction,
};
use crate::{ClientId, Config, Micros, Placement};

/// One graph shape under one policy.
#[derive(Clone, Debug)]
pub struct QualityRow {
    /// Graph shape.
    pub shape: &'static str,
    /// Policy name.
    pub policy: &'static str,
    /// Tasks in the graph.
    pub tasks: usize,
    /// Simulated completion time.
    pub makespan: Micros,
    /// Bytes moved between workers.
    pub bytes_moved: u64,
}

/// The shapes compared, at a size scaled by `scale` (1 = the documented table).
pub fn quality_shapes(scale: usize) -> Vec<(&'static str, SimGraph)> {
    let s = scale.max(1);
    let ms = Micros::from_millis;
    vec![
        (
            "tree reduction",
            tree_reduction(256 * s, 2, ms(10), 4 << 20),
        ),
        ("map + reduce", map_reduce(128 * s, 8, ms(20), 16 << 20)),
        ("stencil", stencil(32 * s, 10, ms(10), 8 << 20)),
        ("transpose + sum", transpose_sum(8 * s, ms(10), 16 << 20)),
        (
            "fan-out/fan-in, large chunks",
            fan_out_fan_in(4 * s, 32, ms(5), 64 << 20),
        ),
    ]
}

/// The policies compared.
pub fn quality_policies() -> Vec<(&'static str, Config)> {
    vec![
        ("taskhost", Config::default()),
        (
            "random",
            Config {
                placement: Placement::Random { seed: 7 },
                ..Config::default()
            },
        ),
        (
            "round-robin",
            Config {
                placement: Placement::RoundRobin,
                ..Config::default()
            },
        ),
    ]
}

/// Runs every shape under every policy on `workers` workers of 2 slots with 1 GB/s links.
pub fn quality_table(scale: usize, workers: usize, validate: bool) -> Vec<QualityRow> {
    let mut rows = Vec::new();
    for (shape, graph) in quality_shapes(scale) {
        for (policy, core) in quality_policies() {
            let spec = WorkerSpec {
                slots: 2,
                memory: 1 << 40,
                bandwidth: 1000.0,
            };
            let cfg = SimConfig {
                core: Config {
                    default_bandwidth: 1000.0,
                    ..core
                },
                workers: vec![spec; workers],
                validate,
                ..SimConfig::default()
            };
            let mut sim = Sim::new(cfg);
            sim.submit_at(Micros::ZERO, ClientId(1), &graph);
            let report = match sim.drive() {
                Ok(r) => r.clone(),
                Err(_) => continue,
            };
            rows.push(QualityRow {
                shape,
                policy,
                tasks: graph.tasks.len(),
                makespan: report.makespan,
                bytes_moved: report.bytes_moved,
            });
        }
    }
    rows
}

/// Formats rows as a Markdown table with ratios to the taskhost policy.
pub fn format_quality(rows: &[QualityRow]) -> String {
    let mut out = String::from(
        "| shape | tasks | policy | makespan (ms) | vs taskhost | moved (MB) | vs taskhost |\n|---|---:|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.shape == r.shape && b.policy == "taskhost");
        let (mk, mv) = base.map_or((f64::NAN, f64::NAN), |b| {
            (
                r.makespan.0 as f64 / b.makespan.0.max(1) as f64,
                r.bytes_moved as f64 / b.bytes_moved.max(1) as f64,
            )
        });
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2}x | {:.0} | {:.2}x |\n",
            r.shape,
            r.tasks,
            r.policy,
            r.makespan.0 as f64 / 1000.0,
            mk,
            r.bytes_moved as f64 / 1e6,
            mv
        ));
    }
    out
}
