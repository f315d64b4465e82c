//! What the load generator reads about the machine and the processes it measures: the open-file
//! limit (and raising the soft limit to the hard one), the local port range, resident memory and
//! CPU time of a process from `/proc/<pid>`, our own CPU time from `getrusage`, the kernel's TCP
//! socket memory from `/proc/net/sockstat` and its slab total from `/proc/meminfo`.
//!
//! Every reader returns `Option`/`Result` instead of panicking: a process may exit between two
//! samples, and a container may hide some files.

use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use std::time::Duration;

/// Descriptors kept back from the connection budget of one process: stdio, the poll instance,
/// wakers, the store link of the read-back, files the report writer opens.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft open-file limit to the hard limit (the only raise an unprivileged process may
/// make) and returns the resulting soft limit.
pub fn raise_nofile_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Connections one process can hold: its open-file limit less [`RESERVED_DESCRIPTORS`].
pub fn connections_per_process(nofile: u64) -> u64 {
    nofile.saturating_sub(RESERVED_DESCRIPTORS).max(1)
}

/// Size of the ephemeral port range (`net.ipv4.ip_local_port_range`): how many connections one
/// source address can open to one destination.
pub fn local_port_range_size() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text
                .split_whitespace()
                .filter_map(|w| w.parse::<u64>().ok());
            let (low, high) = (it.next()?, it.next()?);
            Some(high.saturating_sub(low) + 1)
        })
        .unwrap_or(28_232)
}

/// Resident set size of `pid` in bytes (`VmRSS`), `None` if the process is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// Our own resident set size in bytes.
pub fn own_rss_bytes() -> Option<u64> {
    rss_bytes(std::process::id())
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User plus system CPU time consumed so far by `pid` (all its threads).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (state); utime and stime are
    // fields 14 and 15, so indexes 11 and 12 of the remainder.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Some(Duration::from_micros(
        (utime + stime) * 1_000_000 / ticks_per_second,
    ))
}

/// CPU time this process has consumed (user plus system, all threads).
pub fn own_cpu_time() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let user = usage.user_time();
            let system = usage.system_time();
            let micros = |tv: nix::sys::time::TimeVal| {
                u64::try_from(tv.tv_sec()).unwrap_or(0) * 1_000_000
                    + u64::try_from(tv.tv_usec()).unwrap_or(0)
            };
            Duration::from_micros(micros(user) + micros(system))
        }
        Err(_) => Duration::ZERO,
    }
}

/// Kernel memory charged to TCP sockets, in bytes (`TCP: ... mem <pages>` × 4096).
pub fn kernel_tcp_bytes() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mem" {
            return words.next()?.parse::<u64>().ok().map(|p| p * 4096);
        }
    }
    None
}

/// The kernel's slab allocations (`Slab:` in `/proc/meminfo`), in bytes: socket structures,
/// dentries of socket inodes, epoll items. Machine-wide, so only a delta over a quiet interval
/// means anything.
pub fn kernel_slab_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("Slab:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The pid of a child of `parent` whose command line contains `name` (the gateway's store).
pub fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent)
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains(name))
        })
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures_are_plausible() {
        let rss = own_rss_bytes().expect("own status");
        assert!(rss > 100_000, "rss {rss}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(own_cpu_time() > Duration::ZERO);
        assert!(cpu_time(std::process::id()).is_some());
        assert!(local_port_range_size() > 1000);
        assert!(connections_per_process(20_000) == 20_000 - RESERVED_DESCRIPTORS);
        assert!(rss_bytes(u32::MAX).is_none());
    }
}
