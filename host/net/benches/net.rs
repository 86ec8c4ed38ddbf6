//! Network benchmark: worker-to-worker-like bulk bandwidth (8 MiB chunks) over QUIC versus plain
//! TCP on loopback, and small-message round-trip latency on the control stream.
//!
//! Server and client run on two OS threads, each with its own current-thread tokio runtime, like
//! two worker processes on a 2-core machine.
//!
//! ```text
//! RUST_BACKTRACE=0 cargo bench -p taskhost-net --bench net
//! ```
//!
//! Environment: `NET_BENCH_TOTAL_MIB` (default 512), `NET_BENCH_RUNS` (default 3, median
//! reported), `NET_BENCH_PINGS` (default 20000).

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use taskhost_net::{
    ClusterToken, Credentials, Endpoint, Listener, ListenerConfig, TransportSettings, serve_bulk,
};
use taskhost_proto::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 8 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn chunk() -> Bytes {
    Bytes::from((0..CHUNK).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>())
}

/// Starts a QUIC peer listener on its own thread serving `chunk()` for any key and echoing pings.
fn quic_server(settings: TransportSettings, token: ClusterToken) -> SocketAddr {
    let (tx, rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("quic-server".into())
        .spawn(move || {
            runtime().block_on(async move {
                let mut config = ListenerConfig::peer(token).expect("peer identity");
                config.transport = settings;
                let mut listener = Listener::bind("127.0.0.1:0".parse().expect("addr"), config)
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let data = chunk();
                while let Some(est) = listener.accept().await {
                    let data = data.clone();
                    serve_bulk(est.connection.clone(), move |_key: u64| {
                        let data = data.clone();
                        async move { Ok(Some(data)) }
                    });
                    let (stx, mut srx) = est.control.split::<Msg, Msg>();
                    tokio::spawn(async move {
                        while let Ok(Some(Msg::Ping(i))) = srx.recv().await {
                            if stx.send(&Msg::Pong(i)).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        })
        .expect("thread");
    rx.recv().expect("server address")
}

/// Round trips of a 64-bit ping on the control stream after 1000 for warm-up; p50 and p99 in
/// microseconds.
async fn ping_pong(
    tx: &taskhost_net::Sender<Msg>,
    rx: &mut taskhost_net::Receiver<Msg>,
    pings: usize,
) -> (f64, f64) {
    let mut lat = Vec::with_capacity(pings);
    for i in 0..(pings + 1000) as u64 {
        let t = Instant::now();
        tx.send(&Msg::Ping(i)).await.expect("send");
        match rx.recv().await.expect("recv") {
            Some(Msg::Pong(j)) if j == i => {}
            other => panic!("unexpected {other:?}"),
        }
        if i >= 1000 {
            lat.push(t.elapsed());
        }
    }
    percentiles(lat)
}

/// Fetches `total` bytes in 8 MiB chunks with `parallel` fetches in flight; returns GB/s.
async fn quic_bulk(
    conn: &taskhost_net::Connection,
    total: usize,
    parallel: usize,
    segments: bool,
) -> f64 {
    let chunks = total / CHUNK;
    let start = Instant::now();
    let mut next = 0usize;
    let mut inflight = tokio::task::JoinSet::new();
    while next < chunks || !inflight.is_empty() {
        while next < chunks && inflight.len() < parallel {
            let conn = conn.clone();
            let key = next as u64;
            inflight.spawn(async move {
                if segments {
                    let segs = conn.fetch_segments(&key, CHUNK).await?;
                    Ok(segs.iter().map(|s| s.len()).sum())
                } else {
                    conn.fetch(&key, CHUNK).await.map(|b| b.len())
                }
            });
            next += 1;
        }
        if let Some(done) = inflight.join_next().await {
            let len: usize = done.expect("join").expect("fetch");
            assert_eq!(len, CHUNK);
        }
    }
    (chunks * CHUNK) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn tcp_server() -> SocketAddr {
    let (tx, rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("tcp-server".into())
        .spawn(move || {
            runtime().block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let data = chunk();
                while let Ok((mut sock, _)) = listener.accept().await {
                    sock.set_nodelay(true).expect("nodelay");
                    let data = data.clone();
                    tokio::spawn(async move {
                        let mut req = [0u8; 9];
                        while sock.read_exact(&mut req).await.is_ok() {
                            if req[0] == 0 {
                                // Bulk: 8-byte length, then the chunk.
                                let mut msg = (data.len() as u64).to_le_bytes().to_vec();
                                msg.extend_from_slice(&data);
                                if sock.write_all(&msg).await.is_err() {
                                    break;
                                }
                            } else if sock.write_all(&req).await.is_err() {
                                // Ping: echo.
                                break;
                            }
                        }
                    });
                }
            });
        })
        .expect("thread");
    rx.recv().expect("server address")
}

async fn tcp_bulk(sock: &mut tokio::net::TcpStream, total: usize) -> f64 {
    let chunks = total / CHUNK;
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    for key in 0..chunks as u64 {
        let mut req = [0u8; 9];
        req[1..].copy_from_slice(&key.to_le_bytes());
        sock.write_all(&req).await.expect("write");
        let mut len = [0u8; 8];
        sock.read_exact(&mut len).await.expect("read");
        assert_eq!(u64::from_le_bytes(len) as usize, CHUNK);
        sock.read_exact(&mut buf).await.expect("read");
    }
    (chunks * CHUNK) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn memcpy_gbps(total: usize) -> f64 {
    let src = chunk();
    let mut dst = vec![0u8; CHUNK];
    let start = Instant::now();
    for _ in 0..total / CHUNK {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    }
    total as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// User + system CPU time of this process (both benchmark threads), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds per thread name, from `/proc/self/task/*/stat`.
fn thread_cpu() -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = match &stat[open + 1..close] {
            n @ ("quic-server" | "tcp-server") => n.to_string(),
            _ => "client".to_string(),
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        *out.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    out
}

/// The largest per-thread CPU use between two snapshots, in CPU-seconds per GB moved.
fn busiest_thread(before: &std::collections::HashMap<String, f64>, bytes: f64) -> (String, f64) {
    let after = thread_cpu();
    after
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                (t - before.get(name).copied().unwrap_or(0.0)) / (bytes / 1e9),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_default()
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(v[v.len() / 2]), us(v[v.len() * 99 / 100]))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let total = env_usize("NET_BENCH_TOTAL_MIB", 512) * 1024 * 1024;
    let runs = env_usize("NET_BENCH_RUNS", 3).max(1);
    let pings = env_usize("NET_BENCH_PINGS", 20_000).max(100);
    let token = ClusterToken::generate().expect("token");

    // The QUIC rows use QUIC even on this host; the same-host socket has rows of its own.
    let mut tuned = TransportSettings {
        local_transport: false,
        ..TransportSettings::default()
    };
    if let Some(mtu) = std::env::var("NET_BENCH_MTU")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tuned.max_udp_payload = mtu;
    }
    let untuned = TransportSettings {
        socket_buffer: 208 * 1024,
        max_udp_payload: 1452,
        stream_window: 1_250_000,
        connection_window: 15_000_000,
        send_window: 10_000_000,
        ..tuned.clone()
    };
    let ack_default = TransportSettings {
        ack_eliciting_threshold: None,
        ..tuned.clone()
    };
    let no_gso = TransportSettings {
        gso: false,
        ..tuned.clone()
    };
    let same_host = TransportSettings {
        local_transport: true,
        ..tuned.clone()
    };

    let quic_only = std::env::var_os("NET_BENCH_QUIC_ONLY").is_some();
    let rt = runtime();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut quic_seq_tuned = 0.0;
    let mut tcp_seq = 0.0;
    rt.block_on(async {
        for (name, settings) in [
            ("tuned (MTU<=6000, 4 MiB buffers, GSO)", tuned.clone()),
            (
                "tuned, quinn's ACK frequency (every 2nd packet)",
                ack_default,
            ),
            ("GSO off", no_gso),
            ("untuned (MTU<=1452, default buffers/windows)", untuned),
        ] {
            if quic_only && !name.starts_with("tuned (") {
                continue;
            }
            let addr = quic_server(settings.clone(), token.clone());
            let endpoint = Endpoint::client(settings).expect("endpoint");
            let est = endpoint
                .connect(addr, &Credentials::peer(token.clone()), Role::Peer)
                .await
                .expect("connect");
            let conn = est.connection.clone();
            // Warm-up (MTU discovery, windows).
            quic_bulk(&conn, 8 * CHUNK, 1, false).await;
            let variants: &[(usize, bool)] = if name.starts_with("tuned (") {
                &[(1, false), (4, false), (1, true)]
            } else {
                &[(1, false)]
            };
            for &(parallel, segments) in variants {
                let cpu0 = cpu_seconds();
                let threads0 = thread_cpu();
                let gbps =
                    median(repeat(runs, || quic_bulk(&conn, total, parallel, segments)).await);
                let cpu = (cpu_seconds() - cpu0) / (runs as f64 * total as f64 / 1e9);
                let (thread, busiest) = busiest_thread(&threads0, runs as f64 * total as f64);
                if name.starts_with("tuned (") && parallel == 1 && !segments {
                    quic_seq_tuned = gbps;
                }
                rows.push((
                    format!(
                        "QUIC {name}, {parallel} in flight{}",
                        if segments { ", zero-copy segments" } else { "" }
                    ),
                    format!("{gbps:.2} GB/s, {cpu:.2} CPU-s/GB"),
                ));
                rows.push((
                    format!("  busiest thread ({thread}): CPU-s/GB, ceiling at 1 core per side"),
                    format!("{busiest:.2}, {:.2} GB/s", 1.0 / busiest),
                ));
            }
            let stats = conn.quinn().expect("a QUIC connection").stats();
            rows.push((
                "  path MTU reached".to_string(),
                stats.path.current_mtu.to_string(),
            ));
            conn.close("done");
        }

        if quic_only {
            return;
        }
        let addr = tcp_server();
        let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        tcp_bulk(&mut sock, 8 * CHUNK).await;
        let mut v = Vec::new();
        let cpu0 = cpu_seconds();
        let threads0 = thread_cpu();
        for _ in 0..runs {
            v.push(tcp_bulk(&mut sock, total).await);
        }
        let cpu = (cpu_seconds() - cpu0) / (runs as f64 * total as f64 / 1e9);
        let (thread, busiest) = busiest_thread(&threads0, runs as f64 * total as f64);
        tcp_seq = median(v);
        rows.push((
            "TCP (plain, no TLS), 1 fetch in flight".into(),
            format!("{tcp_seq:.2} GB/s, {cpu:.2} CPU-s/GB"),
        ));
        rows.push((
            format!("  busiest thread ({thread}): CPU-s/GB, ceiling at 1 core per side"),
            format!("{busiest:.2}, {:.2} GB/s", 1.0 / busiest),
        ));
        // The same-host socket.
        let addr = quic_server(same_host.clone(), token.clone());
        let endpoint = Endpoint::client(same_host.clone()).expect("endpoint");
        let est = endpoint
            .connect(addr, &Credentials::peer(token.clone()), Role::Peer)
            .await
            .expect("connect");
        assert!(
            est.connection.is_local(),
            "the same-host socket was not used"
        );
        let conn = est.connection.clone();
        quic_bulk(&conn, 8 * CHUNK, 1, false).await;
        let mut local_seq = 0.0;
        for parallel in [1, 4] {
            let cpu0 = cpu_seconds();
            let gbps = median(repeat(runs, || quic_bulk(&conn, total, parallel, false)).await);
            let cpu = (cpu_seconds() - cpu0) / (runs as f64 * total as f64 / 1e9);
            if parallel == 1 {
                local_seq = gbps;
            }
            rows.push((
                format!("same-host socket, {parallel} in flight"),
                format!("{gbps:.2} GB/s, {cpu:.2} CPU-s/GB"),
            ));
        }
        let (tx, mut rx) = est.control.split::<Msg, Msg>();
        let (p50, p99) = ping_pong(&tx, &mut rx, pings).await;
        rows.push((
            "same-host control round trip (64-bit ping/pong) p50 / p99".into(),
            format!("{p50:.1} us / {p99:.1} us"),
        ));
        conn.close("done");
        let memcpy = memcpy_gbps(total);
        rows.push((
            "ratio same-host socket / memcpy (1 in flight)".into(),
            format!("{:.2}", local_seq / memcpy),
        ));
        rows.push((
            "memcpy of 8 MiB (reference)".into(),
            format!("{memcpy:.2} GB/s"),
        ));
        rows.push((
            "ratio QUIC tuned / TCP (1 in flight)".into(),
            format!("{:.2}", quic_seq_tuned / tcp_seq),
        ));

        // Round-trip latency of small messages.
        let addr = quic_server(tuned.clone(), token.clone());
        let endpoint = Endpoint::client(tuned.clone()).expect("endpoint");
        let mut handshakes = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let est = endpoint
                .connect(addr, &Credentials::peer(token.clone()), Role::Peer)
                .await
                .expect("connect");
            handshakes.push(t.elapsed());
            est.connection.close("done");
        }
        let (handshake_p50, _) = percentiles(handshakes);
        let est = endpoint
            .connect(addr, &Credentials::peer(token.clone()), Role::Peer)
            .await
            .expect("connect");
        let (tx, mut rx) = est.control.split::<Msg, Msg>();
        let (p50, p99) = ping_pong(&tx, &mut rx, pings).await;
        rows.push((
            "QUIC control round trip (64-bit ping/pong) p50 / p99".into(),
            format!("{p50:.1} us / {p99:.1} us"),
        ));

        let addr = tcp_server();
        let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        let mut lat = Vec::with_capacity(pings);
        for i in 0..(pings + 1000) as u64 {
            let mut req = [1u8; 9];
            req[1..].copy_from_slice(&i.to_le_bytes());
            let t = Instant::now();
            sock.write_all(&req).await.expect("write");
            sock.read_exact(&mut req).await.expect("read");
            if i >= 1000 {
                lat.push(t.elapsed());
            }
        }
        let (p50, p99) = percentiles(lat);
        rows.push((
            "TCP round trip (9 bytes) p50 / p99".into(),
            format!("{p50:.1} us / {p99:.1} us"),
        ));
        rows.push((
            "QUIC connect: TLS handshake + hello round trip, p50 of 20".into(),
            format!("{:.2} ms", handshake_p50 / 1e3),
        ));
    });

    println!(
        "\ntaskhost-net loopback benchmark: {} MiB in 8 MiB chunks, median of {runs} runs, {pings} pings\n",
        total / (1024 * 1024)
    );
    let width = rows.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
    println!("| {:width$} | {:>30} |", "measurement", "result");
    println!("|{}|{}|", "-".repeat(width + 2), "-".repeat(32));
    for (a, b) in &rows {
        println!("| {a:width$} | {b:>30} |");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average at the end: {}", load.trim());
}

/// Runs `f` `runs` times sequentially and collects the results.
async fn repeat<F, Fut>(runs: usize, mut f: F) -> Vec<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        out.push(f().await);
    }
    out
}
