//! The processes of a running stack, read from `/proc`: who descends from
//! whom (the launchers' workers are not our children), and what each has
//! used (CPU time, resident memory) for the benchmark.

use std::time::{Duration, Instant};

/// One process as `/proc/PID/stat` shows it.
#[derive(Clone, Debug)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub comm: String,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// 'Z' for a zombie.
    pub state: char,
}

/// `/proc/PID/stat`, or `None` when the process is gone.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may itself hold spaces or parentheses.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| rest.get(n - 3).and_then(|s| s.parse::<u64>().ok());
    Some(ProcStat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: field(4)? as i32,
        pgid: field(5)? as i32,
        comm,
        cpu_ticks: field(14)? + field(15)?,
    })
}

/// Every process on the machine (those that vanish while read are left out).
pub fn all() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// The processes descending from `roots` (not the roots themselves).
pub fn descendants(roots: &[i32]) -> Vec<ProcStat> {
    let procs = all();
    let mut found: Vec<ProcStat> = Vec::new();
    let mut frontier: Vec<i32> = roots.to_vec();
    while let Some(p) = frontier.pop() {
        for c in procs.iter().filter(|c| c.ppid == p) {
            if !found.iter().any(|f| f.pid == c.pid) {
                frontier.push(c.pid);
                found.push(c.clone());
            }
        }
    }
    found.sort_by_key(|p| p.pid);
    found
}

/// Resident memory of `pid` in KiB: (RSS, PSS). PSS shares each page among
/// the processes mapping it, so a sum over processes counts shared library
/// pages once.
pub fn memory_kib(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let get = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((get("Rss:")?, get("Pss:")?))
}

/// CPU time of `pid`'s live threads in nanoseconds (the scheduler's own
/// count, `/proc/PID/task/*/schedstat`), or its clock ticks scaled when
/// that is missing; `None` when the process is gone.
pub fn cpu_ns(pid: i32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    let mut any = false;
    for t in tasks.filter_map(|e| e.ok()) {
        let path = t.path().join("schedstat");
        if let Some(ns) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            sum += ns;
            any = true;
        }
    }
    if any {
        Some(sum)
    } else {
        stat(pid).map(|s| s.cpu_ticks * 1_000_000_000 / ticks_per_second())
    }
}

/// The `FAAS_FUNC_ID` a nightcore launcher gave a worker process.
pub fn func_id(pid: i32) -> Option<u32> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"FAAS_FUNC_ID="))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// Clock ticks per second, for [`ProcStat::cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// SIGKILL to `pid`.
pub fn kill(pid: i32) {
    // SAFETY: a signal to a process this stack started (or its descendant).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// SIGKILL to the process group `pgid`.
pub fn kill_group(pgid: i32) {
    // SAFETY: a signal to a process group this stack created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Wait until none of `pids` is alive or a zombie (their parent reaped
/// them), for at most `limit`; the ones still there.
pub fn wait_gone(pids: &[i32], limit: Duration) -> Vec<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|p| stat(*p).is_some())
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
