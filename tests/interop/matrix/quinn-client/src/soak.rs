//! `quinn-client soak`: the load generator of `make soak` (tests/soak).
//!
//!     quinn-client soak [--conns N] [--seconds S] [--rate R] [--ramp S]
//!                       [--per-endpoint N] [--socket-buffer BYTES] [--threads N]
//!                       [--request-timeout S] [--report S] [--ca FILE] [--sni NAME] URL
//!
//! Opens `--conns` HTTP/3 connections to URL's server, spread over
//! `--ramp` seconds (connection i at ramp * i / conns), over several client
//! endpoints (one UDP socket each, `--per-endpoint` connections per
//! socket, `--socket-buffer` bytes of receive and send buffer: a socket
//! that overflows while its process waits for a CPU drops datagrams, and
//! the losses, not the server, would then set the pace). Each connection GETs URL `--rate` times a second: its first
//! request after a pseudo-random phase within one period (so the load is
//! smooth), then one per period. The loop is closed: a request still
//! running when its successor is due makes that one late, and a whole
//! period missed is counted in `missed`, not queued. `--seconds` after the
//! start the requests stop and every connection leaves cleanly (GOAWAY,
//! then CONNECTION_CLOSE with H3_NO_ERROR).
//!
//! Standard output: every `--report` seconds one line of `key=value` fields,
//! `soak t=... open=... ok=... failed=...` (the counters are cumulative,
//! the latencies are over the interval, as the upper edges of histogram
//! buckets), and a last `soak-done` line. A failed request or connection
//! prints `soak-error: ...` on stderr (the first 10 as they happen), and
//! each distinct error is counted at the end (`soak-error (xN): ...`).
//! Exit status: 0 when no connection and no request failed, 1 when one
//! did, 2 for bad usage.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Buf;
use http::Uri;

use super::{Args, Ctx, Fail, Res, SendRequest};

const USAGE: &str = "usage: quinn-client soak [--conns N] [--seconds S] [--rate R] [--ramp S] \
[--per-endpoint N] [--socket-buffer BYTES] [--threads N] [--request-timeout S] [--report S] \
[--ca FILE] [--sni NAME] URL";

/// How many errors are printed as they happen (all are counted).
const ERRORS_SHOWN: u64 = 10;
/// How long the endpoints may take to go idle after the last close.
const LEAVE_WAIT: Duration = Duration::from_secs(10);

struct Opts {
    conns: usize,
    seconds: f64,
    rate: f64,
    ramp: f64,
    per_endpoint: usize,
    socket_buffer: usize,
    threads: usize,
    request_timeout: Duration,
    report: Duration,
    ca: Option<PathBuf>,
    sni: String,
    url: Uri,
}

fn parse(mut it: impl Iterator<Item = String>) -> Res<Opts> {
    let mut o = Opts {
        conns: 100,
        seconds: 60.0,
        rate: 1.0,
        ramp: -1.0,
        per_endpoint: 100,
        socket_buffer: 4 << 20,
        threads: 1,
        request_timeout: Duration::from_secs(10),
        report: Duration::from_secs(1),
        ca: None,
        sni: "localhost".into(),
        url: Uri::default(),
    };
    let mut url = None;
    while let Some(arg) = it.next() {
        if arg == "--help" || arg == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if !arg.starts_with("--") {
            url = Some(arg);
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| Fail::Error(format!("{arg} needs a value ({USAGE})")))?;
        let num = |v: &str| -> Res<f64> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| Fail::Error(format!("{arg}: bad number {v:?}")))
        };
        match arg.as_str() {
            "--conns" => o.conns = num(&v)? as usize,
            "--seconds" => o.seconds = num(&v)?,
            "--rate" => o.rate = num(&v)?,
            "--ramp" => o.ramp = num(&v)?,
            "--per-endpoint" => o.per_endpoint = (num(&v)? as usize).max(1),
            "--socket-buffer" => o.socket_buffer = num(&v)? as usize,
            "--threads" => o.threads = (num(&v)? as usize).max(1),
            "--request-timeout" => o.request_timeout = Duration::from_secs_f64(num(&v)?),
            "--report" => o.report = Duration::from_secs_f64(num(&v)?.max(0.1)),
            "--ca" => o.ca = Some(PathBuf::from(v)),
            "--sni" => o.sni = v,
            other => return Err(Fail::Error(format!("unknown option {other} ({USAGE})"))),
        }
    }
    let url = url.ok_or_else(|| Fail::Error(format!("no URL given ({USAGE})")))?;
    o.url = url.parse().ctx(&format!("bad URL {url:?}"))?;
    if o.url.scheme_str() != Some("https") || o.url.authority().is_none() {
        return Err(Fail::Error(format!(
            "URL {url:?}: an https:// URL with a host is needed"
        )));
    }
    if o.rate <= 0.0 || o.conns == 0 || o.seconds <= 0.0 {
        return Err(Fail::Error(
            "--conns, --seconds and --rate must be positive".into(),
        ));
    }
    if o.ramp < 0.0 {
        // By default the connections open over a tenth of the run, at most a minute.
        o.ramp = (o.seconds / 10.0).min(60.0);
    }
    Ok(o)
}

// ---------------------------------------------------------------------------
// Counters

/// Upper edges of the latency histogram's buckets, in microseconds; the
/// last bucket holds everything above the last edge.
const EDGES_US: [u64; 23] = [
    250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000, 75_000,
    100_000, 150_000, 200_000, 300_000, 500_000, 750_000, 1_000_000, 2_000_000, 5_000_000,
    10_000_000,
];
const BUCKETS: usize = EDGES_US.len() + 1;

#[derive(Default)]
struct Stats {
    /// Connections in their handshake or HTTP/3 setup.
    connecting: AtomicU64,
    /// Connections established and not yet closed.
    open: AtomicU64,
    opened: AtomicU64,
    connect_failed: AtomicU64,
    /// Connections that closed before the end (the peer or an error).
    lost: AtomicU64,
    /// Connections closed cleanly at the end.
    closed: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    missed: AtomicU64,
    inflight: AtomicU64,
    hist: [AtomicU64; BUCKETS],
    /// The slowest request since the last report, in microseconds.
    max_us: AtomicU64,
}

static STATS: std::sync::LazyLock<Stats> = std::sync::LazyLock::new(Stats::default);
static ERRORS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
static ERRORS_SEEN: AtomicU64 = AtomicU64::new(0);

fn record_error(what: &str) {
    if ERRORS_SEEN.fetch_add(1, Relaxed) < ERRORS_SHOWN {
        eprintln!("soak-error: {}", what.replace('\n', " "));
    }
    *ERRORS.lock().unwrap().entry(what.to_string()).or_default() += 1;
}

fn fail_text(f: Fail) -> String {
    match f {
        Fail::Error(m) | Fail::Unsupported(m) => m,
    }
}

fn record_latency(d: Duration) {
    let us = d.as_micros() as u64;
    let b = EDGES_US
        .iter()
        .position(|&e| us <= e)
        .unwrap_or(BUCKETS - 1);
    STATS.hist[b].fetch_add(1, Relaxed);
    STATS.max_us.fetch_max(us, Relaxed);
}

/// The upper edge (ms) of the bucket that holds quantile `q` of `counts`;
/// -1 when nothing was counted, the last edge when it is in the overflow.
fn quantile_ms(counts: &[u64; BUCKETS], q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return -1.0;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, c) in counts.iter().enumerate() {
        acc += c;
        if acc >= want {
            return EDGES_US[i.min(EDGES_US.len() - 1)] as f64 / 1000.0;
        }
    }
    EDGES_US[EDGES_US.len() - 1] as f64 / 1000.0
}

/// One report line; `last` holds the histogram at the previous report.
fn report_line(tag: &str, start: Instant, last: &mut [u64; BUCKETS]) -> String {
    let s = &*STATS;
    let mut delta = [0u64; BUCKETS];
    for (i, d) in delta.iter_mut().enumerate() {
        let now = s.hist[i].load(Relaxed);
        *d = now - last[i];
        last[i] = now;
    }
    let max_us = s.max_us.swap(0, Relaxed);
    format!(
        "{tag} t={:.1} open={} connecting={} opened={} connect_failed={} lost={} closed={} \
         ok={} failed={} missed={} inflight={} p50_ms={} p99_ms={} max_ms={:.1}",
        start.elapsed().as_secs_f64(),
        s.open.load(Relaxed),
        s.connecting.load(Relaxed),
        s.opened.load(Relaxed),
        s.connect_failed.load(Relaxed),
        s.lost.load(Relaxed),
        s.closed.load(Relaxed),
        s.ok.load(Relaxed),
        s.failed.load(Relaxed),
        s.missed.load(Relaxed),
        s.inflight.load(Relaxed),
        quantile_ms(&delta, 0.5),
        quantile_ms(&delta, 0.99),
        max_us as f64 / 1000.0,
    )
}

// ---------------------------------------------------------------------------
// One connection

/// A number in [0, 1) from `i` (splitmix64): the connection's phase.
fn phase(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// One GET, its body read to the end.
async fn get(send: &mut SendRequest, uri: &Uri) -> Res<()> {
    let mut stream = super::get_head(send, uri).await?;
    while let Some(mut chunk) = stream
        .recv_data()
        .await
        .ctx(&format!("{uri}: receiving the body"))?
    {
        chunk.advance(chunk.remaining());
    }
    Ok(())
}

struct Plan {
    server: SocketAddr,
    sni: String,
    url: Uri,
    /// Requests stop here.
    stop_at: Instant,
    period: Duration,
    request_timeout: Duration,
}

async fn connection(i: usize, endpoint: quinn::Endpoint, open_at: Instant, plan: Arc<Plan>) {
    let s = &*STATS;
    tokio::time::sleep_until(open_at.into()).await;
    if Instant::now() >= plan.stop_at {
        return;
    }
    s.connecting.fetch_add(1, Relaxed);
    let setup = async {
        let conn = endpoint
            .connect(plan.server, &plan.sni)
            .ctx("connect")?
            .await
            .ctx("handshake")?;
        let (drv, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .ctx("HTTP/3 setup")?;
        Ok::<_, Fail>((conn, drv, send))
    };
    let setup = tokio::time::timeout(plan.request_timeout, setup).await;
    s.connecting.fetch_sub(1, Relaxed);
    let (conn, drv, mut send) = match setup {
        Ok(Ok(x)) => x,
        Ok(Err(f)) => {
            s.connect_failed.fetch_add(1, Relaxed);
            return record_error(&fail_text(f));
        }
        Err(_) => {
            s.connect_failed.fetch_add(1, Relaxed);
            return record_error("connection setup timed out");
        }
    };
    s.opened.fetch_add(1, Relaxed);
    s.open.fetch_add(1, Relaxed);
    let driver = super::spawn_driver(drv, "soak");

    let period = plan.period;
    let mut next = Instant::now() + period.mul_f64(phase(i as u64));
    let mut lost = false;
    while next < plan.stop_at {
        tokio::time::sleep_until(next.into()).await;
        let t0 = Instant::now();
        s.inflight.fetch_add(1, Relaxed);
        let r = tokio::time::timeout(plan.request_timeout, get(&mut send, &plan.url)).await;
        s.inflight.fetch_sub(1, Relaxed);
        match r {
            Ok(Ok(())) => {
                record_latency(t0.elapsed());
                s.ok.fetch_add(1, Relaxed);
            }
            Ok(Err(f)) => {
                s.failed.fetch_add(1, Relaxed);
                record_error(&fail_text(f));
            }
            Err(_) => {
                s.failed.fetch_add(1, Relaxed);
                record_error(&format!(
                    "request timed out after {:?}",
                    plan.request_timeout
                ));
            }
        }
        if let Some(reason) = conn.close_reason() {
            lost = true;
            record_error(&format!("connection lost: {reason}"));
            break;
        }
        // Whole periods already gone are missed; a late request goes now.
        next += period;
        let behind = Instant::now().saturating_duration_since(next);
        let k = (behind.as_secs_f64() / period.as_secs_f64()).floor() as u32;
        if k > 0 {
            s.missed.fetch_add(k as u64, Relaxed);
            next += period * k;
        }
    }
    s.open.fetch_sub(1, Relaxed);
    if lost {
        s.lost.fetch_add(1, Relaxed);
        driver.1.abort();
        return;
    }
    super::close_connection("soak", &conn, send, driver).await;
    s.closed.fetch_add(1, Relaxed);
}

// ---------------------------------------------------------------------------
// The run

async fn run(o: Opts) -> Res<bool> {
    let server = super::server_addr(&o.url).await?;
    let tls = super::build_tls(&Args {
        out: PathBuf::new(),
        ca: o.ca.clone(),
        sni: o.sni.clone(),
        chacha20: false,
        resume: false,
        zerortt: false,
        key_update: false,
        // only the idle timeout derives from it (at least 30 s)
        timeout: Duration::from_secs(30),
        keylog: None,
        urls: Vec::new(),
    })?;
    let n_endpoints = o.conns.div_ceil(o.per_endpoint);
    let endpoints = (0..n_endpoints)
        .map(|_| super::client_endpoint(server, &tls.client_config, Some(o.socket_buffer)))
        .collect::<Res<Vec<_>>>()?;
    println!(
        "soak-start conns={} seconds={} rate={} ramp={} endpoints={} threads={} server={server}",
        o.conns, o.seconds, o.rate, o.ramp, n_endpoints, o.threads
    );

    let start = Instant::now();
    let plan = Arc::new(Plan {
        server,
        sni: o.sni.clone(),
        url: o.url.clone(),
        stop_at: start + Duration::from_secs_f64(o.seconds),
        period: Duration::from_secs_f64(1.0 / o.rate),
        request_timeout: o.request_timeout,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..o.conns {
        let open_at = start + Duration::from_secs_f64(o.ramp * i as f64 / o.conns as f64);
        tasks.spawn(connection(
            i,
            endpoints[i % n_endpoints].clone(),
            open_at,
            plan.clone(),
        ));
    }

    let reporter = tokio::spawn(async move {
        let mut last = [0u64; BUCKETS];
        let mut tick = tokio::time::interval_at((start + o.report).into(), o.report);
        loop {
            tick.tick().await;
            println!("{}", report_line("soak", start, &mut last));
        }
    });
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            STATS.lost.fetch_add(1, Relaxed);
            record_error(&format!("connection task: {e}"));
        }
    }
    let idle = all_idle(&endpoints);
    if tokio::time::timeout(LEAVE_WAIT, idle).await.is_err() {
        eprintln!("soak: endpoints not idle {LEAVE_WAIT:?} after the last close");
    }
    reporter.abort();
    let mut last = [0u64; BUCKETS];
    println!("{}", report_line("soak-done", start, &mut last));
    for (what, n) in ERRORS.lock().unwrap().iter() {
        eprintln!("soak-error (x{n}): {}", what.replace('\n', " "));
    }
    let s = &*STATS;
    Ok(s.failed.load(Relaxed) + s.connect_failed.load(Relaxed) + s.lost.load(Relaxed) == 0)
}

/// Every endpoint idle (its connections' close exchanges done).
async fn all_idle(endpoints: &[quinn::Endpoint]) {
    for e in endpoints {
        e.wait_idle().await;
    }
}

/// `quinn-client soak ...`: returns the exit status.
pub(crate) fn main(args: impl Iterator<Item = String>) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err(f) => {
            eprintln!("error: {}", fail_text(f));
            return 2;
        }
    };
    let mut rt = if o.threads > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(o.threads);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return 1;
        }
    };
    // Bounded: the run, the closes and a margin.
    let limit = Duration::from_secs_f64(o.seconds) + LEAVE_WAIT + Duration::from_secs(60);
    let r = rt.block_on(async move {
        match tokio::time::timeout(limit, run(o)).await {
            Ok(r) => r,
            Err(_) => Err(Fail::Error(format!("soak: not done within {limit:?}"))),
        }
    });
    rt.shutdown_background();
    match r {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(f) => {
            eprintln!("error: {}", fail_text(f));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_spread_over_the_period() {
        let mut quarters = [0; 4];
        for i in 0..10_000 {
            let p = phase(i);
            assert!((0.0..1.0).contains(&p));
            quarters[(p * 4.0) as usize] += 1;
        }
        assert!(
            quarters.iter().all(|&q| (2300..2700).contains(&q)),
            "{quarters:?}"
        );
    }

    #[test]
    fn quantiles_are_bucket_edges() {
        let mut c = [0u64; BUCKETS];
        assert_eq!(quantile_ms(&c, 0.5), -1.0);
        c[2] = 99; // <= 1 ms
        c[10] = 1; // <= 30 ms
        assert_eq!(quantile_ms(&c, 0.5), 1.0);
        assert_eq!(quantile_ms(&c, 0.99), 1.0);
        assert_eq!(quantile_ms(&c, 1.0), 30.0);
        c[BUCKETS - 1] = 1000;
        assert_eq!(quantile_ms(&c, 0.99), 10_000.0);
    }
}
