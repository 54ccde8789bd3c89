//! Human units for the printed table (`3.0 s`, `250 ms`, `12 µs`, `1,234`, `72 KiB`,
//! `1,234 /s`). The JSON report keeps exact numbers; the unit of a metric is in its name
//! ([`Unit::of`]), so both read the same key the same way.

/// What a metric's number means, from the end of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `*_per_s`: events per second.
    Rate,
    /// `*_s`: seconds (wall-clock or CPU).
    Seconds,
    /// `*_us_per_*`: microseconds per event (CPU per delivery, per connection...).
    MicrosPer,
    /// `*_mib`: mebibytes.
    Mebibytes,
    /// Any name with `bytes` in it: bytes.
    Bytes,
    /// Everything else: a count of things. Serialized as an integer in JSON.
    Count,
}

impl Unit {
    /// The unit of metric `name`.
    pub fn of(name: &str) -> Unit {
        if name.ends_with("_per_s") {
            Unit::Rate
        } else if name.ends_with("_s") {
            Unit::Seconds
        } else if name.contains("_us_per_") {
            Unit::MicrosPer
        } else if name.ends_with("_mib") {
            Unit::Mebibytes
        } else if name.contains("bytes") {
            Unit::Bytes
        } else {
            Unit::Count
        }
    }

    /// `value` of metric `name` for people. CPU figures are read from `/proc` in clock ticks of
    /// 10 ms, so a zero there means "less than one tick", and says so.
    pub fn format(self, name: &str, value: f64) -> String {
        let cpu = name.contains("cpu");
        match self {
            Unit::Rate => rate(value),
            Unit::Seconds if cpu && value == 0.0 => "< 10 ms".to_string(),
            Unit::Seconds => duration(value),
            Unit::MicrosPer if cpu && value == 0.0 => "0 (< 10 ms in all)".to_string(),
            Unit::MicrosPer => duration(value / 1e6),
            Unit::Mebibytes => bytes(value * 1024.0 * 1024.0),
            // Sizes (`doc_bytes`, `full_state_bytes`) exactly, so they can be compared;
            // averages (`server_bytes_per_connection`) in KiB or MiB.
            Unit::Bytes if name.ends_with("bytes") && value.fract() == 0.0 => {
                format!("{} B", count(value))
            }
            Unit::Bytes => bytes(value),
            Unit::Count => count(value),
        }
    }
}

/// `v` with `digits` significant digits, trailing zeros (and a trailing point) removed.
fn significant(v: f64, digits: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Seconds for people: `12 µs`, `250 ms`, `1.23 ms`, `3.0 s`, `12.5 s`, `2 min 5 s`.
/// Three significant digits below a minute (seconds keep one decimal).
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        return format!("{secs} s");
    }
    if secs < 0.0 {
        return format!("-{}", duration(-secs));
    }
    if secs == 0.0 {
        return "0 s".to_string();
    }
    // Round first, so 999.96 µs is "1 ms", not "1000 µs".
    let rounded = |v: f64| significant(v, 3).parse::<f64>().unwrap_or(v);
    if rounded(secs * 1e6) < 1000.0 {
        format!("{} µs", significant(secs * 1e6, 3))
    } else if rounded(secs * 1e3) < 1000.0 {
        format!("{} ms", significant(secs * 1e3, 3))
    } else if rounded(secs) < 60.0 {
        let s = significant(secs, 3);
        if s.contains('.') {
            format!("{s} s")
        } else if secs < 10.0 {
            format!("{secs:.1} s")
        } else {
            format!("{s} s")
        }
    } else {
        let total = secs.round() as u64;
        let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
        match (h, s) {
            (0, 0) => format!("{m} min"),
            (0, _) => format!("{m} min {s} s"),
            _ => format!("{h} h {m} min"),
        }
    }
}

/// An integer with thousands separators: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count: an integer with thousands separators (`12`, `1,234`); a fractional one (an
/// average) with two decimals.
pub fn count(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    if a.fract() == 0.0 && a < 1e15 {
        format!("{sign}{}", thousands(a as u64))
    } else {
        let whole = a.trunc();
        let hundredths = ((a - whole) * 100.0).round() as u64;
        // 0.999 rounds up to the next whole number.
        let (whole, hundredths) = if hundredths == 100 {
            (whole + 1.0, 0)
        } else {
            (whole, hundredths)
        };
        format!("{sign}{}.{hundredths:02}", thousands(whole as u64))
    }
}

/// Events per second: `1,234 /s` at 100 and above, three significant digits below.
pub fn rate(per_s: f64) -> String {
    if per_s.is_finite() && per_s.abs() >= 100.0 {
        format!("{} /s", count(per_s.round()))
    } else {
        format!("{} /s", significant(per_s, 3))
    }
}

/// Bytes: `512 B`, `72 KiB`, `4.77 MiB`, `1.2 GiB` (three significant digits, powers of 1024).
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if !b.is_finite() || b.abs() < 1024.0 {
        return format!("{} B", significant(b.round(), 4));
    }
    let mut v = b / 1024.0;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", significant(v, 3), UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_unit_and_three_significant_digits() {
        assert_eq!(duration(0.0), "0 s");
        assert_eq!(duration(3.0), "3.0 s");
        assert_eq!(duration(0.25), "250 ms");
        assert_eq!(duration(12e-6), "12 µs");
        assert_eq!(duration(0.5e-6), "0.5 µs");
        assert_eq!(duration(1.234e-3), "1.23 ms");
        assert_eq!(duration(0.0123), "12.3 ms");
        assert_eq!(duration(3.256), "3.26 s");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(30.0), "30 s");
        assert_eq!(duration(59.99), "1 min");
        assert_eq!(duration(125.0), "2 min 5 s");
        assert_eq!(duration(3600.0), "1 h 0 min");
        // Rounding never shows 1000 of a smaller unit.
        assert_eq!(duration(0.99996e-3), "1 ms");
        assert_eq!(duration(0.9999), "1.0 s");
        assert_eq!(duration(-0.002), "-2 ms");
    }

    #[test]
    fn counts_are_integers_with_thousands_separators() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(12.0), "12");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1000.0), "1,000");
        assert_eq!(count(1_234_567.0), "1,234,567");
        assert_eq!(count(-4000.0), "-4,000");
        assert_eq!(count(2.5), "2.50");
        assert_eq!(count(1234.999), "1,235.00");
        assert_eq!(thousands(100_000), "100,000");
    }

    #[test]
    fn rates_and_bytes() {
        assert_eq!(rate(824.195), "824 /s");
        assert_eq!(rate(13_791.4), "13,791 /s");
        assert_eq!(rate(12.345), "12.3 /s");
        assert_eq!(rate(0.5), "0.5 /s");
        assert_eq!(rate(0.0), "0 /s");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(73_728.0), "72 KiB");
        assert_eq!(bytes(5_000_000.0), "4.77 MiB");
        assert_eq!(bytes(21.637 * 1048576.0), "21.6 MiB");
    }

    #[test]
    fn units_come_from_metric_names() {
        assert_eq!(Unit::of("connect_rate_per_s"), Unit::Rate);
        assert_eq!(Unit::of("generator_cpu_s"), Unit::Seconds);
        assert_eq!(Unit::of("elapsed_s"), Unit::Seconds);
        assert_eq!(Unit::of("server_cpu_us_per_delivery"), Unit::MicrosPer);
        assert_eq!(Unit::of("server_rss_mib"), Unit::Mebibytes);
        assert_eq!(Unit::of("baseline_server_rss_peak_mib"), Unit::Mebibytes);
        assert_eq!(Unit::of("server_bytes_per_connection"), Unit::Bytes);
        assert_eq!(Unit::of("full_state_bytes"), Unit::Bytes);
        assert_eq!(Unit::of("sessions_ok"), Unit::Count);
        assert_eq!(Unit::of("deep_value_attack_messages"), Unit::Count);
        let f = |name: &str, v: f64| Unit::of(name).format(name, v);
        assert_eq!(f("generator_cpu_s", 0.02), "20 ms");
        assert_eq!(f("generator_cpu_s", 0.0), "< 10 ms");
        assert_eq!(f("server_cpu_us_per_edit", 500.0), "500 µs");
        assert_eq!(f("server_cpu_us_per_connection", 1234.0), "1.23 ms");
        assert_eq!(f("server_rss_mib", 21.637), "21.6 MiB");
        assert_eq!(f("sessions_ok", 20.0), "20");
        assert_eq!(f("full_state_bytes", 500_123.0), "500,123 B");
        assert_eq!(f("server_bytes_per_connection", 73_728.0), "72 KiB");
    }
}
