//! What PID 1 reads from /proc for its reports.

/// Milliseconds since the kernel started, from `/proc/uptime`'s first field.
pub fn parse_uptime_ms(text: &str) -> Option<u64> {
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

/// `(used, total)` in KiB from `/proc/meminfo`: MemTotal − MemAvailable.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    Some((total.saturating_sub(available), total))
}

pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| parse_uptime_ms(&text))
        .unwrap_or(0)
}

pub fn memory_kib() -> (u64, u64) {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo(&text))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime_ms("1.52 0.80\n"), Some(1520));
        assert_eq!(parse_uptime_ms("12345.004 1.00"), Some(12_345_004));
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("x y"), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:         492312 kB\nMemFree:          440000 kB\nMemAvailable:     460000 kB\nMemAvailableX: 1 kB\n";
        assert_eq!(parse_meminfo(text), Some((32312, 492312)));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
    }
}
