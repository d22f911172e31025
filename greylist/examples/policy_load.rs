//! A load generator for Postfix policy servers, used by bench/greylist.sh: sends one fixed
//! stream of requests over several connections, each waiting for its reply as Postfix's smtpd
//! does, and prints the decisions per second and the latency of one decision.
//!
//! Usage: `policy_load ADDR REQUESTS CONNECTIONS [SEED]`. The stream depends only on REQUESTS
//! and SEED, so two servers given the same arguments answer the same requests. Every triplet
//! comes twice (a first attempt and an early retry, both deferred with a 300 s delay), and
//! every reply is checked to be a well-formed action.
//!
//! Each connection has one request in flight, so the rate is at most CONNECTIONS divided by
//! the latency: a busy Postfix runs one policy connection per smtpd process, often a hundred
//! or more, and the bench gives enough connections that the server, not this, is the limit.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(requests), Some(connections)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
        args.get(3).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: policy_load ADDR REQUESTS CONNECTIONS [SEED]");
        return ExitCode::from(64);
    };
    let seed: u64 = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(1);

    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|worker| {
            let addr = addr.clone();
            std::thread::spawn(move || run_worker(&addr, worker, connections, requests, seed))
        })
        .collect();
    let mut answered = 0;
    let mut deferred = 0;
    let mut latencies = Vec::with_capacity(requests);
    for worker in workers {
        match worker.join() {
            Ok(Ok(tally)) => {
                answered += tally.answered;
                deferred += tally.deferred;
                latencies.extend(tally.latencies);
            }
            Ok(Err(error)) => {
                eprintln!("policy_load: {error}");
                return ExitCode::FAILURE;
            }
            Err(_) => return ExitCode::FAILURE,
        }
    }
    let seconds = start.elapsed().as_secs_f64();

    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 50), percentile(&latencies, 99));
    println!(
        "requests={answered} deferred={deferred} connections={connections} \
         seconds={seconds:.3} per_second={:.0} p50_ms={:.2} p99_ms={:.2}",
        answered as f64 / seconds,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    );
    ExitCode::SUCCESS
}

/// What one connection saw.
struct Tally {
    answered: usize,
    deferred: usize,
    /// From sending each request to reading its reply's end.
    latencies: Vec<Duration>,
}

/// The `p`th percentile of sorted latencies (nearest rank); zero when there are none.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Sends every `connections`-th request of the stream, starting at `worker`.
fn run_worker(
    addr: &str,
    worker: usize,
    connections: usize,
    requests: usize,
    seed: u64,
) -> Result<Tally, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut tally = Tally {
        answered: 0,
        deferred: 0,
        latencies: Vec::with_capacity(requests / connections + 1),
    };
    let mut line = String::new();
    for i in (worker..requests).step_by(connections) {
        let sent = Instant::now();
        writer
            .write_all(request(i, requests, seed).as_bytes())
            .map_err(|e| e.to_string())?;
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.starts_with("action=") {
            return Err(format!("request {i}: not an action: {line:?}"));
        }
        if line.contains("DEFER") {
            tally.deferred += 1;
        }
        let mut blank = String::new();
        reader.read_line(&mut blank).map_err(|e| e.to_string())?;
        if blank != "\n" {
            return Err(format!(
                "request {i}: reply not ended by a blank line: {blank:?}"
            ));
        }
        tally.latencies.push(sent.elapsed());
        tally.answered += 1;
    }
    Ok(tally)
}

/// Request `i` of the stream: triplet `i / 2` scrambled over the stream, so each triplet is
/// asked twice, far apart.
fn request(i: usize, requests: usize, seed: u64) -> String {
    let triplets = (requests / 2).max(1) as u64;
    let n = (i as u64 % triplets)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(seed)
        % (1 << 40);
    // Documentation networks only: the addresses are strings in the requests, never dialled.
    let network = ["192.0.2", "198.51.100", "203.0.113"][(n % 3) as usize];
    let client = format!("{network}.{}", (n >> 2) % 250 + 1);
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
         client_address={client}\nclient_name=unknown\nreverse_client_name=unknown\n\
         helo_name=client{n}.example\nsender=sender{n}@sender{}.example\n\
         recipient=user{}@rcpt.example\ninstance={i:x}.{seed}\n\n",
        n % 997,
        n % 101
    )
}
