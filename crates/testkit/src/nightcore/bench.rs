//! Closed-loop load on real nightcore stacks, unfused and fused side by
//! side: both stacks run at once, and each round serves every workflow at
//! every concurrency on one and then the other (the order alternating by
//! round), so that the machine's noise falls on both alike. Per run:
//! latency percentiles, throughput, CPU time per request of every process
//! of the stack (gateway, engine, launchers, workers), and the resident
//! memory of the function processes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{procs, read_config, Answer, Launch, Options, Stack};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The unfused deployment: a func_config.json whose entries name their
    /// `library`.
    #[arg(long, value_name = "CONFIG")]
    pub unfused: PathBuf,
    /// The fused deployment (`faasfuse build`'s OUT_DIR/func_config.json).
    #[arg(long, value_name = "CONFIG")]
    pub fused: PathBuf,
    /// A workflow to serve: NAME=ROOT:INPUTS (one input per line).
    #[arg(long = "workflow", value_name = "NAME=ROOT:INPUTS", required = true)]
    pub workflows: Vec<String>,
    /// Closed-loop clients, comma-separated.
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Requests per run (each run shares them among its clients).
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    /// Rounds (each serves every workflow at every concurrency on both).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where the stacks keep their files.
    #[arg(long, value_name = "DIR")]
    pub work_dir: PathBuf,
    /// One CSV row per run.
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
}

struct Workflow {
    name: String,
    root: String,
    inputs: Vec<Vec<u8>>,
}

/// One run: `requests` requests by `clients` clients on one stack.
pub struct Run {
    pub latencies_ns: Vec<u64>,
    pub wall: Duration,
    pub lost: usize,
    pub failed: usize,
    /// CPU time every process of the stack used during the run.
    pub cpu_seconds: f64,
    /// The worker processes that ran during the run: the function
    /// processes that served the workflow.
    pub busy_workers: Vec<i32>,
}

/// CPU nanoseconds used so far by each process of the stack (platform
/// and workers), by PID.
fn cpu_by_process(stack: &Stack) -> Vec<(i32, u64)> {
    let own = stack.platform_pids();
    own.iter()
        .copied()
        .chain(procs::descendants(&own).iter().map(|p| p.pid))
        .filter_map(|p| Some((p, procs::cpu_ns(p)?)))
        .collect()
}

/// Serve `requests` requests of `root` (inputs in turn) with `clients`
/// closed-loop clients.
pub fn run(stack: &Stack, root: &str, inputs: &[Vec<u8>], clients: usize, requests: usize) -> Run {
    let cpu0 = cpu_by_process(stack);
    let start = Instant::now();
    let per: Vec<usize> = (0..clients)
        .map(|c| requests / clients + usize::from(c < requests % clients))
        .collect();
    let results: Vec<(Vec<u64>, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = per
            .iter()
            .enumerate()
            .map(|(c, &n)| {
                let mut client = stack.client();
                s.spawn(move || {
                    let (mut lat, mut lost, mut failed) = (Vec::with_capacity(n), 0, 0);
                    for k in 0..n {
                        let input = &inputs[(c * 7919 + k) % inputs.len()];
                        let t = Instant::now();
                        match client.call(root, input) {
                            Ok(Answer::Ok(_)) => lat.push(t.elapsed().as_nanos() as u64),
                            Ok(Answer::Status(..)) => {
                                lat.push(t.elapsed().as_nanos() as u64);
                                failed += 1
                            }
                            Ok(Answer::NoAnswer) | Err(_) => lost += 1,
                        }
                    }
                    (lat, lost, failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let wall = start.elapsed();
    let cpu1 = cpu_by_process(stack);
    let before = |pid: i32| cpu0.iter().find(|(p, _)| *p == pid).map_or(0, |(_, c)| *c);
    let cpu_ns: u64 = cpu1.iter().map(|(p, c)| c.saturating_sub(before(*p))).sum();
    let workers = stack.worker_pids();
    let busy_workers = cpu1
        .iter()
        .filter(|(p, c)| workers.contains(p) && *c > before(*p))
        .map(|(p, _)| *p)
        .collect();
    let mut r = Run {
        latencies_ns: Vec::new(),
        wall,
        lost: 0,
        failed: 0,
        cpu_seconds: cpu_ns as f64 / 1e9,
        busy_workers,
    };
    for (l, lost, failed) in results {
        r.latencies_ns.extend(l);
        r.lost += lost;
        r.failed += failed;
    }
    r.latencies_ns.sort_unstable();
    r
}

/// The `q` quantile of sorted values.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// (processes, RSS KiB, PSS KiB) of the worker processes `pids`.
pub fn memory(pids: &[i32]) -> (usize, u64, u64) {
    let (rss, pss) = pids
        .iter()
        .filter_map(|p| procs::memory_kib(*p))
        .fold((0, 0), |(a, b), (r, p)| (a + r, b + p));
    (pids.len(), rss, pss)
}

fn parse_workflow(spec: &str) -> Result<Workflow> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--workflow {spec}: expected NAME=ROOT:INPUTS"))?;
    let (root, file) = rest
        .split_once(':')
        .with_context(|| format!("--workflow {spec}: expected NAME=ROOT:INPUTS"))?;
    let text = std::fs::read(file).with_context(|| format!("reading {file}"))?;
    let inputs: Vec<Vec<u8>> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if inputs.is_empty() {
        bail!("{file}: no inputs");
    }
    Ok(Workflow {
        name: name.to_string(),
        root: root.to_string(),
        inputs,
    })
}

pub fn bench_main(a: BenchArgs) -> Result<()> {
    let workflows: Vec<Workflow> = a
        .workflows
        .iter()
        .map(|w| parse_workflow(w))
        .collect::<Result<_>>()?;
    if a.concurrency.contains(&0) || a.requests == 0 {
        bail!("--concurrency and --requests must be positive");
    }
    std::fs::create_dir_all(&a.work_dir)?;
    let opts = Options::default();
    let deployments = [("unfused", &a.unfused), ("fused", &a.fused)];
    let stacks: Vec<(&str, Stack)> = deployments
        .iter()
        .map(|(tag, cfg)| {
            let functions = read_config(cfg)?;
            Ok((
                *tag,
                Stack::start(&a.work_dir, tag, &functions, &Launch::Libraries, &opts)?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut csv = String::from(
        "round,workflow,deployment,concurrency,requests,p50_us,p99_us,rps,cpu_us_per_request,processes,rss_kib,pss_kib,failed,lost\n",
    );
    // Warm both up: first calls fault pages in and start workers.
    for (_, s) in &stacks {
        for w in &workflows {
            run(
                s,
                &w.root,
                &w.inputs,
                *a.concurrency.iter().max().unwrap(),
                w.inputs.len().max(64),
            );
        }
    }
    for round in 0..a.rounds {
        for w in &workflows {
            for &c in &a.concurrency {
                let order: Vec<usize> = if round % 2 == 0 {
                    vec![0, 1]
                } else {
                    vec![1, 0]
                };
                for i in order {
                    let (tag, stack) = &stacks[i];
                    let r = run(stack, &w.root, &w.inputs, c, a.requests);
                    let (n, rss, pss) = memory(&r.busy_workers);
                    let done = r.latencies_ns.len().max(1);
                    let line = format!(
                        "{round},{},{tag},{c},{},{:.1},{:.1},{:.1},{:.1},{n},{rss},{pss},{},{}\n",
                        w.name,
                        a.requests,
                        quantile(&r.latencies_ns, 0.5) as f64 / 1e3,
                        quantile(&r.latencies_ns, 0.99) as f64 / 1e3,
                        done as f64 / r.wall.as_secs_f64(),
                        r.cpu_seconds * 1e6 / done as f64,
                        r.failed,
                        r.lost
                    );
                    eprint!("{line}");
                    csv += &line;
                }
            }
        }
    }
    for (_, s) in stacks {
        s.stop()?;
    }
    std::fs::write(&a.csv, csv).with_context(|| format!("writing {}", a.csv.display()))?;
    Ok(())
}
