//! CPU time from Linux's `/proc`, shared by the benchmarks (a module of each, by `#[path]`:
//! files directly in `benches/` would be benchmarks of their own).

use std::time::Duration;

/// utime + stime from a `/proc/…/stat` line (of a process or a thread).
pub fn stat_cpu(stat: &str) -> Duration {
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// CPU time of the process `pid` ("self" for this one).
pub fn process_cpu(pid: &str) -> Duration {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}
