//! The worker's settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use taskhost_net::{JoinTicket, TransportSettings};
use taskhost_runtime::Limits;

/// The fraction of [`WorkerConfig::memory_limit`] that chunks may occupy in memory before the
/// least recently used ones are spilled to disk (70%, as Dask's `target` threshold).
pub const SPILL_FRACTION: f64 = 0.7;

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How to reach and authenticate to the scheduler (and to peer workers: the cluster token).
    pub ticket: JoinTicket,
    /// The name the worker registers under; `<host name>:<peer port>` when `None`.
    pub name: Option<String>,
    /// Execution slots: how many tasks run at once, each on its own blocking thread.
    pub slots: u32,
    /// Memory for chunks, in bytes. Above [`SPILL_FRACTION`] of it, the least recently used
    /// chunks are spilled to disk.
    pub memory_limit: u64,
    /// The worker's data directory: modules and compiled artifacts (`modules/`, `artifacts/`,
    /// kept across restarts) and spilled chunks (`chunks/`, emptied at start). Two workers
    /// running at once must not share it.
    pub data_dir: PathBuf,
    /// Where the peer server (chunks for peers and clients) listens; `0.0.0.0:0` by default.
    pub listen: SocketAddr,
    /// The host put in the peer address registered with the scheduler; by default the listen
    /// address if it is specific, else the local address used to reach the scheduler.
    pub advertise_host: Option<IpAddr>,
    /// Limits of a task whose `RunTask.limits` leave a field unset.
    pub default_limits: Limits,
    /// How often a `Heartbeat` is sent to the scheduler.
    pub heartbeat: Duration,
    /// QUIC settings of the worker's endpoints (the idle timeout bounds how long a vanished
    /// scheduler goes unnoticed).
    pub transport: TransportSettings,
    /// CPUs the worker's threads run on (empty: wherever the OS puts them). Give workers that
    /// share a machine disjoint sets, one CPU per slot: see [`cpu_sets`](crate::cpu_sets).
    pub cpus: Vec<usize>,
}

impl WorkerConfig {
    /// Default settings: one slot per available CPU, half of the machine's RAM for chunks,
    /// the peer server on an ephemeral port of every interface, a heartbeat every second.
    pub fn new(ticket: JoinTicket, data_dir: impl Into<PathBuf>) -> Self {
        let slots = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        Self {
            ticket,
            name: None,
            slots,
            memory_limit: total_memory().map_or(4 << 30, |total| total / 2),
            data_dir: data_dir.into(),
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            advertise_host: None,
            default_limits: Limits::default(),
            heartbeat: Duration::from_secs(1),
            transport: TransportSettings::default(),
            cpus: Vec::new(),
        }
    }

    /// The chunk store's spill threshold in bytes.
    pub fn spill_threshold(&self) -> u64 {
        (self.memory_limit as f64 * SPILL_FRACTION) as u64
    }
}

/// The machine's RAM in bytes, from `/proc/meminfo` (`None` where it cannot be read).
fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// The machine's host name, for the default worker name.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

/// The local address the kernel would use to send to `remote` (no packet is sent).
pub(crate) fn local_ip_towards(remote: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match remote {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(remote).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_kibibytes() {
        let text = "MemTotal:        8029360 kB\nMemFree:          151660 kB\n";
        assert_eq!(parse_mem_total(text), Some(8029360 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB"), None);
    }

    #[test]
    fn loopback_is_reached_from_loopback() {
        let ip = local_ip_towards("127.0.0.1:9".parse().unwrap());
        assert_eq!(ip, Some(IpAddr::from([127, 0, 0, 1])));
    }
}
