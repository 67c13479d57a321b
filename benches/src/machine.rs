//! What a benchmark ran on: cores, memory, kernel and CPU model (from `/proc` on Linux,
//! "unknown" elsewhere), and the git commit of the source tree.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// The machine a benchmark ran on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Machine {
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// `MemTotal` from `/proc/meminfo`, in MiB (0 when unknown).
    pub memory_mib: u64,
    pub kernel: String,
    pub cpu_model: String,
}

impl Machine {
    /// Reads the running machine's description; never fails (missing facts read "unknown").
    pub fn current() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or_else(|_| cpu_count(&cpuinfo)),
            memory_mib: mem_total_kib(&read("/proc/meminfo")) / 1024,
            kernel: if kernel.is_empty() {
                "unknown".to_owned()
            } else {
                kernel
            },
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
        }
    }

    /// One line: `2 cores, 23.5 GiB, Linux 6.1, Intel(R) Xeon(R) ...`.
    pub fn summary(&self) -> String {
        format!(
            "{} cores, {:.1} GiB memory, kernel {}, CPU {}",
            self.cores,
            self.memory_mib as f64 / 1024.0,
            self.kernel,
            self.cpu_model
        )
    }
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (key, value) = line.split_once(':')?;
    (key.trim() == name).then(|| value.trim())
}

/// The first `model name` (x86) or `Model`/`Hardware` (ARM) in `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Hardware"].iter().find_map(|name| {
        cpuinfo
            .lines()
            .find_map(|l| field(l, name))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    })
}

/// How many `processor` entries `/proc/cpuinfo` lists.
pub fn cpu_count(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter(|l| field(l, "processor").is_some())
        .count()
}

/// `MemTotal` in KiB from `/proc/meminfo` (0 when absent or unreadable).
pub fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| field(l, "MemTotal"))
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg` (`"4.34 5.06 4.36"`), or
/// "unknown": other work on the machine skews a benchmark, so reports say how busy it was.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        fields.join(" ")
    } else {
        "unknown".to_owned()
    }
}

/// When `path` was last modified, as `YYYY-MM-DD HH:MM:SS UTC` ("unknown" if unreadable):
/// says which build of a binary a run used.
pub fn modified_utc(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| utc(d.as_secs()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian).
pub fn utc(epoch_secs: u64) -> String {
    let days = (epoch_secs / 86_400) as i64;
    let secs = epoch_secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `git rev-parse --short=12 HEAD` in `dir`, with `-dirty` when the tree has uncommitted
/// changes; "unknown" when git or the repository is not there.
pub fn git_commit(dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) if !head.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}-dirty") } else { head }
        }
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
    const ARM: &str =
        "processor\t: 0\nBogoMIPS\t: 50.00\n\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n";

    #[test]
    fn parses_cpuinfo() {
        assert_eq!(
            cpu_model(X86).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(cpu_count(X86), 2);
        assert_eq!(
            cpu_model(ARM).as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(cpu_model("garbage\n:::\n"), None);
    }

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_413_447), "2026-12-04 19:44:07 UTC");
        assert_eq!(modified_utc(Path::new("/nonexistent")), "unknown");
    }

    #[test]
    fn parses_meminfo() {
        assert_eq!(
            mem_total_kib("MemTotal:       24562036 kB\nMemFree: 1 kB\n"),
            24_562_036
        );
        assert_eq!(mem_total_kib("MemTotal: lots\n"), 0);
        assert_eq!(mem_total_kib(""), 0);
    }

    #[test]
    fn describes_this_machine() {
        let m = Machine::current();
        assert!(m.cores >= 1);
        assert!(m.summary().contains("cores"));
        if Path::new("/proc/loadavg").exists() {
            assert_eq!(load_average().split(' ').count(), 3);
        }
    }

    #[test]
    fn git_commit_outside_a_repository_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(git_commit(dir.path()), "unknown");
    }
}
