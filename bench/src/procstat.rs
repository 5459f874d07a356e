//! CPU and memory of another process, from /proc (as the peers' scripts
//! measure their servers).

/// Clock ticks per second of /proc's utime and stime (USER_HZ; 100 on
/// every Linux this runs on).
const TICKS_PER_S: f64 = 100.0;

/// CPU seconds (user + system) used so far by process `pid`, all threads.
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields start after its ')'.
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS_PER_S
}

/// Resident memory of process `pid`, kB.
pub fn rss_kb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// UDP datagrams sent on this machine so far (every process in this
/// network namespace: on loopback, each one sent is one received).
/// During an idle window the links of the process measured are nearly all
/// of them, so the delta per link is its packet rate.
pub fn udp_datagrams_sent() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// CPU used by `pid` over a window: start it, then read it.
pub struct CpuWindow {
    pid: u32,
    cpu0: f64,
    t0: std::time::Instant,
}

impl CpuWindow {
    pub fn start(pid: u32) -> Self {
        CpuWindow {
            pid,
            cpu0: cpu_s(pid),
            t0: std::time::Instant::now(),
        }
    }

    /// (CPU seconds used, wall seconds) since the start.
    pub fn read(&self) -> (f64, f64) {
        (cpu_s(self.pid) - self.cpu0, self.t0.elapsed().as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn udp_datagrams_are_counted() {
        let before = super::udp_datagrams_sent();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..10 {
            a.send_to(b"x", a.local_addr().unwrap()).unwrap();
        }
        assert!(super::udp_datagrams_sent() >= before + 10);
    }

    #[test]
    fn a_busy_process_shows_cpu_time_and_memory() {
        let me = std::process::id();
        let w = super::CpuWindow::start(me);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (cpu, wall) = w.read();
        assert!(cpu > 0.1 && wall >= 0.3, "cpu {cpu} s over {wall} s");
        assert!(super::rss_kb(me) > 100.0);
    }
}
