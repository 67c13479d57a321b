//! CPU time of processes, from `/proc/PID/stat` (user + system time, in clock ticks), and a
//! window that samples it at the start and the end of a closed loop's measured part, so a
//! benchmark can report the CPU its servers spent per call — a figure that does not depend on
//! what else shares the machine the way throughput does.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// User + system CPU time of `pid` so far, in clock ticks (`None` when it cannot be read:
/// the process is gone, or this is not Linux).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime + stime` from a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields are counted from the
/// last `)`: after it come state (field 3) … utime (14) and stime (15).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, asked once per process; 100, Linux's value,
/// when that fails).
pub fn ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Summed CPU ticks of `pids` (a process that cannot be read counts 0).
fn ticks_of(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| cpu_ticks(p)).sum()
}

/// What the measured window of a closed loop cost in CPU.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CpuUse {
    /// CPU milliseconds the server processes (a cluster's nodes summed) spent per successful
    /// call in the measured window.
    pub server_ms_per_call: f64,
    /// The same as cores kept busy (CPU seconds per second of the window).
    pub server_cores: f64,
    /// CPU milliseconds the Notion sandbox (shared by every side) spent per successful call.
    pub sandbox_ms_per_call: f64,
}

/// Samples the CPU ticks of the servers and the sandbox at `start + warmup` and at
/// `start + warmup + duration`, in the background, while the load runs.
pub struct CpuWindow {
    task: JoinHandle<Option<(u64, u64, u64, u64)>>,
    duration: Duration,
    ticks_per_sec: u64,
}

impl CpuWindow {
    /// Starts sampling; call it right before the closed loop starts (same clock, same
    /// warm-up and duration).
    pub fn start(servers: Vec<u32>, sandbox: u32, warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(start + warmup).await;
            let (s0, b0) = (ticks_of(&servers), cpu_ticks(sandbox)?);
            tokio::time::sleep_until(start + warmup + duration).await;
            let (s1, b1) = (ticks_of(&servers), cpu_ticks(sandbox)?);
            Some((s0, s1, b0, b1))
        });
        CpuWindow {
            task,
            duration,
            ticks_per_sec: ticks_per_sec(),
        }
    }

    /// The CPU per call once the loop is done (`None` when the processes could not be
    /// read, or no call succeeded).
    pub async fn finish(self, ok_calls: u64) -> Option<CpuUse> {
        let (s0, s1, b0, b1) = self.task.await.ok()??;
        cpu_use(
            s1.saturating_sub(s0),
            b1.saturating_sub(b0),
            ok_calls,
            self.duration,
            self.ticks_per_sec,
        )
    }
}

/// CPU per call from ticks spent in a window.
pub fn cpu_use(
    server_ticks: u64,
    sandbox_ticks: u64,
    ok_calls: u64,
    window: Duration,
    ticks_per_sec: u64,
) -> Option<CpuUse> {
    if ok_calls == 0 || ticks_per_sec == 0 || window.is_zero() {
        return None;
    }
    let ms = |ticks: u64| ticks as f64 * 1000.0 / ticks_per_sec as f64;
    Some(CpuUse {
        server_ms_per_call: ms(server_ticks) / ok_calls as f64,
        server_cores: ms(server_ticks) / 1000.0 / window.as_secs_f64(),
        sandbox_ms_per_call: ms(sandbox_ticks) / ok_calls as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_the_command_name() {
        // Fields 14 and 15 are 250 and 50; the name holds a space and a parenthesis.
        let stat = "4242 (node (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 11 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("4242 (short) S 1"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_ticks(std::process::id()).is_some_and(|t| t > 0));
    }

    #[test]
    fn cpu_per_call_from_ticks() {
        // 150 ticks at 100/s over 2 s is 1.5 s of CPU: 0.75 cores; 300 calls: 5 ms each.
        let u = cpu_use(150, 30, 300, Duration::from_secs(2), 100).expect("calls were made");
        assert!((u.server_ms_per_call - 5.0).abs() < 1e-9);
        assert!((u.server_cores - 0.75).abs() < 1e-9);
        assert!((u.sandbox_ms_per_call - 1.0).abs() < 1e-9);
        assert_eq!(cpu_use(150, 30, 0, Duration::from_secs(2), 100), None);
    }
}
